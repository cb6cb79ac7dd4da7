"""Side-by-side timing: interleaved rounds, best round per candidate (noise only adds time)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def calibrate(fn: Callable[[], object], target_s: float = 0.02) -> int:
    """How many calls of ``fn`` take about ``target_s``."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target_s or n >= 1 << 20:
            return max(1, int(n * target_s / max(dt, 1e-9)))
        n *= 4


def best_per_call(candidates: dict[str, Callable[[], object]], rounds: int = 15,
                  target_s: float = 0.02) -> dict[str, float]:
    """Seconds per call of each candidate: the best of ``rounds`` interleaved rounds."""
    loops = {name: calibrate(fn, target_s) for name, fn in candidates.items()}
    best = dict.fromkeys(candidates, float("inf"))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in candidates.items():
                n = loops[name]
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - t0) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best
