"""Simulated kubelets: every node of a :class:`~fastmetrics.sim.model.Cluster` in one process.

``KubeletFarm`` serves ``GET /metrics/resource`` (SPEC §1) for every node of the cluster from one
asyncio loop. Each node has its own listening socket bound to ``(node.address, port)`` -- the
same port for every node, one loopback address per node -- and all sockets share one aiohttp
``Application`` (one ``AppRunner``, one ``SockSite`` per socket). The handler tells the nodes
apart by the local address a request arrived on.

TLS: serving certificates come from the cluster CA. Issuing one certificate and one
``SSLContext`` per node costs ~1 ms and ~28 KB RSS per node (measured), while one certificate
for all nodes carries every IP SAN into every handshake (30 KB DER at 5,000 nodes), so nodes are
grouped: one certificate (IP and DNS SANs of its nodes) and one context per ``nodes_per_cert``
nodes (default 64; 1 gives every node its own). A node with fault ``tls`` is served from a
context whose certificate comes from a different CA that nobody trusts, so the handshake fails
for clients trusting the cluster CA. Clients authenticate with ``Authorization: Bearer <token>``
(one of ``tokens``) or a client certificate verified by the cluster CA; anything else gets 401.

Stats: like a real kubelet the node's stats are refreshed at most every ``stats_interval_s``;
while fresh the cached body is served, otherwise it is re-rendered with sample times ``now``
(each container its own millisecond timestamp up to 49 ms before ``now``) and cumulative CPU
computed from the model at exactly that millisecond, so the rate between two scrapes is the
model's ``cpu_nanocores``. Rendering uses a fast path (a cached per-node layout: sort order,
escaped labels, formatted start times and memory; only the CPU values and timestamps are
formatted per render) that is byte-identical to
:func:`~fastmetrics.sim.exposition.render_resource_metrics` over :meth:`KubeletFarm.samples`
(the tests hold the two equal). When the client accepts gzip only the compressed body is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import ssl
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .certs import CertAuthority, KeyPair
from .exposition import (
    ContainerSample,
    NodeSample,
    PodSample,
    escape_label_value,
    format_go_float,
    render_resource_metrics,
)
from .model import Cluster, ContainerModel, NodeModel, PodModel

__all__ = [
    "CONTENT_TYPE",
    "GARBAGE_BODY",
    "METRICS_PATH",
    "KubeletFarm",
    "NodeCounters",
    "free_port",
    "go_float",
    "gzip_body",
    "raise_nofile_limit",
]

METRICS_PATH = "/metrics/resource"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GARBAGE_BODY = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>upstream sent an invalid response</p></body></html>\n"
)
"""The body of a node with fault ``garbage``: HTML, which no Prometheus text parser accepts."""

_NS = 1_000_000_000
_MS = 1_000_000
_MAX_OFFSET_MS = 50
"""Sample times lie up to this many ms (exclusive) before the stats time."""
_PAGE = 4096
_BIND_ATTEMPTS = 20


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def go_float(v: float) -> str:
    """``format_go_float`` with fast paths for the values a kubelet body is made of.

    In [1e-4, 1e6) Go's shortest ``'g'`` form is Python's ``repr`` without a trailing ``.0``; in
    [1e6, 1e16) ``repr`` is fixed-point and its digits are rewritten in Go's ``d.ddde+XX`` form.
    Anything else (0, negatives, tiny or huge values, NaN, infinities) goes the general way.
    """
    if 1e-4 <= v < 1e6:
        r = repr(v)
        return r[:-2] if r.endswith(".0") else r
    if 1e6 <= v < 1e16:
        int_part, _, frac_part = repr(v).partition(".")
        digits = (int_part + frac_part).rstrip("0")
        exp = len(int_part) - 1
        if len(digits) == 1:
            return f"{digits}e+{exp:02d}"
        return f"{digits[0]}.{digits[1:]}e+{exp:02d}"
    return format_go_float(v)


def _offset_ms(*parts: str) -> int:
    """A stable per-series offset of the sample time before the stats time, in [0, 50) ms."""
    return zlib.crc32("/".join(parts).encode()) % _MAX_OFFSET_MS


def _wants_gzip(accept_encoding: str) -> bool:
    """True when ``Accept-Encoding`` allows gzip (a ``gzip`` token without ``q=0``)."""
    if "gzip" not in accept_encoding:
        return False
    for item in accept_encoding.split(","):
        token, _, params = item.partition(";")
        if token.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower().replace(" ", "")
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def gzip_body(body: bytes, level: int = 1) -> bytes:
    """``body`` in a gzip container (mtime 0), compressed at ``level``."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip
    return c.compress(body) + c.flush()


