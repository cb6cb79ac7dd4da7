"""API serving benchmark (issues 6 and 8): ``python -m bench.api [--quick]``.

One run, side by side: the metrics.k8s.io routes (``add_routes`` behind the error middleware;
no authentication, which the auth benchmarks measure) over a synthetic cluster: the real
``PodInformer`` fed one apiserver-style list of every pod (so pods are ``PodInfo`` objects
sharing ``Labels``, as in production), and real ``Store`` snapshots of synthetic ticks in which
every pod has usage. The server runs over TLS on 127.0.0.1 with uvloop in a subprocess pinned
to CPU 0; the load generators run here, pinned to CPU 1, on kept-alive TLS connections.

Measured:

(a) one PodMetrics GET: requests/s (aiohttp client, 32 connections; pipelined raw TLS sockets)
    and the server's CPU per request (``/proc/<pid>/stat``, all threads);
(b) an HPA-style namespaced list with a label selector matching 50 pods, open loop at
    1,000 req/s over 64 kept-alive connections: latency p50/p99 from each request's
    scheduled send time;
(c) ``pods`` across all namespaces (150,000 pods; 15,000 with ``--quick``) in JSON and in
    protobuf, one request at a time: wall time until the body is read, for a request on a
    snapshot already served once and for the first request after a new snapshot;
(d) in-process renders of the same bodies: the columnar path (compiled and pure-Python twin),
    the object-by-object path it replaced, and the bodies built naively (dicts +
    ``json.dumps``);
(e) (b) again while a VPA-like client lists all pods (JSON and protobuf in turn; its own
    process, niced, on the load generator's CPU, so that decrypting its bodies does not slow
    the HPA client), back to back (which saturates the server's one core) and one list a
    second (~60x the VPA recommender's default once a minute), and the server swaps in a new
    snapshot every 5 s (each one's first list builds its table);
(f) ``/metrics`` at 5,000 nodes: render time, in-process.

With (c) and (e), the server's event-loop lag: how late a 1 ms timer in the server fires
(p99, max), i.e. what any request arriving then would wait before being looked at.

The table is printed and, unless ``--no-write``, appended to ``bench/RESULTS.md``. The same
script runs against an older checkout (``PYTHONPATH=<checkout>/src``): what the older code
lacks is reported as "n/a".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

P = "/apis/metrics.k8s.io/v1beta1"
PB = "application/vnd.kubernetes.protobuf"
JSON = "application/json"
NAMESPACES = 50
GROUP = 50  # pods per app label within a namespace
SNAPSHOTS = 3  # distinct ticks the server rotates through
ROTATE = "/bench/rotate"
LAG = "/bench/lag"
RESULTS = Path(__file__).with_name("RESULTS.md")


# ============================================================== the synthetic cluster


def _pod_list_body(pods: list[tuple[str, str, dict[str, str]]]) -> bytes:
    """A PartialObjectMetadataList as the apiserver writes it (sorted by namespace, name)."""
    items = [{"metadata": {"name": n, "namespace": ns, "resourceVersion": "1", "labels": lb}}
             for ns, n, lb in sorted(pods, key=lambda p: (p[0], p[1]))]
    return json.dumps({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                       "metadata": {"resourceVersion": "7"}, "items": items},
                      separators=(",", ":"), sort_keys=False).encode()


class Cluster:
    """The informers' read API: nodes from a dict, pods from a real ``PodInformer``."""

    def __init__(self, nodes: list[Any], informer: Any) -> None:
        self._nodes = {n.name: n for n in nodes}
        self._node_list = sorted(nodes, key=lambda n: n.name)
        self.informer = informer

    def nodes(self) -> list[Any]:
        return self._node_list

    def node(self, name: str) -> Any:
        return self._nodes.get(name)

    def pods_in(self, namespace: str | None) -> list[Any]:
        out: list[Any] = self.informer.pods_in(namespace)
        return out

    def pod(self, namespace: str, name: str) -> Any:
        return self.informer.pod(namespace, name)


