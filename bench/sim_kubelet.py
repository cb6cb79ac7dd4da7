"""What the simulated kubelets cost: the farm's own CPU and memory per scrape tick.

    python -m bench.sim_kubelet --nodes 100 1000 5000 --pods-per-node 110

For each size a ``KubeletFarm`` runs in its own process (``--serve``, uvloop) so that its CPU
time (``getrusage`` in the farm process, asked for over its stdin) and RSS can be read; this
process scrapes every node once per tick over HTTPS with a bearer token and
``Accept-Encoding: gzip`` (as metrics-server does), one kept-alive connection per node and
``--concurrency`` requests in flight. The stats interval
is 0 by default, so every scrape re-renders its node's body. The first tick (TLS handshakes,
render layouts) is reported apart from the steady ticks. A second table times the renderers
in-process per node: the reference ``render_resource_metrics`` over ``KubeletFarm.samples``,
the farm's fast path, and gzip. Everything is bounded by ``--budget-s`` per size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN = "bench-sim-kubelet-token"
_PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------------------------
# The farm process
# --------------------------------------------------------------------------------------------


def _self_usage() -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * _PAGE
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "rss_mb": rss / 1e6,
            "maxrss_mb": ru.ru_maxrss / 1e3}


async def _serve(args: argparse.Namespace) -> None:
    from fastmetrics.sim.certs import CertAuthority
    from fastmetrics.sim.kubelet import KubeletFarm
    from fastmetrics.sim.model import Cluster, ClusterShape

    t0 = time.perf_counter()
    cluster = Cluster(ClusterShape(nodes=args.nodes[0], pods_per_node=args.pods_per_node,
                                   containers_per_pod=args.containers_per_pod))
    t1 = time.perf_counter()
    ca = CertAuthority(Path(args.dir), "cluster")
    farm = KubeletFarm(cluster, ca, 0, tokens=[TOKEN], stats_interval_s=args.stats_interval)
    await farm.start()
    t2 = time.perf_counter()
    ready = {
        "port": farm.port, "ca": str(ca.cert_file),
        "urls": [farm.url(n.name) for n in cluster.nodes],
        "build_s": t1 - t0, "start_s": t2 - t1, **_self_usage(),
    }
    print(json.dumps(ready), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = (await reader.readline()).decode().strip()
            if line == "stats":
                print(json.dumps({"renders": farm.renders, "requests": farm.requests,
                                  "bytes_served": farm.bytes_served, **_self_usage()}),
                      flush=True)
            else:  # "quit" or EOF
                break
    finally:
        await farm.stop()


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    nodes: int
    pods: int
    containers: int
    startup_s: float
    build_s: float
    warm_wall_s: float
    warm_cpu_s: float
    tick_wall_s: float
    tick_cpu_s: float
    client_cpu_s: float
    rss_ready_mb: float
    rss_mb: float
    gz_kb: float
    renders_ok: bool
    ticks: int


class _FarmProcess:
    def __init__(self, args: argparse.Namespace, nodes: int, directory: str) -> None:
        cmd = [sys.executable, "-m", "bench.sim_kubelet", "--serve", "--nodes", str(nodes),
               "--pods-per-node", str(args.pods_per_node),
               "--containers-per-pod", str(args.containers_per_pod),
               "--stats-interval", str(args.stats_interval), "--dir", directory]
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    async def line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        text = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not text:
            raise RuntimeError(f"farm process exited (rc={self.proc.poll()})")
        result: dict[str, Any] = json.loads(text)
        return result

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return await self.line(30)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def _measure(args: argparse.Namespace, nodes: int) -> Result:
    import aiohttp

    from fastmetrics.sim.certs import client_context

    deadline = time.monotonic() + args.budget_s
    with tempfile.TemporaryDirectory(prefix="sim-kubelet-bench-") as directory:
        farm = _FarmProcess(args, nodes, directory)
        try:
            t0 = time.perf_counter()
            ready = await farm.line(max(1.0, deadline - time.monotonic()))
            startup = time.perf_counter() - t0
            urls: list[str] = ready["urls"]
            connector = aiohttp.TCPConnector(
                ssl=client_context(Path(ready["ca"])), limit=0, limit_per_host=1,
                keepalive_timeout=600,
            )
            headers = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"}
            sem = asyncio.Semaphore(args.concurrency)
            received = 0

            async with aiohttp.ClientSession(connector=connector, headers=headers,
                                             auto_decompress=False,
                                             timeout=aiohttp.ClientTimeout(total=60)) as s:

                async def scrape(url: str) -> None:
                    nonlocal received
                    async with sem, s.get(url) as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"{url}: HTTP {resp.status}")
                        received += len(body)

                async def tick() -> tuple[float, float, float]:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("budget exhausted")
                    c0 = (await farm.stats())["cpu_s"]
                    me0, w0 = time.process_time(), time.perf_counter()
                    await asyncio.wait_for(asyncio.gather(*(scrape(u) for u in urls)), left)
                    wall, me = time.perf_counter() - w0, time.process_time() - me0
                    return wall, (await farm.stats())["cpu_s"] - c0, me

                before = await farm.stats()
                warm_wall, warm_cpu, _ = await tick()
                received = 0
                walls, cpus, mine = [], [], []
                for _ in range(args.ticks):
                    if args.stats_interval:
                        await asyncio.sleep(args.stats_interval)
                    wall, cpu, me = await tick()
                    walls.append(wall)
                    cpus.append(cpu)
                    mine.append(me)
                after = await farm.stats()
            n = len(walls)
            return Result(
                nodes=nodes, pods=args.pods_per_node, containers=args.containers_per_pod,
                startup_s=startup, build_s=ready["build_s"],
                warm_wall_s=warm_wall, warm_cpu_s=warm_cpu,
                tick_wall_s=sum(walls) / n, tick_cpu_s=sum(cpus) / n,
                client_cpu_s=sum(mine) / n, rss_ready_mb=ready["rss_mb"],
                rss_mb=after["rss_mb"],
                gz_kb=received / n / nodes / 1e3,
                renders_ok=after["renders"] - before["renders"] == nodes * (n + 1),
                ticks=n,
            )
        finally:
            farm.close()


def _render_table(pods: int, containers: int) -> list[str]:
    """Per-node render cost in-process: reference renderer vs the farm's fast path."""
    from fastmetrics.sim.certs import CertAuthority
    from fastmetrics.sim.exposition import render_resource_metrics
    from fastmetrics.sim.kubelet import KubeletFarm, gzip_body
    from fastmetrics.sim.model import Cluster, ClusterShape

    cluster = Cluster(ClusterShape(nodes=20, pods_per_node=pods, containers_per_pod=containers))
    with tempfile.TemporaryDirectory(prefix="sim-kubelet-bench-") as directory:
        farm = KubeletFarm(cluster, CertAuthority(Path(directory), "cluster"), 0)
    now = time.time_ns()
    names = [n.name for n in cluster.nodes]
    for name in names:
        farm.render(name, now)  # layouts

    def per_node(fn: Any, rounds: int = 5) -> float:
        best = float("inf")
        for r in range(rounds):
            t0 = time.perf_counter()
            for name in names:
                fn(name, now + (r + 1) * 15_000_000_000)
            best = min(best, (time.perf_counter() - t0) / len(names))
        return best * 1e3

    ref = per_node(lambda name, t: render_resource_metrics(*farm.samples(name, t)))
    fast = per_node(farm.render)
    body = farm.render(names[0], now)
    gz = per_node(lambda name, t: gzip_body(body, farm.gzip_level))
    return [
        f"| {pods} x {containers} | {len(body) / 1e3:.0f} KB | "
        f"{len(gzip_body(body, farm.gzip_level)) / 1e3:.1f} KB | {ref:.2f} | {fast:.2f} | "
        f"{gz:.2f} | {ref / fast:.1f}x |"
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sim_kubelet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--pods-per-node", type=int, default=110)
    p.add_argument("--containers-per-pod", type=int, default=2)
    p.add_argument("--ticks", type=int, default=3, help="steady ticks per size (default 3)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--stats-interval", type=float, default=0.0,
                   help="the farm's stats_interval_s (default 0: every scrape re-renders)")
    p.add_argument("--budget-s", type=float, default=300.0, help="time limit per size")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.ticks <= 100:
        p.error("--ticks must be in [1, 100]")

    import uvloop

    from fastmetrics.sim.kubelet import raise_nofile_limit

    raise_nofile_limit()
    if args.serve:
        uvloop.run(_serve(args))
        return 0

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"# sim kubelet farm: {args.pods_per_node} pods x {args.containers_per_pod} "
          f"containers per node, gzip, stats interval {args.stats_interval} s, "
          f"concurrency {args.concurrency}, {os.cpu_count()} CPUs, RLIMIT_NOFILE {soft}\n")
    print("| nodes | startup s (model build) | first tick: wall s / farm CPU s "
          "| steady tick wall s | farm CPU s/tick | farm CPU ms per node scrape "
          "| farm RSS MB: started / after ticks | client CPU s/tick | gzip body KB "
          "| every scrape rendered |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
    failed = False
    for nodes in args.nodes:
        if 2 * nodes + 64 > soft:
            print(f"| {nodes} | skipped: RLIMIT_NOFILE {soft} is too low |")
            continue
        try:
            r = uvloop.run(_measure(args, nodes))
        except (TimeoutError, RuntimeError, OSError) as e:
            print(f"| {nodes} | failed: {type(e).__name__}: {e} |", flush=True)
            failed = True
            continue
        print(f"| {r.nodes} | {r.startup_s:.1f} ({r.build_s:.1f}) | {r.warm_wall_s:.2f} / "
              f"{r.warm_cpu_s:.2f} | {r.tick_wall_s:.2f} | {r.tick_cpu_s:.2f} | "
              f"{r.tick_cpu_s / r.nodes * 1e3:.2f} | {r.rss_ready_mb:.0f} / {r.rss_mb:.0f} | "
              f"{r.client_cpu_s:.2f} | "
              f"{r.gz_kb:.1f} | {'yes' if r.renders_ok else 'NO'} |", flush=True)
    print("\n# render cost per node, in-process (best of 5 rounds over 20 nodes)\n")
    print("| pods x containers | body | gzip | reference ms | fast path ms | gzip ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for line in _render_table(args.pods_per_node, args.containers_per_pod):
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