def _headers() -> tuple[dict[str, str], str]:
    """HELP/TYPE headers per family and the trailing error gauge, as the renderer writes them."""
    body = render_resource_metrics(
        NodeSample(2.0, 2.0, 1),
        [PodSample("n", "p", 2.0, 2.0, 1)],
        [ContainerSample("n", "p", "c", 2.0, 2.0, 1, 2.0)],
    ).decode()
    headers: dict[str, str] = {}
    name = ""
    for line in body.splitlines(keepends=True):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            headers[name] = line
        elif line.startswith("# TYPE "):
            headers[name] += line
    tail_at = body.index("# HELP resource_scrape_error ")
    return headers, body[tail_at:]


_HDR, _TAIL = _headers()
_H_CCPU = _HDR["container_cpu_usage_seconds_total"]
_H_CMEM = _HDR["container_memory_working_set_bytes"]
_H_CSTART = _HDR["container_start_time_seconds"]
_H_CSWAP = _HDR["container_swap_usage_bytes"]
_H_NCPU = _HDR["node_cpu_usage_seconds_total"]
_H_NMEM = _HDR["node_memory_working_set_bytes"]
_H_NSWAP = _HDR["node_swap_usage_bytes"]
_H_PCPU = _HDR["pod_cpu_usage_seconds_total"]
_H_PMEM = _HDR["pod_memory_working_set_bytes"]
_H_PSWAP = _HDR["pod_swap_usage_bytes"]


def _pod_overhead(pod: PodModel) -> tuple[int, int, int]:
    """The pod sandbox's own usage: (cpu nanocores, counted from ns, memory bytes)."""
    h = zlib.crc32(f"{pod.namespace}/{pod.name}".encode())
    rate = 100_000 + h % 400_000  # 0.1-0.5 millicores
    since = pod.creation_ns
    if since <= 0 and pod.containers:
        since = min(c.start_time_ns for c in pod.containers)
    memory = (48 + (h >> 8) % 48) * _PAGE
    return rate, since, memory


# --------------------------------------------------------------------------------------------
# Per-node state
# --------------------------------------------------------------------------------------------


class _CEntry:
    """One container in the node's render layout; caches its formatted constant values."""

    __slots__ = ("c", "container", "mem", "mem_s", "namespace", "off", "pod", "start_ns",
                 "start_s")

    def __init__(self, pod: PodModel, c: ContainerModel) -> None:
        self.c = c
        self.namespace = escape_label_value(pod.namespace)
        self.pod = escape_label_value(pod.name)
        self.container = escape_label_value(c.name)
        self.off = _offset_ms(pod.namespace, pod.name, c.name)
        self.mem = -1
        self.mem_s = ""
        self.start_ns = -1
        self.start_s: str | None = None


class _PEntry:
    """One pod in the node's render layout."""

    __slots__ = ("entries", "labels", "mem", "mem_extra", "mem_s", "off", "pod", "rate", "since")

    def __init__(self, pod: PodModel, entries: tuple[_CEntry, ...]) -> None:
        self.pod = pod
        self.entries = entries
        """Its containers, in the pod's order."""
        self.labels = (f'{{namespace="{escape_label_value(pod.namespace)}",'
                       f'pod="{escape_label_value(pod.name)}"}} ')
        self.off = _offset_ms(pod.namespace, pod.name)
        self.rate, self.since, self.mem_extra = _pod_overhead(pod)
        self.mem = -1
        self.mem_s = ""


