"""The kubelet client and the tick loop (SPEC §2).

``Scraper.scrape`` fetches ``/metrics/resource`` from every node concurrently over one aiohttp
session (one kept-alive connection per kubelet, reused across ticks), decodes each body inline
with the node's own :class:`~fastmetrics.decode.Decoder` (kept across ticks, so label blocks are
interned once) and returns a :class:`ScrapeResult`: the batches of the nodes that answered, in
node-list order, and per-node outcome columns for the server's own metrics. A failing node
(no address, DNS, connect, TLS, timeout, HTTP status, body too large, malformed body) is logged
and counted and contributes nothing; it never fails the tick.

``Manager`` is metrics-server's scrape loop: one tick at once, then one per resolution with Go
ticker semantics; a tick scrapes with a deadline of one resolution, stores whatever came back
(even nothing), and records its duration. ``Manager.timely`` is the ``metric-collection-timely``
liveness check. A tick runs with automatic garbage collection paused and freezes what it leaves
alive (see ``Manager._freeze_long_lived``). ``CollectorThread`` runs a Manager on an event loop
of its own, in a thread, so that the server's loop only serves requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import inspect
import logging
import os
import platform
import random
import resource
import ssl
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
from aiohttp.abc import AbstractResolver
from yarl import URL

from . import gcpause
from ._version import __version__
from .cluster import NodeInfo
from .decode import DecodedBatch, DecodeError, Decoder, DecoderPy
from .errors import ScrapeError
from .log import V, verbose
from .monitoring import ServerMetrics
from .store import Snapshot, Store

__all__ = [
    "DEFAULT_ADDRESS_TYPES",
    "DEFAULT_METRICS_PATH",
    "CollectorThread",
    "KubeletClientConfig",
    "Manager",
    "ScrapeResult",
    "Scraper",
    "file_token_provider",
    "raise_nofile_limit",
    "resolve_url",
    "user_agent",
]

log = logging.getLogger("fastmetrics.scrape")

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

DEFAULT_ADDRESS_TYPES: tuple[str, ...] = (
    "Hostname", "InternalDNS", "InternalIP", "ExternalDNS", "ExternalIP",
)
"""metrics-server's binary default for ``--kubelet-preferred-address-types``."""

DEFAULT_METRICS_PATH = "/metrics/resource"

GC_REFREEZE_TICKS = 40
"""Ticks between two re-freezes of long-lived objects (10 min at the stock 15 s)."""

MAX_JITTER_MS = 4000
JITTER_PER_NODE_MS = 8