def build(pods_total: int, ticks: int = SNAPSHOTS) -> tuple[Cluster, list[Any]]:
    """The cluster and ``ticks`` consecutive snapshots (every pod has usage in each)."""
    from fastmetrics.cluster import NodeInfo, PodInformer
    from fastmetrics.store import Store

    from .benchmarks._data import RESOLUTION_MS, SyntheticCluster

    per_node = 100
    nodes = max(1, pods_total // per_node)
    sc = SyntheticCluster(nodes, per_node, 2)
    store = Store(RESOLUTION_MS * 1_000_000)
    store.store(sc.tick(0))
    snaps = [store.store(sc.tick(k)) for k in range(1, ticks + 1)]
    pods: list[tuple[str, str, dict[str, str]]] = []
    for i in range(nodes):
        for p in range(per_node):
            g = i * per_node + p  # SyntheticCluster's namespace is ns-{g % 50}
            group = (g // NAMESPACES) // GROUP
            labels = {"app": f"app-{group}", "tier": "backend",
                      "pod-template-hash": f"{group * 7919:010x}"}
            pods.append((f"ns-{g % NAMESPACES}", f"pod-{i}-{p}", labels))
    informer = PodInformer(None)  # type: ignore[arg-type]  # fed directly, never started
    items, _, _ = informer._decode_page(_pod_list_body(pods))
    informer._replace(items)
    node_objs = [NodeInfo(n, {"kubernetes.io/hostname": n, "pool": "default"}, (), 10250, True)
                 for n in sc.names]
    return Cluster(node_objs, informer), snaps


def fresh(snap: Any) -> Any:
    """A copy of ``snap`` with nothing derived from it yet (what a new tick publishes)."""
    return dataclasses.replace(snap)


# ============================================================== the server (subprocess)


def _pin(cpu: int) -> bool:
    try:
        if cpu in os.sched_getaffinity(0) and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {cpu})
            return True
    except (AttributeError, OSError):
        pass
    return False


def serve_main(port: int, pods_total: int, cert_dir: Path, switch_interval_s: float) -> None:
    import uvloop
    from aiohttp import web

    from fastmetrics.api.handlers import MetricsAPI, add_routes
    from fastmetrics.server import error_middleware
    from fastmetrics.sim.certs import KeyPair, server_context

    _pin(0)
    if switch_interval_s > 0:
        sys.setswitchinterval(switch_interval_s)
    cluster, snaps = build(pods_total)
    current = [fresh(snaps[0])]
    rotations = [0]
    api = MetricsAPI(cluster, lambda: current[0])
    app = web.Application(middlewares=[error_middleware])
    add_routes(app, api)

    async def rotate(request: web.Request) -> web.Response:
        rotations[0] += 1
        current[0] = fresh(snaps[rotations[0] % len(snaps)])
        return web.Response(text=str(rotations[0]))

    lags: list[float] = []

    async def lag(request: web.Request) -> web.Response:
        out = sorted(lags)
        lags.clear()
        if not out:
            return web.json_response({"n": 0})
        return web.json_response({"n": len(out), "p50": out[len(out) // 2],
                                  "p99": out[min(len(out) - 1, int(len(out) * 0.99))],
                                  "max": out[-1]})

    async def probe() -> None:
        # how late a 1 ms timer fires: what any request arriving then waits for the loop
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t0 - 0.001)
            if len(lags) > 1_000_000:
                del lags[:500_000]

    app.router.add_post(ROTATE, rotate)
    app.router.add_get(LAG, lag)
    ctx = server_context(KeyPair(cert_dir / "server.crt", cert_dir / "server.key"))
    gc.collect()
    gc.freeze()

    async def run() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024, ssl_context=ctx)
        await site.start()
        prober = asyncio.ensure_future(probe())
        print("ready", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            prober.cancel()

    uvloop.run(run())


# ============================================================== load generators


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """The client side: one TLS context, the server's base URL and port."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port = port
        self.ctx = ctx
        self.base = f"https://127.0.0.1:{port}"

    def session(self, limit: int = 100, accept: str = JSON) -> Any:
        import aiohttp

        conn = aiohttp.TCPConnector(limit=limit, ssl=self.ctx)
        return aiohttp.ClientSession(self.base, connector=conn, headers={"Accept": accept},
                                     timeout=aiohttp.ClientTimeout(total=120))

    async def get(self, path: str, accept: str = JSON) -> bytes:
        async with self.session(accept=accept) as s, s.get(path) as r:
            body: bytes = await r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
            return body

    async def rotate(self) -> None:
        async with self.session() as s, s.post(ROTATE) as r:
            await r.read()

    async def lag(self) -> dict[str, float]:
        """The server's event-loop lag since the last call (seconds)."""
        async with self.session() as s, s.get(LAG) as r:
            out: dict[str, float] = await r.json()
            return out

    async def closed_loop(self, path: str, concurrency: int, seconds: float,
                          max_requests: int) -> tuple[int, float]:
        """``concurrency`` workers on kept-alive connections; (requests, seconds)."""
        done = 0
        stop = time.perf_counter() + seconds
        async with self.session(limit=concurrency) as s:
            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < stop and done < max_requests:
                    async with s.get(path) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"GET {path}: {r.status}")
                    done += 1
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done, time.perf_counter() - t0

    async def pipelined(self, path: str, connections: int, depth: int, seconds: float,
                        max_requests: int) -> tuple[int, float]:
        """Raw TLS sockets, ``depth`` requests in flight per connection (HTTP/1.1 pipelining)."""
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
               ).encode()
        stop = time.perf_counter() + seconds
        done = 0

        async def conn() -> None:
            nonlocal done
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ctx)
            buf = b""
            try:
                while time.perf_counter() < stop and done < max_requests:
                    writer.write(req * depth)
                    got = 0
                    while got < depth:
                        head_end = buf.find(b"\r\n\r\n")
                        if head_end < 0:
                            chunk = await reader.read(1 << 16)
                            if not chunk:
                                raise RuntimeError("connection closed")
                            buf += chunk
                            continue
                        head = buf[:head_end]
                        if not head.startswith(b"HTTP/1.1 200"):
                            raise RuntimeError(head[:200])
                        i = head.lower().find(b"content-length:")
                        j = head.find(b"\r\n", i)
                        n = int(head[i + 15:j if j > 0 else len(head)])
                        end = head_end + 4 + n
                        while len(buf) < end:
                            chunk = await reader.read(1 << 16)
                            if not chunk:
                                raise RuntimeError("connection closed")
                            buf += chunk
                        buf = buf[end:]
                        got += 1
                    done += depth
            finally:
                writer.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(conn() for _ in range(connections)))
        return done, time.perf_counter() - t0

    async def timed(self, path: str, accept: str, repeat: int,
                    rotate_first: bool = False) -> tuple[list[float], int]:
        """Wall time of ``repeat`` requests, one at a time on one kept-alive connection."""
        times = []
        size = 0
        async with self.session(limit=1, accept=accept) as s:
            for _ in range(repeat):
                if rotate_first:
                    async with s.post(ROTATE) as r:
                        await r.read()
                t0 = time.perf_counter()
                async with s.get(path) as r:
                    body = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
                times.append(time.perf_counter() - t0)
                size = len(body)
        return times, size

    async def open_loop(self, path: str, accept: str, rate: float, seconds: float,
                        connections: int = 64) -> list[float]:
        """Requests sent on a fixed schedule over a fixed pool of kept-alive connections
        (as an aggregator's; more would mean TLS handshakes in the measurement); latency
        from each one's scheduled time."""
        n = int(rate * seconds)
        lat: list[float] = []
        async with self.session(limit=connections, accept=accept) as s:
            async def one(at: float) -> None:
                async with s.get(path) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"GET {path}: {r.status}")
                lat.append(time.perf_counter() - at)

            await asyncio.gather(*(one(time.perf_counter()) for _ in range(connections)))
            lat.clear()
            tasks = []
            t0 = time.perf_counter() + 0.05
            for i in range(n):
                at = t0 + i / rate
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(at)))
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
        return lat

    async def vpa(self, stop: asyncio.Event, rotate_every_s: float,
                  max_requests: int, every_s: float = 0.0) -> dict[str, list[float]]:
        """All-pods lists (JSON and protobuf in turn) until ``stop``, one every ``every_s``
        (0: back to back); a new snapshot every ``rotate_every_s``. Wall time per list, by
        format."""
        out: dict[str, list[float]] = {"JSON": [], "protobuf": []}
        next_rotation = time.perf_counter() + rotate_every_s
        async with self.session(limit=2) as s:
            for i in range(max_requests):
                if stop.is_set():
                    break
                if time.perf_counter() >= next_rotation:
                    async with s.post(ROTATE) as r:
                        await r.read()
                    next_rotation += rotate_every_s
                label, accept = ("JSON", JSON) if i % 2 == 0 else ("protobuf", PB)
                t0 = time.perf_counter()
                async with s.get(f"{P}/pods", headers={"Accept": accept}) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"VPA list: {r.status}")
                took = time.perf_counter() - t0
                out[label].append(took)
                if every_s > took:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), every_s - took)
        return out


