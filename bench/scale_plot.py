"""Plots and the RESULTS.md table of a ``bench.scale`` sweep.

    python -m bench.scale --sweep --out bench/scale-results.json
    python -m bench.scale_plot bench/scale-results.json [--plots bench/plots]

Writes four PNGs against cluster size (nodes, log scale), one line per pods-per-node: CPU per
node per tick, RSS per node, tick duration and the HPA-like list p99, each with its issue-8
target and metrics-server's published figure where there is one; prints the markdown table.
Needs matplotlib (``pip install '.[bench]'``); nothing else in the project does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from .scale import (
    TARGET_HPA_P99_MS,
    TARGET_MCPU_PER_NODE,
    TARGET_RSS_MIB_PER_NODE,
    TARGET_TICK_AFTER_JITTER_S,
    Result,
    report,
)

METRICS_SERVER_MCPU_PER_NODE = 1.0
METRICS_SERVER_MIB_PER_NODE = 2e6 / 2**20  # "2 MB per node"


def load(path: Path) -> list[Result]:
    out = []
    for d in json.loads(path.read_text()):
        for k in ("loadavg_start", "loadavg_end"):
            d[k] = tuple(d[k])
        out.append(Result(**d))
    return out


def _series(results: list[Result], value: Callable[[Result], float | None]
            ) -> dict[int, tuple[list[int], list[float]]]:
    by_ppn: dict[int, tuple[list[int], list[float]]] = {}
    for r in sorted(results, key=lambda r: (r.pods_per_node, r.nodes)):
        v = value(r)
        if r.error or v is None:
            continue
        xs, ys = by_ppn.setdefault(r.pods_per_node, ([], []))
        xs.append(r.nodes)
        ys.append(v)
    return by_ppn


def plot(results: list[Result], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in results if not r.error]
    stamp = (f"{ok[0].date}; {ok[0].machine}" if ok else "")
    written = []

    def figure(name: str, title: str, ylabel: str,
               lines: list[tuple[str, Callable[[Result], float | None], str]],
               refs: list[tuple[float, str, str]], logy: bool = False) -> None:
        fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
        for label, value, style in lines:
            for ppn, (xs, ys) in _series(results, value).items():
                ax.plot(xs, ys, style, marker="o", label=f"{label}, {ppn} pods/node")
        for y, label, color in refs:
            ax.axhline(y, color=color, linestyle=":", linewidth=1.2)
            ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), color=color,
                        fontsize=8, va="bottom")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("nodes")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.text(0.01, 0.005, stamp, fontsize=6, color="gray")
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    figure("cpu-per-node", "fastmetrics CPU per node (15 s resolution)",
           "mCPU per node (CPU s per tick / 15 s / nodes)",
           [("collect only", lambda r: r.idle_mcpu_per_node, "-"),
            ("with HPA + VPA load", lambda r: r.mcpu_per_node, "--")],
           [(METRICS_SERVER_MCPU_PER_NODE, "metrics-server's budget: 1 mCPU/node", "red"),
            (TARGET_MCPU_PER_NODE, f"target at 5,000 nodes: {TARGET_MCPU_PER_NODE} mCPU/node",
             "green")], logy=True)
    figure("rss-per-node", "fastmetrics memory per node", "RSS MiB per node (peak)",
           [("RSS / nodes", lambda r: r.rss_mib_per_node, "-")],
           [(METRICS_SERVER_MIB_PER_NODE, "metrics-server's claim: 2 MB/node", "red"),
            (TARGET_RSS_MIB_PER_NODE, f"target: {TARGET_RSS_MIB_PER_NODE} MiB/node", "green"),
            (0.1, "aim: 0.1 MiB/node", "gray")], logy=True)
    figure("tick-duration", "Tick duration after the scrape jitter window",
           "seconds (tick - longest jitter sleep)",
           [("collect only", lambda r: max(r.idle_tick_after_jitter_s, default=None), "-"),
            ("with HPA + VPA load", lambda r: r.tick_after_jitter_max_s, "--")],
           [(TARGET_TICK_AFTER_JITTER_S, f"target: {TARGET_TICK_AFTER_JITTER_S:g} s", "green")])
    figure("api-p99", "HPA-like namespace list with a label selector: p99 latency",
           "ms (open loop, from the scheduled send time)",
           [("all requests", lambda r: r.hpa_p99_ms, "-"),
            ("sent while a tick ran", lambda r: r.hpa_in_tick_p99_ms, "--")],
           [(TARGET_HPA_P99_MS, f"target during ticks: {TARGET_HPA_P99_MS:g} ms", "green")],
           logy=True)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale_plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, nargs="+", help="bench.scale --json files")
    p.add_argument("--plots", type=Path, default=Path(__file__).with_name("plots"))
    args = p.parse_args(argv)
    results: list[Result] = []
    for path in args.results:
        results += load(path)
    print(report(results))
    for path in plot(results, args.plots):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