class _Layout:
    """What a node's body looks like apart from the numbers; rebuilt when its pods change."""

    __slots__ = ("containers", "key", "pods")

    def __init__(self, node: NodeModel) -> None:
        pods = list(node.pods)  # the entries hold the pods, which keeps their id()s unique
        self.key = _layout_key(node)
        self.pods = [_PEntry(p, tuple(_CEntry(p, c) for c in p.containers)) for p in pods]
        self.pods.sort(key=lambda pe: (pe.pod.namespace, pe.pod.name))
        # sorted by raw label values, like the reference renderer
        keyed = [((e.c.name, pe.pod.namespace, pe.pod.name), e)
                 for pe in self.pods for e in pe.entries]
        keyed.sort(key=lambda ke: ke[0])
        self.containers = [e for _, e in keyed]


def _layout_key(node: NodeModel) -> tuple[tuple[int, ...], tuple[int, ...]]:
    pods = node.pods
    return tuple(map(id, pods)), tuple(len(p.containers) for p in pods)


@dataclass(frozen=True)
class NodeCounters:
    """One node's counters (a snapshot)."""

    requests: int
    """Requests received (including ones that never got an answer)."""
    by_status: dict[int, int]
    """Responses sent, by HTTP status code."""
    bytes_served: int
    """Response body bytes sent (compressed size when gzip)."""
    renders: int
    """How often the stats were refreshed (the body re-rendered)."""


@dataclass(eq=False)
class _Node:
    model: NodeModel
    address: str
    context: ssl.SSLContext | None = None
    """The serving context with the cluster-CA certificate (set by start())."""
    site: web.SockSite | None = None
    rogue: bool = False
    """Served with the untrusted certificate (fault ``tls``)."""
    layout: _Layout | None = None
    stats_ns: int | None = None
    raw: bytes | None = None
    gz: bytes | None = None
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    bytes_served: int = 0
    renders: int = 0


# --------------------------------------------------------------------------------------------
# The farm
# --------------------------------------------------------------------------------------------