def _percentiles(lat: list[float]) -> tuple[float, float, float]:
    lat = sorted(lat)
    return (lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1])


def vpa_main(port: int, cert_dir: Path, seconds: float, rotate_every_s: float,
             every_s: float) -> None:
    """The VPA-like client as its own (niced) process, so that decrypting its 35-55 MB bodies
    does not slow the HPA load generator's loop: all-pods lists back to back for ``seconds``;
    prints the wall time of each list, by format, as JSON."""
    import uvloop

    from fastmetrics.sim.certs import client_context

    _pin(1)
    os.nice(10)
    load = Load(port, client_context(cert_dir / "bench-ca.crt"))

    async def run() -> dict[str, list[float]]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await load.vpa(stop, rotate_every_s, 100_000, every_s)

    print(json.dumps(uvloop.run(run())), flush=True)


# ============================================================== naive baseline


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


def object_items(cluster: Cluster, snap: Any, namespace: str | None, app: str | None = None
                 ) -> list[tuple[str, str, Mapping[str, str], Any]]:
    """What the object-by-object path renders: (namespace, name, labels, PodUsage), sorted."""
    out = []
    for p in cluster.pods_in(namespace):
        if app is not None and p.labels.get("app") != app:
            continue
        u = snap.pod(p.namespace, p.name)
        if u is not None:
            out.append((p.namespace, p.name, p.labels, u))
    out.sort(key=lambda i: (i[0], i[1]))
    return out


