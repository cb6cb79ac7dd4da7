"""The quick benchmark guard run by CI: ratios measured side by side, so noise cannot flake it.

    python -m bench.quick

Each check times a compiled path against its reference implementation on the same input in
the same process, in interleaved rounds (best round each, ``bench.timing.best_per_call``), and
fails (exit 1) when the ratio falls below a floor set well under the ratio measured on the
development machine (RESULTS.md), so that only a real regression trips it:

=============================  ========================================  ========  =====
check                          reference                                  measured  floor
=============================  ========================================  ========  =====
decode 110-pod payload         prometheus_client's text parser            ~221x     20x
store 1,000 x 30 x 2 tick      the numpy twin of the store kernels        ~2.6x     1.3x
format 100,000 usage strings   pure Python, one str per value             ~48x      8x
pod list, 15,000 pods, JSON    dicts + ``json.dumps`` (same items)        ~36x      8x
pod list, 15,000 pods, JSON    the pure-Python twin of the columnar path  ~29x      8x
=============================  ========================================  ========  =====

Measured 2026-11-25 on the 2-core development machine; the whole run takes ~6 s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from .timing import best_per_call

DECODE_MIN_RATIO = 20.0
STORE_MIN_RATIO = 1.3
FORMAT_MIN_RATIO = 8.0
RENDER_NAIVE_MIN_RATIO = 8.0
RENDER_TWIN_MIN_RATIO = 8.0


class Guard:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, what: str, times: dict[str, float], fast: str, slow: str,
              floor: float, unit: Callable[[float], str], show: bool = True) -> None:
        ratio = times[slow] / times[fast]
        for name, s in times.items() if show else ():
            print(f"  {name:>24}: {unit(s)}")
        ok = ratio >= floor
        print(f"  {fast} vs {slow}: {ratio:.1f}x (guard: >= {floor:g}x){'' if ok else '  FAIL'}")
        if not ok:
            self.failures.append(f"{what}: {ratio:.1f}x < {floor:g}x")


def _us(s: float) -> str:
    return f"{s * 1e6:10.1f} us"


def _ms(s: float) -> str:
    return f"{s * 1e3:10.2f} ms"


def check_decode(g: Guard) -> None:
    from .benchmarks.bench_decode import TimeDecode

    pods = 110
    b = TimeDecode()
    b.setup(pods)
    print(f"decode: {pods} pods x 2 containers, {len(b.body) / 1000:.1f} KB payload")
    t = best_per_call({
        "compiled": lambda: b.time_decode_c(pods),
        "python twin": lambda: b.time_decode_py(pods),
        "prometheus_client": lambda: b.time_prometheus_client(pods),
    }, rounds=7)
    g.check("decode", t, "compiled", "prometheus_client", DECODE_MIN_RATIO, _us)


def check_store(g: Guard) -> None:
    from .benchmarks import bench_store

    scenario = "1000x30x2"
    print(f"store: one tick of {scenario} (Store.store with its snapshot)")
    c, py = bench_store.TimeStore(), bench_store.TimeStore()
    c.setup(scenario, "c")
    py.setup(scenario, "py")

    def run(b: bench_store.TimeStore, compiled: bool) -> Callable[[], None]:
        def call() -> None:
            bench_store.use_kernels(compiled)
            b.time_store(scenario, "c" if compiled else "py")
        return call

    try:
        t = best_per_call({"compiled": run(c, True), "numpy twin": run(py, False)},
                          rounds=7, target_s=0.05)
    finally:
        bench_store.use_kernels(True)
    g.check("store", t, "compiled", "numpy twin", STORE_MIN_RATIO, _ms)


def check_format(g: Guard) -> None:
    from .benchmarks.bench_format import TimeFormatColumn

    n = 100_000
    print(f"format: cpu + memory + window strings for {n:,} containers")
    b = TimeFormatColumn()
    b.setup(n)
    t = best_per_call({"compiled": lambda: b.time_format_c(n),
                       "pure Python": lambda: b.time_format_py(n)}, rounds=3, target_s=0.1)
    g.check("format", t, "compiled", "pure Python", FORMAT_MIN_RATIO, _ms)


def check_render(g: Guard) -> None:
    from fastmetrics.api import render

    from .benchmarks.bench_render import TimeRenderPodList

    if render.KERNELS_C is None:
        g.failures.append("render: the compiled render kernels are not built")
        return
    pods = 15_000
    print(f"render: PodMetricsList of {pods:,} pods, JSON")
    b = TimeRenderPodList()
    b.setup(pods)
    t = best_per_call({
        "compiled columnar": lambda: b.time_json_c(pods),
        "columnar python twin": lambda: b.time_json_py(pods),
        "dicts + json.dumps": lambda: b.time_json_naive(pods),
    }, rounds=5, target_s=0.1)
    g.check("render vs json.dumps", t, "compiled columnar", "dicts + json.dumps",
            RENDER_NAIVE_MIN_RATIO, _ms)
    g.check("render vs twin", t, "compiled columnar", "columnar python twin",
            RENDER_TWIN_MIN_RATIO, _ms, show=False)


def main() -> int:
    from fastmetrics.decode import DecoderC

    if DecoderC is None:
        print("bench.quick: the compiled extension is not built", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    g = Guard()
    for check in (check_decode, check_store, check_format, check_render):
        check(g)
        print(flush=True)
    print(f"bench.quick: {time.perf_counter() - t0:.0f} s")
    if g.failures:
        print("bench.quick: FAILED: " + "; ".join(g.failures), file=sys.stderr)
        return 1
    print("bench.quick: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
