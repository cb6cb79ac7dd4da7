"""What one collect tick costs fastmetrics: scrape + decode + store against simulated kubelets.

    python -m bench.collect --nodes 1000 --pods-per-node 110 --ticks 4
    python -m bench.collect --nodes 5000 --pods-per-node 30 --ticks 4

The simulated cluster runs in a SUBPROCESS (``python -m fastmetrics sim --ready-file F``), so
its CPU is not counted; this process runs the real ``Scraper`` + ``Store`` + ``Manager`` (on
uvloop, as the server does) at ``--resolution`` for ``--ticks`` steady ticks after the first
one (TLS handshakes, first decode of every label block), and reports per tick:

* fastmetrics' own CPU seconds (``getrusage(RUSAGE_SELF)`` around the tick) and CPU ms per
  node; also the CPU between tick starts (everything the process did, idle time included);
* the tick's wall time, the longest jitter sleep drawn (metrics-server staggers requests over
  ``min(8 ms x nodes, 4 s)``) and the tail after it (tick end - longest jitter: the scrape
  and store work the jitter does not hide); ``--no-jitter`` fires every request at once;
* the store's share, failures, and RSS; the simulator's CPU for context.

Everything is bounded by ``--budget-s``; the simulator is stopped (SIGTERM, then SIGKILL) on
the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TCK = os.sysconf("SC_CLK_TCK")
NS = 1_000_000_000


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 1e6


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TCK


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class TickRow:
    tick: int
    wall_s: float
    cpu_s: float
    store_s: float
    jitter_s: float
    ok: int
    failed: int
    timeouts: int
    pods: int
    rss_mb: float
    sim_cpu_s: float
    start_cpu_s: float = 0.0
    between_cpu_s: float | None = None
    errors: dict[str, str] = field(default_factory=dict)


class _Sim:
    """``python -m fastmetrics sim`` in a subprocess."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.ready_file = workdir / "ready.json"
        self.log = open(workdir / "sim.log", "wb")  # noqa: SIM115  (closed in stop())
        cmd = [sys.executable, "-m", "fastmetrics", "sim", "--nodes", str(args.nodes),
               "--pods-per-node", str(args.pods_per_node),
               "--containers-per-pod", str(args.containers_per_pod),
               "--stats-interval", str(args.stats_interval),
               "--workdir", str(workdir / "sim"), "--ready-file", str(self.ready_file)]
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root / "src"), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(cmd, cwd=root, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)

    async def ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {self.proc.returncode}; see "
                                   f"{self.log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError("simulator not ready in time")
            await asyncio.sleep(0.1)
        info: dict[str, Any] = json.loads(self.ready_file.read_text())
        return info

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


async def _run(args: argparse.Namespace) -> tuple[list[TickRow], dict[str, Any]]:
    from fastmetrics.cluster import NodeInfo
    from fastmetrics.monitoring import ServerMetrics
    from fastmetrics.scrape import KubeletClientConfig, Manager, Scraper
    from fastmetrics.sim.model import node_address
    from fastmetrics.store import Snapshot, Store

    budget_end = time.monotonic() + args.budget_s
    resolution_ns = int(args.resolution * NS)
    with tempfile.TemporaryDirectory(prefix="fm-collect-") as tmp:
        sim = _Sim(args, Path(tmp))
        try:
            t0 = time.perf_counter()
            info = await sim.ready(max(1.0, budget_end - time.monotonic()))
            startup_s = time.perf_counter() - t0
            port = int(info["kubelet_port"])
            token = str(info["metrics_server_token"])
            names = ([f"sim-node-{i:05d}" for i in range(args.nodes)] if args.nodes > 1
                     else ["sim-node"])
            nodes = [NodeInfo(name, {}, (("InternalIP", node_address(i)), ("Hostname", name)),
                              port, True) for i, name in enumerate(names)]
            cfg = KubeletClientConfig(
                preferred_address_types=("InternalIP", "ExternalIP", "Hostname"),
                port=port, use_node_status_port=True, apiserver_ca_file=str(info["ca_file"]),
                token_provider=lambda: token, timeout_ns=int(args.timeout * NS),
            )
            rows: list[TickRow] = []
            metrics = ServerMetrics(args.resolution)
            sim_pid = sim.proc.pid

            class MeasuredStore(Store):
                store_s = 0.0

                def store(self, batches: Any) -> Snapshot:
                    s0 = time.perf_counter()
                    try:
                        return super().store(batches)
                    finally:
                        self.store_s = time.perf_counter() - s0

            store = MeasuredStore(resolution_ns)

            class MeasuredManager(Manager):
                async def tick(self) -> Snapshot:
                    c0, w0, s0 = self_cpu_s(), time.perf_counter(), proc_cpu_s(sim_pid)
                    snap = await super().tick()
                    c1, w1 = self_cpu_s(), time.perf_counter()
                    r = self.last_result
                    assert r is not None
                    rows.append(TickRow(
                        len(rows), w1 - w0, c1 - c0, store.store_s, r.max_jitter_ms / 1000,
                        len(r.batches), len(r.errors), r.timeouts,
                        int(snap.pod_node.shape[0]), rss_mb(), proc_cpu_s(sim_pid) - s0, c0,
                        errors=dict(list(r.errors.items())[:3]),
                    ))
                    if len(rows) > 1:
                        rows[-2].between_cpu_s = c0 - rows[-2].start_cpu_s
                    if len(rows) > args.ticks or time.monotonic() > budget_end:
                        self.stop()
                    return snap

            async with Scraper(cfg, resolution_ns=resolution_ns,
                               jitter=not args.no_jitter) as scraper:
                manager = MeasuredManager(scraper, store, lambda: nodes, resolution_ns, metrics)
                rss_before = rss_mb()
                await asyncio.wait_for(manager.run(), max(1.0, budget_end - time.monotonic()))
                r0 = time.perf_counter()
                body = metrics.render()
                render_ms = (time.perf_counter() - r0) * 1e3
            extra = {
                "startup_s": startup_s, "rss_before_mb": rss_before,
                "sim_rss_mb": rss_mb(sim_pid), "metrics_render_ms": render_ms,
                "metrics_bytes": len(body), "pods": info.get("pods"),
            }
            return rows, extra
        finally:
            sim.stop()