def object_path(cluster: Cluster, snap: Any, now: int, kind: str) -> bytes:
    """The whole object-by-object list: PodUsage per pod (``pods_bulk``), sort, render."""
    from fastmetrics.api import objects, protobuf

    pods = cluster.pods_in(None)
    idents = [(p.namespace, p.name) for p in pods]
    usages = snap.pods_bulk(idents)
    items = [(p.namespace, p.name, p.labels, u) for p, u in zip(pods, usages, strict=True)
             if u is not None]
    items.sort(key=lambda i: (i[0], i[1]))
    if kind == "json":
        return objects.pod_metrics_list(items, now)
    return protobuf.pod_metrics_list(items, now)


def metrics_render_s(nodes: int = 5000) -> float:
    """``ServerMetrics.render`` with ``nodes`` nodes' series, best of 5."""
    import numpy as np

    from fastmetrics.monitoring import ServerMetrics

    m = ServerMetrics(15.0)
    names = [f"node-{i:05d}" for i in range(nodes)]
    rng = np.random.default_rng(1)
    for _ in range(4):
        m.observe_requests(names, rng.uniform(0.002, 0.05, nodes), np.ones(nodes, bool),
                           np.full(nodes, time.time()))
    m.observe_tick(0.4)
    m.observe_freshness(rng.uniform(1, 15, 1000))
    return best_of(m.render, 5)