# Go's url.URL.EscapedPath keeps these unescaped in a path (besides letters, digits and -_.~)
_PATH_SAFE = "/$&+,:;=@"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KubeletClientConfig:
    """How to reach kubelets (SPEC §2.3, §2.4); the ``--kubelet-*`` flags, validated elsewhere."""

    preferred_address_types: tuple[str, ...] = DEFAULT_ADDRESS_TYPES
    """``--kubelet-preferred-address-types``: the first address of the first type that the
    node has is used (case-sensitive type names)."""
    port: int = 10250
    """``--kubelet-port``."""
    use_node_status_port: bool = False
    """``--kubelet-use-node-status-port``: use the node's ``kubeletEndpoint`` port when non-zero."""
    insecure_tls: bool = False
    """``--kubelet-insecure-tls``: do not verify the kubelet's serving certificate."""
    ca_file: str | None = None
    """``--kubelet-certificate-authority``: verify against this CA instead of the apiserver's."""
    apiserver_ca_file: str | None = None
    """The apiserver connection's CA (in-cluster: the service account's ``ca.crt``): the default
    trust anchor. With neither CA file the system's trust store is used."""
    client_cert_file: str | None = None
    """``--kubelet-client-certificate``: presented to kubelets (the token is still sent)."""
    client_key_file: str | None = None
    """``--kubelet-client-key``."""
    completely_insecure: bool = False
    """``--deprecated-kubelet-completely-insecure``: plain HTTP, no credentials at all."""
    timeout_ns: int = 10 * NS_PER_S
    """``--kubelet-request-timeout``: per node, after the jitter sleep."""
    max_body_bytes: int = 64 * 1024 * 1024
    """A body (decompressed) larger than this fails the node's scrape."""
    token_provider: Callable[[], str | None] | None = field(default=None, compare=False)
    """Returns the bearer token to send (None or "" for none); called once per tick, so a
    rotated token is picked up. Not called when completely insecure."""
    proxy_from_environment: bool = True
    """Honour ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` as Go does (loopback never proxied)."""

    def __post_init__(self) -> None:
        if self.timeout_ns <= 0:
            raise ValueError("timeout_ns must be positive")
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in [1, 65535], got {self.port}")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")

    @property
    def scheme(self) -> str:
        return "http" if self.completely_insecure else "https"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS client context towards kubelets (None when completely insecure)."""
        if self.completely_insecure:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.insecure_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ca = self.ca_file or self.apiserver_ca_file
            if ca:
                ctx.load_verify_locations(cafile=ca)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self.client_cert_file and self.client_key_file:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        # aiohttp speaks HTTP/1.1 only: never let a kubelet pick h2
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def file_token_provider(path: str | os.PathLike[str]) -> Callable[[], str | None]:
    """A ``token_provider`` reading a token file (e.g. the service account's), re-read when the
    file changes (kubelet-projected tokens rotate). A missing file gives no token."""
    p = Path(path)
    cache: list[object] = [None, None]  # (mtime_ns, size), token

    def provider() -> str | None:
        try:
            st = p.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        if cache[0] != key:
            try:
                cache[1] = p.read_text().strip() or None
            except OSError:
                return None
            cache[0] = key
        token = cache[1]
        return token if isinstance(token, str) else None

    return provider


def user_agent() -> str:
    """client-go's default User-Agent shape.

    ``fastmetrics/<version> (<os>/<arch>) kubernetes/unknown``.
    """
    arch = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(arch, arch)
    return f"fastmetrics/{__version__} ({platform.system().lower()}/{arch}) kubernetes/unknown"


def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (as the Go runtime does at start).

    Thousands of kept-alive kubelet connections need thousands of descriptors.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------


def node_address(node: NodeInfo, types: Sequence[str]) -> str:
    """The first address of the first preferred type the node has (SPEC §2.3)."""
    for address_type in types:
        for t, address in node.addresses:
            if t == address_type:
                return address
    # Go's %v of a []NodeAddressType: "[Hostname InternalIP]"
    raise ScrapeError(f"no address matched types [{' '.join(types)}]", node=node.name)


def resolve_url(node: NodeInfo, cfg: KubeletClientConfig) -> str:
    """The URL of the node's resource metrics (SPEC §2.3): scheme, address, port and path.

    Raises :class:`~fastmetrics.errors.ScrapeError` when no address matches the preferred types.
    """
    address = node_address(node, cfg.preferred_address_types)
    port = cfg.port
    if cfg.use_node_status_port and node.kubelet_port:
        port = node.kubelet_port
    host = f"[{address}]" if ":" in address else address  # net.JoinHostPort
    path = node.metrics_path or DEFAULT_METRICS_PATH
    # url.URL{Path: p}.String(): escaped (a "?" becomes %3F, no query possible), and a
    # relative path gets its "/"
    path = urllib.parse.quote(path, safe=_PATH_SAFE)
    if not path.startswith("/"):
        path = "/" + path
    return f"{cfg.scheme}://{host}:{port}{path}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# One tick's outcome
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class ScrapeResult:
    """What one ``Scraper.scrape`` produced.

    ``batches`` holds ``(node name, batch)`` for every node that answered with a valid body, in
    the order of the node list; the columns are per node scraped (same order, duplicates
    removed), successful or not.
    """

    batches: list[tuple[str, DecodedBatch]]
    nodes: list[str]
    """Every node scraped this tick."""
    success: npt.NDArray[np.bool_]
    """Per node: the request succeeded and the body decoded (``request_total{success}``)."""
    duration_s: npt.NDArray[np.float64]
    """Per node: request plus decode, seconds (the jitter sleep excluded)."""
    end_time_s: npt.NDArray[np.float64]
    """Per node: Unix seconds (whole) when its scrape ended."""
    errors: dict[str, str]
    """Failed node -> reason."""
    timeouts: int = 0
    """How many of the failures were timeouts."""
    max_jitter_ms: int = 0
    """The longest jitter sleep drawn this tick."""

    @property
    def node_points(self) -> int:
        """Batches that carry a node point (metrics-server's ``len(res.Nodes)``)."""
        return sum(1 for _, b in self.batches if b.node is not None)

    @classmethod
    def empty(cls) -> ScrapeResult:
        return cls([], [], np.zeros(0, np.bool_), np.zeros(0, np.float64),
                   np.zeros(0, np.float64), {})


class _BodyTooLarge(Exception):
    pass


# --------------------------------------------------------------------------------------------
# The scraper
# --------------------------------------------------------------------------------------------


class Scraper:
    """Scrapes kubelets' ``/metrics/resource``: one aiohttp session, one decoder per node.

    ``resolution_ns`` sizes the keep-alive (idle connections live for ``max(90 s,
    2 x resolution)``, so each node's connection is reused every tick). ``resolver`` replaces
    aiohttp's DNS resolver (tests); ``rng`` draws the jitter; ``jitter=False`` skips it
    (benchmarks); ``wall_clock_ns``/``monotonic_ns`` are injectable clocks. Use as an async
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        config: KubeletClientConfig,
        *,
        resolution_ns: int = 60 * NS_PER_S,
        resolver: AbstractResolver | None = None,
        rng: random.Random | None = None,
        jitter: bool = True,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        raise_nofile_limit()
        self.config = config
        self._ssl = config.ssl_context()
        self._timeout_s = config.timeout_ns / NS_PER_S
        self.keepalive_timeout_s = max(90.0, 2 * resolution_ns / NS_PER_S)
        self._resolver = resolver
        self._rng = rng if rng is not None else random.Random()
        self._jitter = jitter
        self._wall = wall_clock_ns
        self._mono = monotonic_ns
        self._session: aiohttp.ClientSession | None = None
        self._decoders: dict[str, DecoderPy] = {}
        self._urls: dict[str, tuple[NodeInfo, URL]] = {}
        self._closed = False
        self._quiet_tls_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("Scraper is closed")
        if self._quiet_tls_loop is None:
            self._quiet_tls_loop = _quiet_cut_tls_connections(asyncio.get_running_loop())
        connector = aiohttp.TCPConnector(
            limit=0,  # no global cap: one connection per node, thousands of nodes
            limit_per_host=1,
            keepalive_timeout=self.keepalive_timeout_s,
            ttl_dns_cache=60,
            ssl=self._ssl if self._ssl is not None else False,
            resolver=self._resolver,
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": user_agent(), "Accept-Encoding": "gzip"},
            skip_auto_headers=("Accept",),
            auto_decompress=False,  # gzip is undone here, with a size cap
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None,
                                          sock_connect=None),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # proxies are resolved per tick without thread hops (_proxies)
            raise_for_status=False,
        )

    async def close(self) -> None:
        """Close every kubelet connection. The scraper cannot be used afterwards."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        loop, self._quiet_tls_loop = self._quiet_tls_loop, None
        if loop is not None:
            _restore_exception_handler(loop)

    async def __aenter__(self) -> Scraper:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def decoders(self) -> dict[str, DecoderPy]:
        """Node name -> its decoder (nodes gone from the node list are dropped)."""
        return self._decoders

    # ------------------------------------------------------------------ one tick

    async def scrape(
        self,
        nodes: Sequence[NodeInfo],
        default_timestamp_ns_fn: Callable[[], int] = time.time_ns,
        *,
        deadline: float | None = None,
    ) -> ScrapeResult:
        """Scrape every node concurrently and return what came back (never raises for a node).

        ``default_timestamp_ns_fn`` is the wall clock read just before each request (truncated
        to ms, it stamps samples without a timestamp). ``deadline`` (event-loop time) bounds the
        whole scrape, like the tick context in metrics-server: a node's timeout is the request
        timeout or what is left until the deadline, whichever is less.
        """
        if self._session is None:
            self._session = self._open()
        loop = asyncio.get_running_loop()
        # the node list, first occurrence of each name wins
        seen: set[str] = set()
        todo: list[NodeInfo] = []
        for node in nodes:
            if node.name in seen:
                log.warning("Node listed twice, scraping it once", extra={"node": node.name})
                continue
            seen.add(node.name)
            todo.append(node)
        # bounded memory: forget decoders and URLs of nodes that are gone
        if len(self._decoders) > len(todo) or any(n not in seen for n in self._decoders):
            self._decoders = {k: v for k, v in self._decoders.items() if k in seen}
            self._urls = {k: v for k, v in self._urls.items() if k in seen}
        n = len(todo)
        if n == 0:
            return ScrapeResult.empty()

        headers = self._tick_headers()
        proxies = self._proxies()
        delay_ms = min(JITTER_PER_NODE_MS * n, MAX_JITTER_MS) if self._jitter else 0
        rand = self._rng.randrange
        jitters = [rand(delay_ms) if delay_ms > 0 else 0 for _ in range(n)]

        batches: list[DecodedBatch | None] = [None] * n
        duration = np.zeros(n, np.float64)
        end_s = np.zeros(n, np.float64)
        errors: dict[str, str] = {}
        timeouts = [0]

        async def one(i: int, node: NodeInfo) -> None:
            t0 = self._mono()
            try:
                batches[i] = await self._scrape_node(node, headers, proxies, deadline,
                                                     default_timestamp_ns_fn)
            except TimeoutError:
                timeouts[0] += 1
                if deadline is not None and loop.time() >= deadline - 0.001:
                    errors[node.name] = "timeout: tick deadline exceeded"
                else:
                    errors[node.name] = f"timeout after {self._timeout_s:g}s"
                self._log_failure(node, None, timed_out=True)
            except DecodeError as e:
                errors[node.name] = f"{e.reason} (byte {e.offset}, line {e.lineno})"
                self._log_failure(node, e.with_node(node.name))
            except Exception as e:  # every failure of a node is data, never the tick's end
                errors[node.name] = _reason(e)
                self._log_failure(node, e)
            t1 = self._mono()
            duration[i] = (t1 - t0) / NS_PER_S
            end_s[i] = self._wall() // NS_PER_S

        # Each node's request starts after its jitter sleep. One dispatcher walks the nodes in
        # jitter order and starts each when it is due, so a tick's start costs the loop O(1)
        # instead of 5,000 tasks and timers at once (a ~0.25 s stall of every API request at
        # 5,000 nodes), and the work is spread over the jitter window as intended.
        # A finished node's task is let go at once (not kept in a list until the tick ends):
        # at 5,000 nodes the finished tasks, their coroutines and contexts were ~30,000
        # objects each young-generation collection walked again.
        pending: set[asyncio.Task[None]] = set()
        all_done: asyncio.Future[None] = loop.create_future()
        left = [n]

        def finished(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            left[0] -= 1
            if all_done.done():
                return
            if not task.cancelled() and task.exception() is not None:
                all_done.set_exception(task.exception())  # type: ignore[arg-type]
            elif left[0] == 0:
                all_done.set_result(None)

        start = loop.time()
        try:
            for i in sorted(range(n), key=jitters.__getitem__):
                due = start + jitters[i] / 1000
                if deadline is not None:
                    due = min(due, deadline)
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = loop.create_task(one(i, todo[i]))
                pending.add(task)
                task.add_done_callback(finished)
            await all_done
        except BaseException:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        ok = np.fromiter((b is not None for b in batches), dtype=np.bool_, count=n)
        out = [(todo[i].name, b) for i, b in enumerate(batches) if b is not None]
        return ScrapeResult(out, [node.name for node in todo], ok, duration, end_s, errors,
                            timeouts[0], max(jitters))

    def _tick_headers(self) -> dict[str, str] | None:
        cfg = self.config
        if cfg.completely_insecure or cfg.token_provider is None:
            return None
        try:
            token = cfg.token_provider()
        except Exception as e:
            log.warning("Failed to read the bearer token", extra={"err": _reason(e)})
            return None
        return {"Authorization": f"Bearer {token}"} if token else None

    def _proxies(self) -> dict[str, str]:
        if not self.config.proxy_from_environment:
            return {}
        return urllib.request.getproxies_environment()

    def _url(self, node: NodeInfo) -> URL:
        cached = self._urls.get(node.name)
        if cached is not None and cached[0] is node:  # informers replace changed objects
            return cached[1]
        url = URL(resolve_url(node, self.config), encoded=True)
        self._urls[node.name] = (node, url)
        return url

    async def _scrape_node(
        self,
        node: NodeInfo,
        headers: dict[str, str] | None,
        proxies: dict[str, str],
        deadline: float | None,
        default_timestamp_ns_fn: Callable[[], int],
    ) -> DecodedBatch:
        session = self._session
        assert session is not None
        loop = asyncio.get_running_loop()
        when = loop.time() + self._timeout_s
        if deadline is not None and deadline < when:
            when = deadline
        url = self._url(node)
        proxy = _proxy_for(url, proxies) if proxies else None
        decoder = self._decoders.get(node.name)
        if decoder is None:
            decoder = self._decoders[node.name] = Decoder()
        limit = self.config.max_body_bytes
        async with asyncio.timeout_at(when):
            default_ts = default_timestamp_ns_fn() // NS_PER_MS * NS_PER_MS
            # redirects are followed as Go's http.Client does (at most 10; Authorization is
            # dropped towards another origin)
            async with session.get(url, headers=headers, proxy=proxy) as resp:
                if resp.status != 200:
                    status = f"{resp.status} {resp.reason}" if resp.reason else str(resp.status)
                    raise ScrapeError(f'request failed, status: "{status}"', node=node.name,
                                      url=str(url), status=resp.status)
                declared = resp.content_length
                if declared is not None and declared > limit:
                    raise _BodyTooLarge(f"body too large: {declared} bytes (limit {limit})")
                raw = await _read_capped(resp.content, limit)
                encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        body = _decompress(raw, encoding, limit)
        return decoder.decode(body, default_ts)

    def _log_failure(self, node: NodeInfo, err: BaseException | None, *,
                     timed_out: bool = False) -> None:
        level = logging.WARNING if node.ready else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        if timed_out:
            log.log(level, "Failed to scrape node, timeout to access kubelet",
                    extra={"node": node.name, "timeout_s": self._timeout_s})
        else:
            log.log(level, "Failed to scrape node",
                    extra={"node": node.name, "err": _reason(err) if err else ""})


_TLS_FATAL = "Fatal error on SSL protocol"


class _QuietTLSHandler:
    """The loop's exception handler while a scraper is open: uvloop reports a TLS connection
    that dies mid-record (a kubelet request cut by its timeout, a kubelet closing under load)
    as "Fatal error on SSL protocol" with a traceback, once per connection -- an ``SSLError``,
    an ``OSError``, or a ``RuntimeError`` from writing to the transport that was just closed.
    The connection is gone and the scrape already counted and logged that node's failure, so
    this becomes one ``-v=4`` line. Anything else goes to the handler that was installed before
    (or the loop's default)."""

    def __init__(self, previous: Callable[..., object] | None) -> None:
        self.previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if context.get("message") == _TLS_FATAL and isinstance(
                exc, ssl.SSLError | OSError | RuntimeError):
            if log.isEnabledFor(logging.DEBUG):
                transport = context.get("transport")
                peer = None
                if isinstance(transport, asyncio.BaseTransport):
                    with contextlib.suppress(Exception):
                        peer = transport.get_extra_info("peername")
                log.debug("TLS connection closed with an error",
                          extra={"peer": str(peer), "err": _reason(exc)})
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


def _quiet_cut_tls_connections(
        loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop | None:
    """Install :class:`_QuietTLSHandler` on ``loop``; returns the loop when it was installed
    here (None when another scraper's is already there: that one removes it)."""
    current = loop.get_exception_handler()
    if isinstance(current, _QuietTLSHandler):
        return None
    loop.set_exception_handler(_QuietTLSHandler(current))
    return loop


def _restore_exception_handler(loop: asyncio.AbstractEventLoop) -> None:
    current = loop.get_exception_handler()
    if isinstance(current, _QuietTLSHandler):
        loop.set_exception_handler(current.previous)


def _proxy_for(url: URL, proxies: dict[str, str]) -> str | None:
    proxy = proxies.get(url.scheme or "")
    if not proxy:
        return None
    host = url.host or ""
    if _is_loopback(host):
        return None
    if _no_proxy(host, proxies.get("no", "")):
        return None
    return proxy


def _no_proxy(host: str, no_proxy: str) -> bool:
    """Go's ``NO_PROXY`` matching: ``*``; IPs and CIDRs; ``x`` matches x and its subdomains,
    ``.x`` its subdomains only; a ``:port`` on an entry is ignored."""
    host = host.strip("[]").lower()
    try:
        addr = ip_address(host)
    except ValueError:
        addr = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            with contextlib.suppress(ValueError):
                if addr is not None and addr in ip_network(entry, strict=False):
                    return True
            continue
        if entry.startswith("["):  # [v6]:port
            entry = entry[1:].split("]", 1)[0]
        elif entry.count(":") == 1:  # host:port
            entry = entry.split(":", 1)[0]
        if addr is not None:
            with contextlib.suppress(ValueError):
                if addr == ip_address(entry):
                    return True
            continue
        if entry.startswith("."):
            if host.endswith(entry):
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    chunks = []
    total = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise _BodyTooLarge(f"body too large: more than {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decompress(raw: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise ScrapeError(f"unsupported Content-Encoding {encoding!r}")
    d = zlib.decompressobj(wbits=31)
    try:
        body = d.decompress(raw, limit + 1)
    except zlib.error as e:
        raise ScrapeError(f"gzip body malformed: {e}") from None
    if len(body) > limit:
        raise _BodyTooLarge(f"body too large: more than {limit} bytes after gzip")
    if not d.eof:
        raise ScrapeError("gzip body truncated")
    return body


def _reason(e: BaseException) -> str:
    """A one-line reason for logs and ``ScrapeResult.errors``."""
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return f"tls: {e.certificate_error}"
    if isinstance(e, ssl.SSLError | aiohttp.ClientSSLError):
        return f"tls: {e}"
    lines = str(e).splitlines()
    text = lines[0] if lines else ""
    if isinstance(e, ScrapeError | _BodyTooLarge):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --------------------------------------------------------------------------------------------
# The tick loop
# --------------------------------------------------------------------------------------------


class Manager:
    """metrics-server's scrape loop: scrape every node, store, observe; once per resolution.

    ``nodes_fn`` returns the nodes to scrape now (the informer's cache through the node
    selector), or an awaitable of them; an exception there is logged and the tick goes on with
    no nodes. ``post`` runs the updates of ``metrics`` (default: at once); a tick loop running
    on another thread than ``metrics``' readers passes one that hands them to their loop.
    """

    def __init__(
        self,
        scraper: Scraper,
        store: Store,
        nodes_fn: Callable[[], Sequence[NodeInfo] | Awaitable[Sequence[NodeInfo]]],
        resolution_ns: int,
        metrics: ServerMetrics | None = None,
        *,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        post: Callable[[Callable[[], object]], object] | None = None,
    ) -> None:
        if resolution_ns <= 0:
            raise ValueError("resolution_ns must be positive")
        self.scraper = scraper
        self.store = store
        self.nodes_fn = nodes_fn
        self.resolution_ns = int(resolution_ns)
        self.metrics = metrics
        self._post = post
        self._wall = wall_clock_ns
        self._mono = monotonic_ns
        self.last_tick_start_ns: int | None = None
        """Monotonic ns when the most recent tick started (None before the first)."""
        self.last_tick_start_wall_ns: int | None = None
        """Wall-clock ns when the most recent tick started."""
        self.last_result: ScrapeResult | None = None
        self.last_tick_duration_s: float | None = None
        self.ticks = 0
        self.gc_refreeze_ticks = GC_REFREEZE_TICKS
        """Ticks between two re-freezes of the long-lived objects (0: never freeze)."""
        self._frozen_tick: int | None = None
        self._frozen_nodes = 0
        self._stop = asyncio.Event()
        self._tick_task: asyncio.Task[Snapshot] | None = None

    @property
    def last_tick_start(self) -> int | None:
        """Monotonic ns when the most recent tick started (metrics-server's ``tickLastStart``)."""
        return self.last_tick_start_ns

    def timely(self, now_ns: int | None = None) -> bool:
        """The ``metric-collection-timely`` check: False iff a tick has started and more than
        1.5 x resolution has passed since the most recent one started (``now_ns`` monotonic)."""
        start = self.last_tick_start_ns
        if start is None:
            return True
        now = self._mono() if now_ns is None else now_ns
        return (now - start) * 2 <= 3 * self.resolution_ns

    async def run(self) -> None:
        """Tick now, then every resolution until :meth:`stop` (Go ``time.Ticker`` semantics: a
        tick that overruns makes the missed ticks collapse into one that fires right after)."""
        loop = asyncio.get_running_loop()
        period = self.resolution_ns / NS_PER_S
        t0 = loop.time()
        k = 0  # the grid point (t0 + k * period) the last tick was fired for
        while not self._stop.is_set():
            await self._run_tick()
            if self._stop.is_set():
                break
            now = loop.time()
            missed = int((now - t0) // period)
            if missed > k:
                k = missed  # the ticker's one buffered tick: fire at once
                continue
            k += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), t0 + k * period - loop.time())

    async def _run_tick(self) -> None:
        task = asyncio.ensure_future(self.tick())
        self._tick_task = task
        try:
            await task
        except asyncio.CancelledError:
            if not (self._stop.is_set() and task.cancelled()):
                raise
        finally:
            self._tick_task = None

    def stop(self) -> None:
        """Stop the loop; a tick in progress is cancelled."""
        self._stop.set()
        task = self._tick_task
        if task is not None and not task.done():
            task.cancel()

    async def tick(self) -> Snapshot:
        """One tick: scrape with a deadline of one resolution, store, observe, log."""
        loop = asyncio.get_running_loop()
        start = self._mono()
        self.last_tick_start_ns = start
        self.last_tick_start_wall_ns = self._wall()
        deadline = loop.time() + self.resolution_ns / NS_PER_S
        try:
            listed = self.nodes_fn()
            nodes = await listed if inspect.isawaitable(listed) else listed
        except Exception as e:
            log.error("Failed to list nodes", extra={"err": _reason(e)})
            nodes = []
        # Automatic GC paused for the tick: a scrape leaves ~15 objects per node alive until
        # the next tick (each connection's response parser and reader, the batches), which
        # young collections walked again and again (gen-1 pauses of 9-16 ms every ~0.5 s at
        # 5,000 nodes, in every thread); at its end they are frozen (_freeze_long_lived).
        with gcpause.paused() if self.gc_refreeze_ticks else contextlib.nullcontext():
            snapshot, result = await self._collect(nodes, deadline)
        duration_s = (self._mono() - start) / NS_PER_S
        m = self.metrics
        if m is not None:
            def observe(m: ServerMetrics = m) -> None:
                m.observe_requests(result.nodes, result.duration_s, result.success,
                                   result.end_time_s)
                m.set_storage_points(snapshot.nodes_with_baseline,
                                     snapshot.containers_with_baseline)
                m.observe_tick(duration_s)
            if self._post is None:
                observe()
            else:
                self._post(observe)
        self.last_result = result
        self.last_tick_duration_s = duration_s
        self._log_tick(result, snapshot, duration_s)
        return snapshot

    async def _collect(self, nodes: Sequence[NodeInfo], deadline: float
                       ) -> tuple[Snapshot, ScrapeResult]:
        result = await self.scraper.scrape(nodes, self._wall, deadline=deadline)
        # off the event loop: the store's kernels release the GIL, so requests keep being
        # served while a large tick is stored (42-114 ms at 5,000 x 110 on the loop before)
        snapshot = await asyncio.to_thread(self.store.store, result.batches)
        self.ticks += 1
        self._freeze_long_lived(len(result.batches))
        return snapshot, result

    def _freeze_long_lived(self, scraped: int) -> None:
        """Keep the cyclic GC off the per-node state that lives for the process: kubelet
        connections (uvloop keeps each peer certificate as a dict), decoders, key tables.

        At 5,000 nodes that is ~280,000 tracked objects, and a full collection over them took
        ~210 ms on the loop every few ticks, right when a tick ended (every API request then
        waited). After the first tick that scraped nodes (the state now exists), and again
        every ``gc_refreeze_ticks`` ticks or when the node count grew by a quarter, garbage is
        collected once and everything alive is moved to the permanent generation
        (``gc.freeze()``); the periodic re-freeze also collects cycles left by nodes that went
        away since. Between two, what each tick leaves alive is frozen at its end (an O(1)
        move), so no automatic collection walks it again: reference counting frees it when the
        next tick replaces it, and reference cycles among it (few: ~300 per 40 ticks at 5,000
        nodes with an API load) wait for the next re-freeze.
        """
        if not self.gc_refreeze_ticks:
            return
        if self._frozen_tick is None:
            # the first freeze waits for a tick that scraped (the state exists then), but not
            # forever: it is also the periodic full collection
            due = scraped > 0 or self.ticks >= self.gc_refreeze_ticks
        else:
            due = (self.ticks - self._frozen_tick >= self.gc_refreeze_ticks
                   or scraped > self._frozen_nodes * 5 // 4)
        if not due:
            gc.freeze()
            return
        t0 = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._frozen_tick, self._frozen_nodes = self.ticks, scraped
        log.debug("Froze long-lived objects", extra={
            "frozen": gc.get_freeze_count(), "duration_s": round(time.perf_counter() - t0, 3)})

    @staticmethod
    def _log_tick(result: ScrapeResult, snapshot: Snapshot, duration_s: float) -> None:
        """``-v=1``: one summary line per tick (metrics-server's "Scrape finished" is ``V(1)``
        too); ``-v=2``: the storage side of the tick; ``-v=4``: one line per node scraped
        successfully (failures are logged as they happen)."""
        log.info("Scrape finished", extra=verbose(
            1, duration_s=round(duration_s, 3), nodes=result.node_points,
            pods=int(snapshot.pod_node.shape[0]), failed=len(result.errors)))
        if V(2):
            log.info("Tick details", extra=verbose(
                2, scraped=len(result.nodes),
                nodes_with_baseline=snapshot.nodes_with_baseline,
                containers_with_baseline=snapshot.containers_with_baseline,
                dropped_pods=sum(b.dropped_pods for _, b in result.batches),
                skipped_samples=sum(b.skipped_samples for _, b in result.batches),
                timeouts=result.timeouts, max_jitter_ms=result.max_jitter_ms))
        if log.isEnabledFor(logging.DEBUG):
            batches = dict(result.batches)
            for i, name in enumerate(result.nodes):
                batch = batches.get(name)
                if batch is None:
                    continue
                log.debug("Scraped node", extra={
                    "node": name, "duration_s": round(float(result.duration_s[i]), 4),
                    "node_point": batch.node is not None, "containers": len(batch),
                    "pods": int(np.unique(batch.pod_id).shape[0]),
                    "dropped_pods": batch.dropped_pods})


# --------------------------------------------------------------------------------------------
# The tick loop on a thread of its own
# --------------------------------------------------------------------------------------------


class CollectorThread:
    """The tick loop (a :class:`Manager` over ``scraper``) on an event loop of its own, in a
    thread, so that the caller's loop only serves the API.

    Why: at 5,000 nodes scraping keeps an event loop 35-55% busy for the whole jitter window
    (~0.3 ms per node of aiohttp's client, TLS, gzip and decoding, in many short callbacks);
    when that loop also served the API, every request queued behind them (HPA list p99 8-100 ms
    while a tick ran). On its own loop the collector's Python work hands the GIL over at the
    interpreter's switch interval, which the server shortens.

    What crosses the two threads, and how:

    * ``nodes_fn`` is called on the caller's loop (the informers change there) once per tick;
    * ``metrics`` are updated on the caller's loop (:class:`Manager`'s ``post``), where they
      are rendered;
    * the store publishes each snapshot with one reference assignment (immutable snapshots,
      one writer: handlers never see a torn one);
    * :meth:`timely` reads the start time of the latest tick (one int).

    Call :meth:`start` on the caller's loop, then await :meth:`wait` (returns once stopped,
    raises what ended the tick loop otherwise) and :meth:`stop` (cancels a tick in progress,
    closes the kubelet connections on the collector's loop, joins the thread).
    """

    def __init__(
        self,
        scraper: Scraper,
        store: Store,
        nodes_fn: Callable[[], Sequence[NodeInfo]],
        resolution_ns: int,
        metrics: ServerMetrics | None = None,
        *,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        nodes_timeout_s: float = 10.0,
        name: str = "fastmetrics-collector",
    ) -> None:
        self.nodes_fn = nodes_fn
        # built here, run on the collector's loop (it binds to no loop before it runs)
        self.manager = Manager(scraper, store, self._nodes, resolution_ns, metrics,
                               post=self._post)
        self._loop_factory = loop_factory
        self._nodes_timeout_s = nodes_timeout_s
        self._owner: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._stop_requested = False
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` started the thread."""
        return self._thread.ident is not None

    # ------------------------------------------------------------------ the caller's side

    def start(self) -> None:
        """Start the thread (once); ``nodes_fn`` and ``metrics`` belong to the running loop."""
        self._owner = asyncio.get_running_loop()
        self._thread.start()

    def timely(self, now_ns: int | None = None) -> bool:
        """:meth:`Manager.timely`."""
        return self.manager.timely(now_ns)

    async def wait(self) -> None:
        """Until the tick loop ends: None after :meth:`stop`, else its exception."""
        await asyncio.wrap_future(self._done)

    async def stop(self) -> None:
        """Stop the tick loop (a tick in progress is cancelled) and wait for the thread."""
        with self._lock:
            self._stop_requested = True
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is already closed
                loop.call_soon_threadsafe(self.manager.stop)
        if not self.started:
            return
        with contextlib.suppress(Exception):  # what ended it is for wait() to report
            await asyncio.wrap_future(self._done)
        await asyncio.to_thread(self._thread.join)

    # ------------------------------------------------------------------ the collector's side

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                runner.run(self._collect())
        except BaseException as e:
            self._done.set_exception(e)
        else:
            self._done.set_result(None)

    async def _collect(self) -> None:
        manager = self.manager
        with self._lock:
            self._loop = asyncio.get_running_loop()
            if self._stop_requested:
                manager.stop()
        try:
            await manager.run()
        finally:
            await manager.scraper.close()

    async def _nodes(self) -> Sequence[NodeInfo]:
        """``nodes_fn()``, called on the caller's loop."""
        owner = self._owner
        assert owner is not None
        result: concurrent.futures.Future[Sequence[NodeInfo]] = concurrent.futures.Future()

        def call() -> None:
            if not result.set_running_or_notify_cancel():
                return  # timed out before the loop got to it
            try:
                result.set_result(self.nodes_fn())
            except BaseException as e:
                result.set_exception(e)

        owner.call_soon_threadsafe(call)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(result), self._nodes_timeout_s)
        except TimeoutError:
            raise TimeoutError(f"the node list was not read within {self._nodes_timeout_s:g}s"
                               ) from None

    def _post(self, fn: Callable[[], object]) -> None:
        owner = self._owner
        if owner is not None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: shutting down
                owner.call_soon_threadsafe(fn)
