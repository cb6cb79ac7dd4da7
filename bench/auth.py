"""What authentication and authorization cost per request (issue 7): ``python -m bench.auth``.

One run, side by side, two servers in subprocesses pinned to CPU 0, measured in alternating
rounds while the load generator (this process, uvloop) runs pinned to CPU 1:

* ``auth``: the production application (``make_app`` with ``build_security`` from the default
  flags: the CAs from the simulated cluster's ``extension-apiserver-authentication``
  ConfigMap, watched; TokenReview and SubjectAccessReview clients on its metrics-server
  kubeconfig; the default 10 s decision caches);
* ``none``: the same routes (``add_routes`` behind the error middleware) with no security
  middleware at all.

Both serve TLS with the same self-signed certificate and are sent the same bytes: what the
aggregator sends, on kept-alive connections presenting the front-proxy client certificate —
one PodMetrics GET with ``X-Remote-User: alice`` and ``X-Remote-Group: system:authenticated``
(alice may get pods in ``default`` by a SubjectAccessReview, so the steady state is: the
certificate verified once per connection, the user read from the headers, the headers
stripped, the decision found in the cache). Requests are pipelined (``--conns`` x
``--depth``); every response must be a 200. The server's CPU comes from
``/proc/<pid>/stat`` (utime + stime, all threads) over each round.

The difference of CPU per request between the two is the cost of security; the target is
< 20 µs. The table is printed and, unless ``--no-write``, appended to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

P = "/apis/metrics.k8s.io/v1beta1"
RESULTS = Path(__file__).with_name("RESULTS.md")
NS = 1_000_000_000
_TCK = os.sysconf("SC_CLK_TCK")
POD = ("default", "web-0")


# ============================================================================ the server side


@dataclass(frozen=True)
class _Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


class _Cluster:
    """The informers' read API over one node and one pod."""

    def __init__(self) -> None:
        self._node = _Node("node-0")
        self._pod = _Pod(*POD, {"app": "web"})

    def nodes(self) -> list[_Node]:
        return [self._node]

    def node(self, name: str) -> _Node | None:
        return self._node if name == self._node.name else None

    def pods_in(self, namespace: str | None) -> list[_Pod]:
        return [self._pod] if namespace in (None, POD[0]) else []

    def pod(self, namespace: str, name: str) -> _Pod | None:
        return self._pod if (namespace, name) == POD else None


def _snapshot() -> Any:
    from fastmetrics.store import ContainerUsage, NodeUsage, PodUsage

    now = time.time_ns()
    node = NodeUsage(2_000_000_000, 4 << 30, now - 5 * NS, 15 * NS)
    pod = PodUsage(POD[0], POD[1], now - 5 * NS, 15 * NS,
                   [ContainerUsage("web", 50_000_000, 64 << 20),
                    ContainerUsage("sidecar", 1_000_000, 8 << 20)])

    class Snapshot:
        def node(self, name: str) -> Any:
            return node if name == "node-0" else None

        def pod(self, namespace: str, name: str) -> Any:
            return pod if (namespace, name) == POD else None

    return Snapshot()


async def _serve(cfg: dict[str, Any]) -> None:
    from aiohttp import web

    from fastmetrics.api.handlers import MetricsAPI, add_routes
    from fastmetrics.auth import build_security
    from fastmetrics.cluster import load_client_config
    from fastmetrics.health import HealthState
    from fastmetrics.options import Options
    from fastmetrics.server import ServingTLS, error_middleware, make_app, serve

    options = Options(bind_address="127.0.0.1", secure_port=cfg["port"],
                      cert_dir=cfg["cert_dir"], kubeconfig=cfg["kubeconfig"])
    snapshot = _snapshot()
    api = MetricsAPI(_Cluster(), lambda: snapshot, server_address="127.0.0.1:443")
    security = None
    if cfg["mode"] == "auth":
        client = load_client_config(cfg["kubeconfig"])
        security = await build_security(options, client, client)
        app = make_app(HealthState(), api=api, security=security)
        await security.start()
    else:
        app = web.Application(middlewares=[error_middleware])
        add_routes(app, api)
    runner = await serve(app, options, tls=ServingTLS(options))
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    if security is not None:
        await security.stop()


def _server_main(config_json: str) -> None:
    cfg = json.loads(config_json)
    os.sched_setaffinity(0, {cfg["cpu"]})
    import uvloop

    uvloop.run(_serve(cfg))


# ============================================================================ the client side


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TCK


