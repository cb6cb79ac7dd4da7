"""API serving benchmark (issue 6): ``python -m bench.api [--quick]``.

One run, side by side: the metrics.k8s.io app (``make_app``, ``authenticate=False``) over a
synthetic cluster (a fake informer plus a real ``Store`` fed two synthetic ticks, so every pod
has usage), served over plain HTTP on 127.0.0.1 with uvloop in a subprocess pinned to CPU 0;
the load generators run here, pinned to CPU 1. Measured:

(a) one PodMetrics GET: requests/s with an aiohttp keep-alive client and with a pipelined
    raw-socket client, and the server's CPU per request (``/proc/<pid>/stat``);
(b) an HPA-style namespaced list with a label selector matching 50 pods, open-loop at
    1,000 req/s: latency p50/p99 measured from each request's scheduled send time;
(c) ``pods`` across all namespaces (150,000 pods; 15,000 with ``--quick``) in JSON and in
    protobuf: wall time of one request, plus the in-process render time of the body;
(d) the same bodies built naively (dicts + ``json.dumps``), rendered in-process, as baseline.

The table is printed and appended to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

P = "/apis/metrics.k8s.io/v1beta1"
PB = "application/vnd.kubernetes.protobuf"
NAMESPACES = 50
GROUP = 50  # pods per app label within a namespace
RESULTS = Path(__file__).with_name("RESULTS.md")


# ============================================================== the synthetic cluster


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]


class FakeInformer:
    """The informers' read API over fixed nodes and pods (pods indexed by namespace)."""

    def __init__(self, nodes: list[Node], pods: list[Pod]) -> None:
        self._nodes = {n.name: n for n in nodes}
        self._node_list = sorted(nodes, key=lambda n: n.name)
        self._pods = {(p.namespace, p.name): p for p in pods}
        self._all = list(pods)
        self._by_ns: dict[str, list[Pod]] = {}
        for p in pods:
            self._by_ns.setdefault(p.namespace, []).append(p)

    def nodes(self) -> list[Node]:
        return self._node_list

    def node(self, name: str) -> Node | None:
        return self._nodes.get(name)

    def pods_in(self, namespace: str | None) -> list[Pod]:
        return self._all if namespace is None else self._by_ns.get(namespace, [])

    def pod(self, namespace: str, name: str) -> Pod | None:
        return self._pods.get((namespace, name))


def build(pods_total: int) -> tuple[FakeInformer, Any]:
    """The fake informer and the store's snapshot after two ticks (every pod has usage)."""
    from fastmetrics.store import Store

    from .benchmarks._data import RESOLUTION_MS, SyntheticCluster

    per_node = 100
    nodes = max(1, pods_total // per_node)
    sc = SyntheticCluster(nodes, per_node, 2)
    store = Store(RESOLUTION_MS * 1_000_000)
    store.store(sc.tick(0))
    snap = store.store(sc.tick(1))
    label_sets: dict[int, dict[str, str]] = {}
    pods: list[Pod] = []
    for i in range(nodes):
        for p in range(per_node):
            g = i * per_node + p  # SyntheticCluster's namespace is ns-{g % 50}
            group = (g // NAMESPACES) // GROUP
            labels = label_sets.get(group)
            if labels is None:
                labels = label_sets[group] = {"app": f"app-{group}", "tier": "backend",
                                              "pod-template-hash": f"{group * 7919:010x}"}
            pods.append(Pod(f"ns-{g % NAMESPACES}", f"pod-{i}-{p}", labels))
    node_objs = [Node(n, {"kubernetes.io/hostname": n, "pool": "default"}) for n in sc.names]
    return FakeInformer(node_objs, pods), snap


# ============================================================== the server (subprocess)


def _pin(cpu: int) -> bool:
    try:
        if cpu in os.sched_getaffinity(0) and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {cpu})
            return True
    except (AttributeError, OSError):
        pass
    return False


def serve_main(port: int, pods_total: int) -> None:
    import uvloop
    from aiohttp import web

    from fastmetrics.api.handlers import MetricsAPI
    from fastmetrics.health import HealthState
    from fastmetrics.server import make_app

    _pin(0)
    informer, snap = build(pods_total)
    api = MetricsAPI(informer, lambda: snap)
    app = make_app(HealthState(), None, api=api, authenticate=False)
    gc.collect()
    gc.freeze()

    async def run() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(run())


# ============================================================== load generators


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def aiohttp_closed_loop(base: str, path: str, concurrency: int, seconds: float,
                              max_requests: int) -> tuple[int, float]:
    """Closed loop: ``concurrency`` workers on kept-alive connections; (requests, seconds)."""
    import aiohttp

    done = 0
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=conn) as s:
        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop and done < max_requests:
                async with s.get(path) as r:
                    await r.read()
                    assert r.status == 200, r.status
                done += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, time.perf_counter() - t0