def _report(args: argparse.Namespace, rows: list[TickRow], extra: dict[str, Any]) -> str:
    n = args.nodes
    out = [
        f"### {n} nodes x {args.pods_per_node} pods x {args.containers_per_pod} containers, "
        f"resolution {args.resolution:g} s, timeout {args.timeout:g} s"
        f"{', no jitter' if args.no_jitter else ''}",
        "",
        f"Simulator startup {extra['startup_s']:.1f} s ({extra['pods']} pods), RSS "
        f"{extra['sim_rss_mb']:.0f} MB (its CPU is not fastmetrics'). fastmetrics RSS before "
        f"the first tick {extra['rss_before_mb']:.0f} MB. /metrics render after the run: "
        f"{extra['metrics_render_ms']:.1f} ms, {extra['metrics_bytes'] / 1e6:.2f} MB.",
        "",
        "| tick | wall s | max jitter s | tail after jitter s | store ms | fastmetrics CPU s |"
        " CPU ms/node | CPU between tick starts s | ok | failed (timeouts) | pods | RSS MB |"
        " simulator CPU s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        between = f"{r.between_cpu_s:.2f}" if r.between_cpu_s is not None else ""
        out.append(
            f"| {r.tick}{' (first)' if r.tick == 0 else ''} | {r.wall_s:.2f} | {r.jitter_s:.2f} |"
            f" {r.wall_s - r.jitter_s:.2f} | {r.store_s * 1e3:.0f} | {r.cpu_s:.2f} |"
            f" {r.cpu_s / n * 1e3:.3f} | {between} | {r.ok} | {r.failed} ({r.timeouts}) |"
            f" {r.pods} | {r.rss_mb:.0f} | {r.sim_cpu_s:.2f} |"
        )
    steady = rows[1:]
    if steady:
        cpu = sum(r.cpu_s for r in steady) / len(steady)
        wall = max(r.wall_s for r in steady)
        tail = max(r.wall_s - r.jitter_s for r in steady)
        out += [
            "",
            f"Steady ticks ({len(steady)}): fastmetrics CPU {cpu:.2f} s per tick = "
            f"**{cpu / n * 1e3:.3f} ms per node per tick** (target <= 1 ms), "
            f"{cpu / args.resolution * 100:.1f}% of one core at {args.resolution:g} s; "
            f"tick wall <= {wall:.2f} s, tail after the jitter <= **{tail:.2f} s**; "
            f"RSS {steady[-1].rss_mb:.0f} MB ({steady[-1].rss_mb * 1e6 / n / 1e3:.0f} KB "
            f"per node).",
        ]
    errors = {k: v for r in rows for k, v in r.errors.items()}
    if errors:
        out += ["", "Sample failures: " + "; ".join(f"{k}: {v}" for k, v in
                                                   list(errors.items())[:3])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.collect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods-per-node", type=int, default=110)
    p.add_argument("--containers-per-pod", type=int, default=2)
    p.add_argument("--ticks", type=int, default=4, help="steady ticks after the first")
    p.add_argument("--resolution", type=float, default=15.0, help="seconds (default 15)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="kubelet request timeout, seconds (default 10)")
    p.add_argument("--stats-interval", type=float, default=10.0,
                   help="the simulated kubelets' stats refresh, seconds (default 10)")
    p.add_argument("--no-jitter", action="store_true", help="fire every request at once")
    p.add_argument("--budget-s", type=float, default=300.0, help="give up after this long")
    p.add_argument("-v", "--verbose", action="store_true", help="log every failure")
    args = p.parse_args(argv)
    if args.timeout > args.resolution:
        p.error("--timeout must not exceed --resolution")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        rows, extra = asyncio.run(_run(args))
    else:
        rows, extra = uvloop.run(_run(args))
    print(_report(args, rows, extra))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