@dataclass
class Server:
    mode: str
    proc: subprocess.Popen[bytes]
    port: int


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(mode: str, tmp: Path, kubeconfig: str, cpu: int) -> Server:
    port = _free_port()
    cfg = {"mode": mode, "port": port, "cert_dir": str(tmp / "certs"), "kubeconfig": kubeconfig,
           "cpu": cpu}
    log = (tmp / f"server-{mode}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bench.auth", "--serve", json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == b"READY" or proc.poll() is not None:
            break
    if line.strip() != b"READY":
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"the {mode} server did not start: see {tmp}/server-{mode}.log")
    return Server(mode, proc, port)


def _stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait(5)


REQUEST = (f"GET {P}/namespaces/{POD[0]}/pods/{POD[1]} HTTP/1.1\r\n"
           "Host: 127.0.0.1\r\nUser-Agent: kube-aggregator-bench\r\n"
           "Accept: application/json, */*\r\nX-Remote-User: alice\r\n"
           "X-Remote-Group: system:authenticated\r\nX-Forwarded-For: 127.0.0.1\r\n"
           "Accept-Encoding: gzip\r\n\r\n").encode()


async def _connection(port: int, ctx: ssl.SSLContext, depth: int, until: float,
                      counts: list[int], bad: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="localhost")
    batch = REQUEST * depth
    buf = b""
    try:
        while time.monotonic() < until:
            writer.write(batch)
            got = 0
            while got < depth:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    chunk = await reader.read(65536)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buf += chunk
                    continue
                head = buf[:head_end]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                end = head_end + 4 + length
                while len(buf) < end:
                    chunk = await reader.read(65536)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buf += chunk
                if not head.startswith(b"HTTP/1.1 200"):
                    bad.append(buf[:end])
                buf = buf[end:]
                got += 1
            counts[0] += depth
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _round(server: Server, ctx: ssl.SSLContext, conns: int, depth: int,
                 seconds: float) -> tuple[float, float]:
    """(requests/s, server CPU µs/request) for one round."""
    counts = [0]
    bad: list[bytes] = []
    cpu0 = proc_cpu_s(server.proc.pid)
    t0 = time.monotonic()
    await asyncio.gather(*(_connection(server.port, ctx, depth, t0 + seconds, counts, bad)
                           for _ in range(conns)))
    wall = time.monotonic() - t0
    cpu = proc_cpu_s(server.proc.pid) - cpu0
    if bad:
        raise RuntimeError(f"{server.mode}: {len(bad)} responses were not 200, e.g. "
                           f"{bad[0][:400]!r}")
    return counts[0] / wall, cpu / counts[0] * 1e6


async def _one(port: int, ctx: ssl.SSLContext, user: str,
               writer_reader: tuple[Any, Any] | None = None) -> tuple[float, Any]:
    """Seconds for one request as ``user`` (on a new connection unless given one)."""
    t0 = time.perf_counter()
    if writer_reader is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="localhost")
    else:
        writer, reader = writer_reader
    writer.write(REQUEST.replace(b"X-Remote-User: alice", f"X-Remote-User: {user}".encode()))
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return time.perf_counter() - t0, (writer, reader)


async def _cold_costs(server: Server, ctx: ssl.SSLContext, sim: Any) -> dict[str, float]:
    """What the caches save, seen from the client (medians of 20, ms): a request on a new
    connection (TLS handshake, the client certificate verified), and one for a user whose
    decision is not cached (a SubjectAccessReview), against the cached steady state."""
    from fastmetrics.auth import CertPool

    out: dict[str, list[float]] = {"new connection": [], "uncached decision": [],
                                   "cached": []}
    conn = None
    for i in range(20):
        sim.api.policy.rules[-1] = dataclasses.replace(
            sim.api.policy.rules[-1], users=("alice", f"user-{i}"))
        dt_new, _ = await _one(server.port, ctx, "alice")
        out["new connection"].append(dt_new)
        dt_sar, conn = await _one(server.port, ctx, f"user-{i}", conn)
        out["uncached decision"].append(dt_sar)
        dt_hit, conn = await _one(server.port, ctx, f"user-{i}", conn)
        out["cached"].append(dt_hit)
    pool = CertPool(sim.api.front_proxy_ca.cert_pem, "bench")
    der = ssl.PEM_cert_to_DER_cert(sim.api.front_proxy_client.cert_pem.decode())
    verify = []
    for _ in range(20):
        pool = CertPool(sim.api.front_proxy_ca.cert_pem, "bench")
        t0 = time.perf_counter()
        pool.verify(der)
        verify.append(time.perf_counter() - t0)
    res = {k: statistics.median(v) * 1e3 for k, v in out.items()}
    res["certificate verification (in process)"] = statistics.median(verify) * 1e3
    return res