async def pipelined(port: int, path: str, connections: int, depth: int, seconds: float,
                    max_requests: int) -> tuple[int, float]:
    """Raw sockets, ``depth`` requests in flight per connection (HTTP/1.1 pipelining)."""
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
           ).encode()
    stop = time.perf_counter() + seconds
    done = 0

    async def conn() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        buf = b""
        try:
            while time.perf_counter() < stop and done < max_requests:
                writer.write(req * depth)
                got = 0
                while got < depth:
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        buf += await reader.read(1 << 16)
                        continue
                    head = buf[:head_end]
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(head[:200])
                    i = head.lower().find(b"content-length:")
                    n = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0
                                 else len(head)])
                    end = head_end + 4 + n
                    while len(buf) < end:
                        buf += await reader.read(1 << 16)
                    buf = buf[end:]
                    got += 1
                done += depth
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(connections)))
    return done, time.perf_counter() - t0


async def one_request(base: str, path: str, accept: str, repeat: int) -> tuple[list[float], int]:
    import aiohttp

    times = []
    size = 0
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, timeout=timeout) as s:
        for _ in range(repeat):
            t0 = time.perf_counter()
            async with s.get(path, headers={"Accept": accept}) as r:
                body = await r.read()
                assert r.status == 200, body[:200]
            times.append(time.perf_counter() - t0)
            size = len(body)
    return times, size


# ============================================================== naive baseline (d)


def _naive_pod(ns: str, name: str, labels: Mapping[str, str], u: Any, created: str) -> dict[
        str, Any]:
    from fastmetrics.api.format import (
        format_cpu,
        format_memory,
        format_timestamp,
        format_window,
    )

    return {
        "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created,
                     "labels": dict(sorted(labels.items()))},
        "timestamp": None if u.timestamp_ns is None else format_timestamp(u.timestamp_ns),
        "window": format_window(u.window_ns),
        "containers": [{"name": c.name, "usage": {"cpu": format_cpu(c.cpu_nanocores),
                                                  "memory": format_memory(c.memory_bytes)}}
                       for c in u.containers],
    }


def naive_list(items: Iterable[tuple[str, str, Mapping[str, str], Any]], now_ns: int) -> bytes:
    from fastmetrics.api.format import format_timestamp

    created = format_timestamp(now_ns)
    doc = {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
           "items": [_naive_pod(ns, n, lb, u, created) for ns, n, lb, u in items]}
    for item in doc["items"]:
        del item["kind"], item["apiVersion"]
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _items(informer: FakeInformer, snap: Any, namespace: str | None,
           app: str | None = None) -> list[tuple[str, str, Mapping[str, str], Any]]:
    out = []
    for p in informer.pods_in(namespace):
        if app is not None and p.labels.get("app") != app:
            continue
        u = snap.pod(p.namespace, p.name)
        if u is not None:
            out.append((p.namespace, p.name, p.labels, u))
    out.sort(key=lambda i: (i[0], i[1]))
    return out