# ============================================================== main


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api")
    ap.add_argument("--quick", action="store_true", help="15,000 pods, shorter runs")
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--cert-dir", help=argparse.SUPPRESS)
    ap.add_argument("--parts", default="abcdef", help="which measurements (letters a-f)")
    ap.add_argument("--switch-interval-ms", type=float, default=0.0,
                    help="the server's sys.setswitchinterval (default: Python's)")
    ap.add_argument("--vpa", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--vpa-seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument("--vpa-every", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--pods", type=int, default=0)
    ap.add_argument("--label", default="", help="a name for this run in RESULTS.md")
    ap.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args(argv)
    pods_total = args.pods or (15_000 if args.quick else 150_000)
    if args.serve:
        serve_main(args.serve, pods_total, Path(args.cert_dir), args.switch_interval_ms / 1e3)
        return 0
    if args.vpa:
        vpa_main(args.vpa, Path(args.cert_dir), args.vpa_seconds, 5.0, args.vpa_every)
        return 0

    import uvloop

    from fastmetrics.sim.certs import CertAuthority, client_context

    secs = 2.0 if args.quick else 5.0
    load0 = os.getloadavg()[0]
    rows: list[tuple[str, str, str]] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-api-")
    cert_dir = Path(tmp.name)
    ca = CertAuthority(cert_dir, "bench")
    ca.issue("server", "127.0.0.1", ip_addresses=("127.0.0.1",), server=True)
    ctx = client_context(ca.cert_file)
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = int(sk.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "bench.api", "--serve", str(port),
                             "--pods", str(pods_total), "--cert-dir", str(cert_dir),
                             "--switch-interval-ms", str(args.switch_interval_ms)],
                            stdout=subprocess.PIPE)
    pinned = _pin(1)
    try:
        cluster, snaps = build(pods_total)  # the same cluster, for in-process renders
        gc.collect()
        gc.freeze()  # keep full collections of the cluster out of the load generator
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"server did not start: {line!r}")
        load = Load(port, ctx)
        ns0 = "ns-0"
        single = sorted(cluster.pods_in(ns0), key=lambda p: p.name)[0]
        single_path = f"{P}/namespaces/{single.namespace}/pods/{single.name}"
        sel_path = f"{P}/namespaces/{ns0}/pods?labelSelector=app%3Dapp-3"

        async def run() -> None:
            if "a" in args.parts:
                await part_a()
            if "b" in args.parts:
                await part_b()
            if "c" in args.parts:
                await part_c()
            if "e" in args.parts:
                await part_e()

        async def part_a() -> None:
            # (a) single PodMetrics GET
            await load.closed_loop(single_path, 8, 0.5, 2000)  # warm-up
            c0 = _cpu_seconds(proc.pid)
            n, t = await load.closed_loop(single_path, 32, secs, 10**6)
            cpu = _cpu_seconds(proc.pid) - c0
            rows.append(("(a) PodMetrics GET, aiohttp client, 32 kept-alive TLS conns",
                         f"{n / t:,.0f} req/s", f"server CPU {cpu / n * 1e6:.0f} µs/req "
                         f"({cpu / t:.0%} of a core)"))
            c0 = _cpu_seconds(proc.pid)
            n, t = await load.pipelined(single_path, 4, 16, secs, 10**6)
            cpu = _cpu_seconds(proc.pid) - c0
            rows.append(("(a) PodMetrics GET, pipelined raw TLS sockets, 4 conns x 16",
                         f"{n / t:,.0f} req/s", f"server CPU {cpu / n * 1e6:.0f} µs/req "
                         f"({cpu / t:.0%} of a core)"))
        async def part_b() -> None:
            # (b) HPA-style list, open loop at 1,000 req/s
            body = await load.get(sel_path)
            assert len(json.loads(body)["items"]) == GROUP, "selector must match 50 pods"
            for accept, label in ((JSON, "JSON"), (PB, "protobuf")):
                c0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
                p50, p99, mx = _percentiles(await load.open_loop(sel_path, accept, 1000.0, secs))
                cpu = (_cpu_seconds(proc.pid) - c0) / (time.perf_counter() - t0)
                rows.append((f"(b) namespace list, labelSelector → 50 pods, {label}, "
                             f"open loop 1,000 req/s x {secs:.0f} s",
                             f"p50 {_ms(p50)} ms, p99 {_ms(p99)} ms",
                             f"max {_ms(mx)} ms, n={int(1000 * secs)}; server CPU {cpu:.0%} "
                             "of a core"))
        async def part_c() -> None:
            # (c) all pods, one request at a time
            for accept, label in ((JSON, "JSON"), (PB, "protobuf")):
                await load.timed(f"{P}/pods", accept, 1)  # this snapshot's table, if any
                await load.lag()
                times, size = await load.timed(f"{P}/pods", accept, 5)
                lag = await load.lag()
                rows.append((f"(c) all pods ({pods_total:,}), {label}, one request",
                             f"{_ms(statistics.median(times))} ms (median of 5)",
                             f"min {_ms(min(times))} ms, {size / 1e6:.1f} MB; server loop lag "
                             f"p99 {_ms(lag.get('p99', 0))} ms, max {_ms(lag.get('max', 0))} ms"))
                times, _ = await load.timed(f"{P}/pods", accept, 3, rotate_first=True)
                rows.append((f"(c) all pods ({pods_total:,}), {label}, first request on a "
                             "new snapshot", f"{_ms(statistics.median(times))} ms (median of 3)",
                             f"min {_ms(min(times))} ms"))
        async def part_e() -> None:
            # (e) HPA while a VPA-like client (its own niced process) lists all pods: back to
            # back (the server's core saturated), then one list a second
            for accept, label, every in ((JSON, "JSON", 0.0), (PB, "protobuf", 0.0),
                                         (JSON, "JSON", 1.0), (PB, "protobuf", 1.0)):
                vpa = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.api", "--vpa", str(port), "--cert-dir",
                    str(cert_dir), "--vpa-seconds", str(2 * secs + 1.5),
                    "--vpa-every", str(every), stdout=asyncio.subprocess.PIPE)
                try:
                    await asyncio.sleep(1.0)
                    await load.lag()
                    lat = await load.open_loop(sel_path, accept, 1000.0, 2 * secs)
                    lag = await load.lag()
                    out, _ = await asyncio.wait_for(vpa.communicate(), 180)
                finally:
                    if vpa.returncode is None:
                        vpa.kill()
                        await vpa.wait()
                lists = json.loads(out)
                p50, p99, mx = _percentiles(lat)
                vj, vp = lists["JSON"], lists["protobuf"]
                pace = "back to back" if not every else f"one every {every:g} s"
                rows.append((f"(e) (b) {label} while all-pods lists run {pace} "
                             f"(new snapshot every 5 s), {2 * secs:.0f} s",
                             f"p50 {_ms(p50)} ms, p99 {_ms(p99)} ms",
                             f"max {_ms(mx)} ms; server loop lag p99 {_ms(lag.get('p99', 0))} "
                             f"ms, max {_ms(lag.get('max', 0))} ms; meanwhile {len(vj)} JSON "
                             f"lists (median {_ms(statistics.median(vj)) if vj else '-'} ms) "
                             f"and {len(vp)} protobuf (median "
                             f"{_ms(statistics.median(vp)) if vp else '-'} ms)"))

        uvloop.run(asyncio.wait_for(run(), 900))

        if "d" in args.parts:
            in_process(cluster, snaps, pods_total, rows)
        if "f" in args.parts:
            rows.append(("(f) /metrics render, 5,000 nodes", f"{_ms(metrics_render_s())} ms",
                         "in-process, ServerMetrics.render"))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        tmp.cleanup()
    report(rows, args, pinned, load0)
    return 0


