"""Measure decode, store and formatting side by side and print the figures for RESULTS.md.

    python -m bench.report [--quick]

Each comparison runs its candidates interleaved in one process (best of several rounds), so
ratios are meaningful on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time

import numpy as np

from .benchmarks import bench_store
from .benchmarks._data import STORE_SCENARIOS, SyntheticCluster
from .benchmarks.bench_decode import TimeDecode
from .benchmarks.bench_format import TimeFormatColumn
from .timing import best_per_call


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    py = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{cpu}, {py}, numpy {np.__version__}"


def report_decode() -> None:
    print("\n## Decode: one kubelet payload (pods x 2 containers), one core\n")
    print("| pods | bytes | compiled µs | compiled MB/s | first scrape µs | Python twin µs "
          "| prometheus_client µs | compiled / prometheus_client |")
    print("|---|---|---|---|---|---|---|---|")
    for pods in (10, 30, 110):
        b = TimeDecode()
        b.setup(pods)
        t = best_per_call({
            "c": lambda b=b, pods=pods: b.time_decode_c(pods),
            "cold": lambda b=b, pods=pods: b.time_decode_c_cold(pods),
            "py": lambda b=b, pods=pods: b.time_decode_py(pods),
            "pc": lambda b=b, pods=pods: b.time_prometheus_client(pods),
        }, rounds=9)
        size = len(b.body)
        print(f"| {pods} | {size} | {t['c'] * 1e6:.1f} | {size / t['c'] / 1e6:.0f} | "
              f"{t['cold'] * 1e6:.0f} | {t['py'] * 1e6:.0f} | {t['pc'] * 1e6:.0f} | "
              f"{t['pc'] / t['c']:.0f}x |")


def _time_ticks(
    cluster: SyntheticCluster, compiled: bool, ticks: int, churn: float = 0.0
) -> list[float]:
    bench_store.use_kernels(compiled)
    s = bench_store.Store(bench_store.RESOLUTION_NS)
    s.store(cluster.tick(0))
    s.store(cluster.tick(1))
    out = []
    for k in range(2, 2 + ticks):
        batches = cluster.tick(k, churn)
        gc.collect()
        t0 = time.perf_counter()
        s.store(batches)
        out.append(time.perf_counter() - t0)
        del batches
    return out


def report_store(scenarios: list[str], ticks: int, churn: float = 0.1) -> None:
    print("\n## Store: one steady tick of a whole cluster (Store.store + snapshot), one core\n")
    print("| scenario (nodes x pods x containers) | containers | compiled ms/tick (min / median) "
          "| numpy twin ms/tick (min / median) | twin / compiled | bytes held per container |")
    print("|---|---|---|---|---|---|")
    for name in scenarios:
        cluster = SyntheticCluster(*STORE_SCENARIOS[name])
        c = _time_ticks(cluster, True, ticks)
        p = _time_ticks(cluster, False, ticks)
        c2 = _time_ticks(cluster, True, ticks)  # again, interleaved against drift
        c = c + c2
        mem = bench_store.MemStore()
        mem.cluster = cluster
        per = mem.track_bytes_per_container(name)
        print(f"| {name} | {cluster.total} | "
              f"{min(c) * 1e3:.0f} / {statistics.median(c) * 1e3:.0f} | "
              f"{min(p) * 1e3:.0f} / {statistics.median(p) * 1e3:.0f} | "
              f"{min(p) / min(c):.1f}x | {per:.0f} |")
        if churn:
            c = _time_ticks(cluster, True, ticks, churn)
            p = _time_ticks(cluster, False, ticks, churn)
            label = f"{name}, a pod replaced on {churn:.0%} of nodes every tick"
            print(f"| {label} | {cluster.total} | "
                  f"{min(c) * 1e3:.0f} / {statistics.median(c) * 1e3:.0f} | "
                  f"{min(p) * 1e3:.0f} / {statistics.median(p) * 1e3:.0f} | "
                  f"{min(p) / min(c):.1f}x | |")


def report_format(n: int) -> None:
    print(f"\n## Formatting usage strings (cpu + memory + window) for {n} containers\n")
    b = TimeFormatColumn()
    b.setup(n)
    t = best_per_call({"c": lambda: b.time_format_c(n), "py": lambda: b.time_format_py(n)},
                      rounds=3, target_s=0.2)
    print("| implementation | total ms | ns per container |")
    print("|---|---|---|")
    for k, label in (("c", "compiled format_column"), ("py", "pure Python, str per value")):
        print(f"| {label} | {t[k] * 1e3:.1f} | {t[k] / n * 1e9:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small scenarios only")
    ap.add_argument("--ticks", type=int, default=3)
    args = ap.parse_args()
    print(f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}")
    report_decode()
    scen = ["100x70x1", "1000x30x2"] if args.quick else list(STORE_SCENARIOS)
    report_store(scen, args.ticks)
    report_format(1_100_000 if not args.quick else 100_000)


if __name__ == "__main__":
    main()