# ============================================================== main


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api")
    ap.add_argument("--quick", action="store_true", help="15,000 pods, shorter runs")
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--pods", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args(argv)
    pods_total = args.pods or (15_000 if args.quick else 150_000)
    if args.serve:
        serve_main(args.serve, pods_total)
        return 0

    import uvloop

    from fastmetrics.api import objects, protobuf

    secs = 2.0 if args.quick else 5.0
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = int(sk.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "bench.api", "--serve", str(port),
                             "--pods", str(pods_total)], stdout=subprocess.PIPE)
    pinned = _pin(1)
    rows: list[tuple[str, str, str]] = []
    try:
        informer, snap = build(pods_total)  # the same cluster, for in-process renders
        gc.collect()
        gc.freeze()  # keep full collections of the cluster out of the load generator
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"server did not start: {line!r}")
        base = f"http://127.0.0.1:{port}"
        ns0 = "ns-0"
        single = informer.pods_in(ns0)[0]
        single_path = f"{P}/namespaces/{single.namespace}/pods/{single.name}"
        sel_path = f"{P}/namespaces/{ns0}/pods?labelSelector=app%3Dapp-3"
        now = time.time_ns()

        async def run() -> None:
            # (a) single PodMetrics GET
            await aiohttp_closed_loop(base, single_path, 8, 0.5, 2000)  # warm-up
            c0 = _cpu_seconds(proc.pid)
            n, t = await aiohttp_closed_loop(base, single_path, 32, secs, 10**6)
            cpu = _cpu_seconds(proc.pid) - c0
            rows.append(("(a) PodMetrics GET, aiohttp client, 32 kept-alive conns",
                         f"{n / t:,.0f} req/s", f"server CPU {cpu / n * 1e6:.0f} µs/req "
                         f"({cpu / t:.0%} of a core)"))
            c0 = _cpu_seconds(proc.pid)
            n, t = await pipelined(port, single_path, 4, 16, secs, 10**6)
            cpu = _cpu_seconds(proc.pid) - c0
            rows.append(("(a) PodMetrics GET, pipelined raw sockets, 4 conns x 16",
                         f"{n / t:,.0f} req/s", f"server CPU {cpu / n * 1e6:.0f} µs/req "
                         f"({cpu / t:.0%} of a core)"))
            # (b) HPA-style list, open loop at 1,000 req/s
            body = await _fetch(base, sel_path)
            assert len(json.loads(body)["items"]) == GROUP, "selector must match 50 pods"
            for accept, label in (("application/json", "JSON"), (PB, "protobuf")):
                lat = await open_loop_accept(base, sel_path, accept, 1000.0, secs)
                lat.sort()
                p50 = lat[len(lat) // 2]
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                rows.append((f"(b) namespace list, labelSelector → 50 pods, {label}, "
                             f"open loop 1,000 req/s x {secs:.0f} s",
                             f"p50 {_ms(p50)} ms, p99 {_ms(p99)} ms",
                             f"max {_ms(lat[-1])} ms, n={len(lat)}"))
            # (c) all pods
            for accept, label in (("application/json", "JSON"), (PB, "protobuf")):
                times, size = await one_request(base, f"{P}/pods", accept, 3)
                rows.append((f"(c) all pods ({pods_total:,}), {label}, one request",
                             f"{_ms(statistics.median(times))} ms (median of 3)",
                             f"min {_ms(min(times))} ms, {size / 1e6:.1f} MB"))

        async def _fetch(base_: str, path: str) -> bytes:
            import aiohttp

            async with aiohttp.ClientSession(base_) as s, s.get(path) as r:
                return await r.read()

        async def open_loop_accept(base_: str, path: str, accept: str, rate: float,
                                   seconds: float) -> list[float]:
            import aiohttp

            n = int(rate * seconds)
            lat: list[float] = []
            conn = aiohttp.TCPConnector(limit=256)
            hdr = {"Accept": accept}
            async with aiohttp.ClientSession(base_, connector=conn, headers=hdr) as s:
                async def one(at: float) -> None:
                    async with s.get(path) as r:
                        await r.read()
                        assert r.status == 200
                    lat.append(time.perf_counter() - at)

                await asyncio.gather(*(one(time.perf_counter()) for _ in range(16)))
                lat.clear()
                tasks = []
                t0 = time.perf_counter() + 0.05
                for i in range(n):
                    at = t0 + i / rate
                    delay = at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.ensure_future(one(at)))
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
            return lat

        uvloop.run(asyncio.wait_for(run(), 600))

        # in-process renders: ours and the naive json.dumps baseline (d)
        all_items = _items(informer, snap, None)
        sel_items = _items(informer, snap, ns0, "app-3")
        one = sel_items[:1]
        ns_, name_, labels_, u_ = one[0]
        rep = 3 if pods_total > 50_000 else 5
        r_json = best_of(lambda: objects.pod_metrics_list(all_items, now), rep)
        r_pb = best_of(lambda: protobuf.pod_metrics_list(all_items, now), rep)
        r_naive = best_of(lambda: naive_list(all_items, now), rep)
        rows.append((f"(c) render only, all pods ({pods_total:,}): JSON / protobuf",
                     f"{_ms(r_json)} ms / {_ms(r_pb)} ms", "objects / protobuf, in-process"))
        rows.append((f"(d) naive json.dumps over dicts, all pods ({pods_total:,})",
                     f"{_ms(r_naive)} ms",
                     f"ours: JSON {r_naive / r_json:.1f}x, protobuf {r_naive / r_pb:.1f}x faster"))
        s_json = best_of(lambda: objects.pod_metrics_list(sel_items, now), 200)
        s_naive = best_of(lambda: naive_list(sel_items, now), 200)
        rows.append(("(d) 50-pod list render: ours JSON / naive json.dumps",
                     f"{s_json * 1e6:.0f} µs / {s_naive * 1e6:.0f} µs",
                     f"{s_naive / s_json:.1f}x"))
        o_json = best_of(lambda: objects.pod_metrics(ns_, name_, labels_, u_, now), 2000)

        def naive_one() -> bytes:
            from fastmetrics.api.format import format_timestamp

            d = _naive_pod(ns_, name_, labels_, u_, format_timestamp(now))
            return (json.dumps(d, separators=(",", ":")) + "\n").encode()

        o_naive = best_of(naive_one, 2000)
        rows.append(("(d) one PodMetrics render: ours JSON / naive json.dumps",
                     f"{o_json * 1e6:.1f} µs / {o_naive * 1e6:.1f} µs",
                     f"{o_naive / o_json:.1f}x"))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    cpu_name = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu_name = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    machine = (f"{os.cpu_count()}-core {cpu_name}, CPython {platform.python_version()}, "
               f"server pinned to CPU 0{' and load generator to CPU 1' if pinned else ''}, "
               "plain HTTP on 127.0.0.1, uvloop")
    table = ["| measurement | result | notes |", "|---|---|---|"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(table)
    print(text)
    if not args.no_write:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with RESULTS.open("a") as f:
            f.write(f"\n## API serving (issue 6)\n\n`python -m bench.api{' --quick' * args.quick}`"
                    f", {stamp}. Machine: {machine}.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