class KubeletFarm:
    """The kubelets of every node of ``cluster``, served from this process's event loop.

    ``port`` is the port every node listens on (0: pick a free one, retrying on a conflict);
    ``tokens`` the bearer tokens accepted; client certificates signed by ``ca`` are accepted
    too. ``stats_interval_s`` is how long rendered stats stay fresh. Faults are read from
    ``node.faults`` per request; ``tls`` additionally needs a different listening site, which
    :meth:`set_faults` / :meth:`sync_tls` (or the first request that finds it) arranges.
    """

    def __init__(
        self,
        cluster: Cluster,
        ca: CertAuthority,
        port: int = 0,
        *,
        tokens: Iterable[str] = (),
        stats_interval_s: float = 10.0,
        nodes_per_cert: int = 64,
        gzip_level: int = 1,
        fast_render: bool = True,
        cert_dir: Path | None = None,
        backlog: int = 128,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {port}")
        if stats_interval_s < 0:
            raise ValueError(f"stats_interval_s must be >= 0, got {stats_interval_s}")
        if nodes_per_cert < 1:
            raise ValueError(f"nodes_per_cert must be >= 1, got {nodes_per_cert}")
        self.cluster = cluster
        self.ca = ca
        self.tokens = frozenset(tokens)
        self.stats_interval_s = stats_interval_s
        self.nodes_per_cert = nodes_per_cert
        self.gzip_level = gzip_level
        self.fast_render = fast_render
        self.cert_dir = (Path(cert_dir) if cert_dir is not None
                         else ca.directory / "kubelets").absolute()
        self.backlog = backlog
        self._requested_port = port
        self._port = port
        self._interval_ns = int(stats_interval_s * _NS)
        # the node set is fixed here; render() and samples() work before start()
        self._nodes = {node.name: _Node(node, node.address) for node in cluster.nodes}
        self._by_address = {n.address: n for n in self._nodes.values()}
        if len(self._by_address) != len(self._nodes):
            raise ValueError("two nodes share an address")
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._rogue_ca: CertAuthority | None = None
        self._rogue_contexts: dict[str, ssl.SSLContext] = {}
        self._rebind_lock = asyncio.Lock()
        self._started = False
        self._stopped = False
        self.pending_slow = 0
        """Requests of ``slow`` nodes currently held open."""

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        return self._port

    def url(self, node_name: str, path: str = METRICS_PATH) -> str:
        """``https://<node address>:<port><path>`` of ``node_name``'s kubelet."""
        node = self.cluster.node_by_name[node_name]
        return f"https://{node.address}:{self._port}{path}"

    @property
    def requests(self) -> int:
        return sum(n.requests for n in self._nodes.values())

    @property
    def bytes_served(self) -> int:
        return sum(n.bytes_served for n in self._nodes.values())

    @property
    def renders(self) -> int:
        return sum(n.renders for n in self._nodes.values())

    def stats(self) -> dict[str, NodeCounters]:
        """Counters per node name."""
        return {
            name: NodeCounters(n.requests, dict(n.by_status), n.bytes_served, n.renders)
            for name, n in self._nodes.items()
        }

    def stats_time_ns(self, node_name: str) -> int | None:
        """The node's current stats time (when its served body was rendered), or None."""
        return self._nodes[node_name].stats_ns

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Issue certificates, bind every node's socket and start serving."""
        if self._started:
            raise RuntimeError("KubeletFarm.start() called twice")
        self._started = True
        raise_nofile_limit()
        self._issue_certificates()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # (held slow requests are released before the runner waits for handlers)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        sockets: dict[str, socket.socket] = {}
        try:
            sockets = self._bind_all()
            for n in self._nodes.values():
                n.rogue = "tls" in n.model.faults
                await self._start_site(self._runner, n, sockets.pop(n.address))
        except BaseException:
            for sock in sockets.values():
                sock.close()
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop serving: release held ``slow`` requests, close every socket and connection."""
        if self._stopped:
            return
        self._stopped = True
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for n in self._nodes.values():
            n.site = None

    async def __aenter__(self) -> KubeletFarm:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ certificates

    def _issue_certificates(self) -> None:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        nodes = [n.model for n in self._nodes.values()]
        for g in range(0, len(nodes), self.nodes_per_cert):
            group = nodes[g : g + self.nodes_per_cert]
            pair = self.ca.issue(
                # an absolute path: issue() joins it to the CA's directory, which keeps it
                str(self.cert_dir / f"kubelet-{g // self.nodes_per_cert:05d}"),
                group[0].name if len(group) == 1 else f"kubelets-{g // self.nodes_per_cert}",
                dns_names=tuple(n.name for n in group),
                ip_addresses=tuple(n.address for n in group),
                server=True,
            )
            ctx = self._server_context(pair, client_ca=self.ca.cert_file)
            for node in group:
                self._nodes[node.name].context = ctx

    @staticmethod
    def _server_context(pair: KeyPair, client_ca: Path | None) -> ssl.SSLContext:
        # A bare context: ssl.create_default_context would also load the system CA store.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(pair.cert_file, pair.key_file)
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def _context_for(self, n: _Node) -> ssl.SSLContext:
        if not n.rogue:
            assert n.context is not None
            return n.context
        ctx = self._rogue_contexts.get(n.address)
        if ctx is None:
            if self._rogue_ca is None:
                self._rogue_ca = CertAuthority(self.cert_dir / "untrusted", "untrusted-kubelet")
            pair = self._rogue_ca.issue(f"rogue-{n.model.name}", n.model.name,
                                        dns_names=(n.model.name,), ip_addresses=(n.address,),
                                        server=True)
            ctx = self._server_context(pair, client_ca=None)
            self._rogue_contexts[n.address] = ctx
        return ctx

    # ------------------------------------------------------------------ sockets

    def _bind(self, address: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(self.backlog)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"cannot bind kubelet socket {address}:{port}: "
                                   f"{e.strerror}") from e
        return sock

    def _bind_all(self) -> dict[str, socket.socket]:
        """One listening socket per node address, all on one port."""
        attempts = 1 if self._requested_port else _BIND_ATTEMPTS
        for attempt in range(attempts):
            port = self._requested_port or free_port()
            sockets: dict[str, socket.socket] = {}
            try:
                for address in self._by_address:
                    sockets[address] = self._bind(address, port)
            except OSError as e:
                for s in sockets.values():
                    s.close()
                if e.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    continue
                raise
            self._port = port
            return sockets
        raise AssertionError("unreachable")  # pragma: no cover

    async def sync_tls(self) -> None:
        """Move nodes whose ``tls`` fault changed to a site with the matching certificate."""
        async with self._rebind_lock:
            runner = self._runner
            if runner is None or self._stopped:
                return
            for n in self._nodes.values():
                rogue = "tls" in n.model.faults
                if rogue == n.rogue or n.site is None:
                    continue
                await n.site.stop()
                n.site = None
                n.rogue = rogue
                await self._start_site(runner, n, self._bind(n.address, self._port))

    async def _start_site(self, runner: web.AppRunner, n: _Node, sock: socket.socket) -> None:
        """Serve node ``n`` on its bound socket ``sock`` (closed if serving fails)."""
        site = web.SockSite(runner, sock, ssl_context=self._context_for(n), backlog=self.backlog)
        try:
            await site.start()
        except BaseException:
            sock.close()
            raise
        n.site = site

    async def set_faults(self, node_name: str, faults: Iterable[str]) -> None:
        """``cluster.set_faults`` plus moving the node's socket when ``tls`` changed."""
        self.cluster.set_faults(node_name, faults)
        await self.sync_tls()

    # ------------------------------------------------------------------ rendering

    def samples(
        self, node_name: str, stats_ns: int | None = None
    ) -> tuple[NodeSample, list[PodSample], list[ContainerSample]]:
        """The samples the node reports at stats time ``stats_ns`` (default: its current one).

        ``render_resource_metrics(*samples)`` is byte-identical to the body served at that time.
        """
        if stats_ns is None:
            stats_ns = self._nodes[node_name].stats_ns
            if stats_ns is None:
                raise ValueError(f"{node_name} has not rendered stats yet")
        node = self.cluster.node_by_name[node_name]
        now_ms = stats_ns // _MS
        containers: list[ContainerSample] = []
        pods: list[PodSample] = []
        for p in node.pods:
            pod_ts = 0
            for c in p.containers:
                if c.zero:
                    ts = now_ms
                    containers.append(ContainerSample(
                        p.namespace, p.name, c.name, 0.0, 0.0, ts,
                        float(c.start_time_ns) / 1e9))
                else:
                    ts = now_ms - _offset_ms(p.namespace, p.name, c.name)
                    containers.append(ContainerSample(
                        p.namespace, p.name, c.name, c.cpu_seconds_at(ts * _MS),
                        float(c.memory_bytes), ts, float(c.start_time_ns) / 1e9))
                pod_ts = max(pod_ts, ts)
            if not p.containers:
                pod_ts = now_ms - _offset_ms(p.namespace, p.name)
            rate, since, mem_extra = _pod_overhead(p)
            t_ns = pod_ts * _MS
            cpu_ns = sum(max(0, t_ns - c.start_time_ns) * c.cpu_nanocores // _NS
                         for c in p.containers if not c.zero)
            cpu_ns += max(0, t_ns - since) * rate // _NS
            pods.append(PodSample(p.namespace, p.name, cpu_ns / _NS,
                                  float(p.memory_bytes + mem_extra), pod_ts))
        node_ts = now_ms - _offset_ms(node.name)
        sample = NodeSample(node.cpu_seconds_at(node_ts * _MS), float(node.memory_bytes),
                            node_ts)
        return sample, pods, containers

    def render(self, node_name: str, stats_ns: int) -> bytes:
        """The body ``node_name`` serves for stats time ``stats_ns`` (fast path or reference)."""
        n = self._nodes[node_name]
        if not self.fast_render:
            return render_resource_metrics(*self.samples(node_name, stats_ns))
        return self._render_fast(n, stats_ns)

    def _render_fast(self, n: _Node, stats_ns: int) -> bytes:
        node = n.model
        layout = n.layout
        if layout is None or layout.key != _layout_key(node):
            layout = n.layout = _Layout(node)
        now_ms = stats_ns // _MS
        fmt = go_float
        cpu: list[str] = [_H_CCPU]
        mem: list[str] = [_H_CMEM]
        start: list[str] = [_H_CSTART]
        swap: list[str] = [_H_CSWAP]
        for e in layout.containers:
            c = e.c
            labels = f'{{container="{e.container}",namespace="{e.namespace}",pod="{e.pod}"}} '
            if c.zero:
                ts = f" {now_ms}\n"
                cpu_s = mem_s = "0"
            else:
                t = now_ms - e.off
                ts = f" {t}\n"
                used = t * _MS - c.start_time_ns
                if used > 0:
                    v = used * c.cpu_nanocores // _NS / _NS
                    if 1e-4 <= v < 1e6:  # go_float, inlined
                        cpu_s = repr(v)
                        if cpu_s.endswith(".0"):
                            cpu_s = cpu_s[:-2]
                    else:
                        cpu_s = fmt(v)
                else:
                    cpu_s = "0"
                if c.memory_bytes != e.mem:
                    e.mem = c.memory_bytes
                    e.mem_s = fmt(float(e.mem))
                mem_s = e.mem_s
            cpu.append(f"container_cpu_usage_seconds_total{labels}{cpu_s}{ts}")
            mem.append(f"container_memory_working_set_bytes{labels}{mem_s}{ts}")
            if c.start_time_ns != e.start_ns:
                e.start_ns = c.start_time_ns
                st = float(e.start_ns) / 1e9
                e.start_s = fmt(st) if st > 0 else None
            if e.start_s is not None:
                start.append(f"container_start_time_seconds{labels}{e.start_s}\n")
            swap.append(f"container_swap_usage_bytes{labels}0{ts}")

        pcpu: list[str] = [_H_PCPU]
        pmem: list[str] = [_H_PMEM]
        pswap: list[str] = [_H_PSWAP]
        node_rate = node.system_cpu_nanocores  # NodeModel.cpu_nanocores, summed on the way
        node_mem = node.system_memory_bytes  # NodeModel.memory_bytes
        for pe in layout.pods:
            pod_ts = 0
            for e in pe.entries:
                t = now_ms if e.c.zero else now_ms - e.off
                if t > pod_ts:
                    pod_ts = t
            if not pe.entries:
                pod_ts = now_ms - pe.off
            t_ns = pod_ts * _MS
            cpu_ns = 0
            memory = 0
            for e in pe.entries:
                c = e.c
                if not c.zero:
                    memory += c.memory_bytes
                    node_rate += c.cpu_nanocores
                    used = t_ns - c.start_time_ns
                    if used > 0:
                        cpu_ns += used * c.cpu_nanocores // _NS
            node_mem += memory
            used = t_ns - pe.since
            if used > 0:
                cpu_ns += used * pe.rate // _NS
            memory += pe.mem_extra
            if memory != pe.mem:
                pe.mem = memory
                pe.mem_s = fmt(float(memory))
            labels = pe.labels
            ts = f" {pod_ts}\n"
            pcpu.append(f"pod_cpu_usage_seconds_total{labels}{fmt(cpu_ns / _NS)}{ts}")
            pmem.append(f"pod_memory_working_set_bytes{labels}{pe.mem_s}{ts}")
            pswap.append(f"pod_swap_usage_bytes{labels}0{ts}")

        node_ts = now_ms - _offset_ms(node.name)
        # NodeModel.cpu_seconds_at with the rate summed above
        node_cpu = max(0, node_ts * _MS - node.boot_ns) * node_rate // _NS / _NS
        ts = f" {node_ts}\n"
        parts: list[str] = []
        if layout.containers:
            parts += cpu
            parts += mem
            if len(start) > 1:
                parts += start
            parts += swap
        parts += (
            _H_NCPU, f"node_cpu_usage_seconds_total {fmt(node_cpu)}{ts}",
            _H_NMEM, f"node_memory_working_set_bytes {fmt(float(node_mem))}{ts}",
            _H_NSWAP, f"node_swap_usage_bytes 0{ts}",
        )
        if layout.pods:
            parts += pcpu
            parts += pmem
            parts += pswap
        parts.append(_TAIL)
        return "".join(parts).encode()

    def _payload(self, n: _Node, gzip: bool) -> bytes:
        """The node's current body (refreshing stale stats), gzip-compressed if asked."""
        now = self.cluster.clock()
        if n.stats_ns is None or now - n.stats_ns >= self._interval_ns:
            body = self.render(n.model.name, now)
            n.stats_ns = now
            n.renders += 1
            if gzip:  # keep only what the client asked for: the cache then costs ~1/7
                n.raw, n.gz = None, gzip_body(body, self.gzip_level)
                return n.gz
            n.raw, n.gz = body, None
            return body
        if gzip:
            if n.gz is None:
                assert n.raw is not None
                n.gz = gzip_body(n.raw, self.gzip_level)
            return n.gz
        if n.raw is None:
            assert n.gz is not None
            n.raw = zlib.decompress(n.gz, 31)
        return n.raw

    # ------------------------------------------------------------------ serving

    def _authenticated(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization")
        if auth is not None and self.tokens:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip() in self.tokens:
                return True
        # CERT_OPTIONAL: a presented certificate was verified against the cluster CA during
        # the handshake (an unverifiable one fails it); no certificate gives an empty dict.
        return bool(request.get_extra_info("peercert"))

    @staticmethod
    def _trusted_connection(request: web.Request, n: _Node) -> bool:
        """Did this connection's handshake use the node's cluster-CA certificate?"""
        ssl_object = request.get_extra_info("ssl_object")
        return ssl_object is not None and ssl_object.context is n.context

    @staticmethod
    def _text(n: _Node, status: int, text: str) -> web.Response:
        body = text.encode()
        n.by_status[status] = n.by_status.get(status, 0) + 1
        n.bytes_served += len(body)
        return web.Response(status=status, body=body,
                            headers={"Content-Type": "text/plain; charset=utf-8",
                                     "X-Content-Type-Options": "nosniff"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.get_extra_info("sockname")
        n = self._by_address.get(sockname[0]) if sockname else None
        if n is None:  # pragma: no cover  (every socket belongs to a node)
            raise web.HTTPNotFound()
        n.requests += 1
        faults = n.model.faults
        if faults:
            if "tls" in faults and self._trusted_connection(request, n):
                # The fault was set after this connection's handshake: drop the connection
                # (as a failing handshake would) and move the node to the untrusted site.
                # (Clients that skip verification get through the untrusted site and are
                # served: a kubelet with a self-signed certificate works with insecure TLS.)
                transport = request.transport
                if transport is not None:
                    transport.abort()
                await self.sync_tls()
                return web.Response(status=503)  # never reaches the client
            if "slow" in faults:
                self.pending_slow += 1
                try:
                    await self._closing.wait()
                finally:
                    self.pending_slow -= 1
                return self._text(n, 503, "shutting down\n")
            if "unauthorized" in faults:
                return self._text(n, 401, "Unauthorized\n")
        if not self._authenticated(request):
            return self._text(n, 401, "Unauthorized\n")
        if request.path != METRICS_PATH:
            return self._text(n, 404, "404 page not found\n")
        if request.method not in ("GET", "HEAD"):
            return self._text(n, 405, "Method Not Allowed\n")
        if faults:
            if "http500" in faults:
                return self._text(n, 500, "Internal Server Error\n")
            if "garbage" in faults:
                n.by_status[200] = n.by_status.get(200, 0) + 1
                n.bytes_served += len(GARBAGE_BODY)
                return web.Response(body=GARBAGE_BODY,
                                    headers={"Content-Type": "text/html; charset=utf-8"})
        gzip = _wants_gzip(request.headers.get("Accept-Encoding", ""))
        body = self._payload(n, gzip)
        headers = {"Content-Type": CONTENT_TYPE}
        if gzip:
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        n.by_status[200] = n.by_status.get(200, 0) + 1
        n.bytes_served += len(body)
        return web.Response(body=body, headers=headers)