@contextlib.contextmanager
def _simulated_cluster(tmp: Path) -> Iterator[Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from _e2e import LoopThread

    from fastmetrics.sim.apiserver import Rule
    from fastmetrics.sim.model import ClusterShape
    from fastmetrics.sim.run import SimulatedCluster

    lt = LoopThread()
    sim = SimulatedCluster(ClusterShape(nodes=1, pods_per_node=1), tmp / "sim")
    sim.api.policy.rules.append(Rule("alice:metrics", ("get", "list"), users=("alice",),
                                     api_groups=("metrics.k8s.io",), resources=("pods",),
                                     namespaces=("default",)))
    try:
        lt.run(sim.start())
        yield sim
    finally:
        with contextlib.suppress(Exception):
            lt.run(sim.stop())
        lt.close()


def _machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()}-core {model or platform.machine()}, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"OpenSSL {ssl.OPENSSL_VERSION.split()[1]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="per round and server")
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.serve:
        _server_main(args.serve)
        return 0

    import uvloop

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    os.sched_setaffinity(0, {client_cpu})
    rows: dict[str, list[tuple[float, float]]] = {"none": [], "auth": []}
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as d, \
            _simulated_cluster(Path(d)) as sim:
        tmp = Path(d)
        servers = {m: _start_server(m, tmp, str(sim.metrics_server_kubeconfig), server_cpu)
                   for m in ("none", "auth")}
        try:
            ctx = ssl.create_default_context(cafile=str(tmp / "certs" / "apiserver.crt"))
            fp = sim.api.front_proxy_client
            ctx.load_cert_chain(fp.cert_file, fp.key_file)

            async def run() -> None:
                for server in servers.values():  # warm up: handshakes, the first review
                    await _round(server, ctx, args.conns, args.depth, 0.5)
                for _ in range(args.rounds):
                    for mode, server in servers.items():
                        rows[mode].append(await _round(server, ctx, args.conns, args.depth,
                                                       args.seconds))

            uvloop.run(run())
            cold = uvloop.run(_cold_costs(servers["auth"], ctx, sim))
            reviews = sim.api.counts["subjectaccessreviews"]
            token_reviews = sim.api.counts["tokenreviews"]
        finally:
            for server in servers.values():
                _stop_server(server)

    def med(mode: str, i: int) -> float:
        return statistics.median(r[i] for r in rows[mode])

    per_round = [a[1] - n[1] for a, n in zip(rows["auth"], rows["none"], strict=True)]
    cost = statistics.median(per_round)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Security (issue 7)",
        "",
        f"`python -m bench.auth`, {when}. Machine: {_machine()}; each server pinned to CPU "
        f"{server_cpu}, the load generator (this process, uvloop) to CPU {client_cpu}. TLS "
        f"on 127.0.0.1, {args.conns} kept-alive connections x {args.depth} pipelined "
        f"requests, presenting the front-proxy client certificate; {args.rounds} rounds of "
        f"{args.seconds:g} s per server, alternating; medians (all rounds below).",
        "",
        "| server | server CPU µs/request | requests/s per server core (1 s / CPU per "
        "request) | requests/s measured |",
        "|---|---|---|---|",
        f"| no security middleware | {med('none', 1):.1f} | {1e6 / med('none', 1):,.0f} | "
        f"{med('none', 0):,.0f} |",
        f"| authentication + authorization (steady state) | {med('auth', 1):.1f} | "
        f"{1e6 / med('auth', 1):,.0f} | {med('auth', 0):,.0f} |",
        f"| **cost of security** (median of the per-round differences) | **{cost:.1f}** | "
        f"{med('none', 1) / med('auth', 1) - 1:+.0%} | |",
        "",
        "The measured requests/s are bounded by the load generator (one shared core, Python), "
        "not by the server, so the server's capacity is given from its CPU per request. "
        "Per round, auth minus none (µs/request): "
        + ", ".join(f"{x:.1f}" for x in per_round) + ". Rounds (req/s, µs/req): none "
        + ", ".join(f"({r[0]:,.0f}, {r[1]:.1f})" for r in rows["none"]) + "; auth "
        + ", ".join(f"({r[0]:,.0f}, {r[1]:.1f})" for r in rows["auth"]) + ".",
        f"SubjectAccessReviews made during the whole run: {reviews} (decisions cached 10 s); "
        f"TokenReviews: {token_reviews}.",
        "",
        "What the caches save (one request at a time, client wall time, medians of 20): "
        + "; ".join(f"{k} {v:.2f} ms" for k, v in cold.items()) + ". The certificate "
        "(ECDSA P-256 here) is verified once per connection and cached by its bytes; a "
        "decision once per user and request per TTL.",
        "",
        f"Target: < 20 µs of server CPU per request — **{'met' if cost < 20 else 'NOT met'}, "
        f"{cost:.1f} µs**.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        with RESULTS.open("a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