def in_process(cluster: Cluster, snaps: list[Any], pods_total: int,
               rows: list[tuple[str, str, str]]) -> None:
    """(d): renders of the same bodies in this process, on the same cluster and snapshot."""
    snap = fresh(snaps[0])
    now = time.time_ns()
    rep = 3 if pods_total > 50_000 else 5
    all_items = object_items(cluster, snap, None)
    r_obj_json = best_of(lambda: object_path(cluster, snap, now, "json"), rep)
    r_obj_pb = best_of(lambda: object_path(cluster, snap, now, "protobuf"), rep)
    r_naive = best_of(lambda: naive_list(all_items, now), rep)
    try:
        from fastmetrics.api import render
    except ImportError:
        render = None  # type: ignore[assignment]  # an older checkout
    if render is not None:
        from fastmetrics.api import _render_py
        pods = cluster.pods_in(None)
        ref_json = object_path(cluster, snap, now, "json")
        ref_pb = object_path(cluster, snap, now, "protobuf")
        t0 = time.perf_counter()
        table = render.build_pod_table(snap)
        t_table = time.perf_counter() - t0
        t_served = best_of(snap._served_pods, rep)
        c_json = best_of(lambda: render.pod_list(table, pods, now, "json"), rep)
        c_pb = best_of(lambda: render.pod_list(table, pods, now, "protobuf"), rep)
        assert render.pod_list(table, pods, now, "json")[0] == ref_json
        assert render.pod_list(table, pods, now, "protobuf")[0] == ref_pb
        impl = render._impl
        try:
            render._impl = _render_py
            py_json = best_of(lambda: render.pod_list(table, pods, now, "json"), 1)
            py_pb = best_of(lambda: render.pod_list(table, pods, now, "protobuf"), 1)
            assert render.pod_list(table, pods, now, "json")[0] == ref_json
        finally:
            render._impl = impl
        kind = "compiled" if render.COMPILED else "pure Python"
        rows.append((f"(d) columnar render, all pods ({pods_total:,}), {kind}: "
                     "JSON / protobuf", f"{_ms(c_json)} ms / {_ms(c_pb)} ms",
                     "per request: join with the informer's pods + one-pass write; "
                     "bytes identical to the object path (asserted)"))
        rows.append((f"(d) the snapshot's table, all pods ({pods_total:,}), once per "
                     "snapshot", f"{_ms(t_table + t_served)} ms",
                     f"served pods {_ms(t_served)} ms + layout and strings "
                     f"{_ms(t_table)} ms"))
        rows.append(("(d) columnar render, pure-Python twin: JSON / protobuf",
                     f"{_ms(py_json)} ms / {_ms(py_pb)} ms", "FASTMETRICS_NO_EXTENSIONS=1"))
    else:
        c_json = c_pb = float("nan")
        rows.append(("(d) columnar render", "n/a", "not in this checkout"))
    rows.append((f"(d) object-by-object path, all pods ({pods_total:,}): JSON / protobuf",
                 f"{_ms(r_obj_json)} ms / {_ms(r_obj_pb)} ms",
                 "PodUsage per pod (pods_bulk), sort, objects / protobuf renderers"))
    rows.append((f"(d) naive json.dumps over dicts, all pods ({pods_total:,})",
                 f"{_ms(r_naive)} ms", f"columnar JSON {r_naive / c_json:.1f}x, protobuf "
                 f"{r_naive / c_pb:.1f}x faster; object path JSON "
                 f"{r_naive / r_obj_json:.1f}x"))


def report(rows: list[tuple[str, str, str]], args: argparse.Namespace, pinned: bool,
           load0: float) -> None:
    """Print the table; append it to RESULTS.md unless ``--no-write``."""
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
               "TLS on 127.0.0.1, uvloop"
               + (f", server switch interval {args.switch_interval_ms:g} ms"
                  if args.switch_interval_ms else "")
               + f"; load average before/after {load0:.2f}/{os.getloadavg()[0]:.2f} "
                 "(other work on the machine inflates latencies)")
    table_md = ["| measurement | result | notes |", "|---|---|---|"]
    table_md += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(table_md)
    print(text)
    if not args.no_write:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        label = f" ({args.label})" if args.label else ""
        with RESULTS.open("a") as f:
            f.write(f"\n## API serving{label}\n\n`python -m bench.api"
                    f"{' --quick' * args.quick}`, {stamp}. Machine: {machine}.\n\n{text}\n")


if __name__ == "__main__":
    sys.exit(main())
