"""The scraper and the tick loop against real network peers (SPEC §2, §3.4, §5.9, §7, §10.5).

The peers are the simulated kubelet farm (``fastmetrics.sim.kubelet.KubeletFarm``: HTTPS on
loopback addresses 127.0.1.x, bearer-token or client-certificate auth, injectable faults) and,
where a test must see the request itself or control a kubelet's latency, small aiohttp servers
on loopback. Timeouts are scaled down from metrics-server's (10 s) to about a second; every wait
is bounded.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from fastmetrics.cluster import NodeInfo
from fastmetrics.errors import ScrapeError
from fastmetrics.monitoring import ServerMetrics
from fastmetrics.scrape import (
    DEFAULT_ADDRESS_TYPES,
    KubeletClientConfig,
    Manager,
    Scraper,
    ScrapeResult,
    file_token_provider,
    resolve_url,
    user_agent,
)
from fastmetrics.sim.certs import CertAuthority
from fastmetrics.sim.exposition import (
    ContainerSample,
    NodeSample,
    PodSample,
    render_resource_metrics,
)
from fastmetrics.sim.kubelet import KubeletFarm, free_port
from fastmetrics.sim.model import NS_PER_S, Cluster, ClusterShape, NodeModel
from fastmetrics.store import Snapshot, Store

TOKEN = "scrape-test-token"
MS = 1_000_000
TIMEOUT_NS = 2 * NS_PER_S

# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki", "cluster")


@pytest.fixture
def cluster() -> Cluster:
    return Cluster(ClusterShape(nodes=4, pods_per_node=5, containers_per_pod=2, seed=7))


@pytest.fixture
async def farm(cluster: Cluster, ca: CertAuthority) -> AsyncIterator[KubeletFarm]:
    f = KubeletFarm(cluster, ca, 0, tokens=[TOKEN], stats_interval_s=0.05)
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


def node_info(node: NodeModel, port: int, **overrides: Any) -> NodeInfo:
    info = NodeInfo(
        name=node.name,
        labels=dict(node.labels),
        addresses=(("InternalIP", node.address), ("Hostname", node.name)),
        kubelet_port=port,
        ready=node.ready,
    )
    return replace(info, **overrides)


def infos(farm: KubeletFarm, cluster: Cluster) -> list[NodeInfo]:
    return [node_info(n, farm.port) for n in cluster.nodes]


def config(farm_port: int, ca: CertAuthority | None, **overrides: Any) -> KubeletClientConfig:
    base = KubeletClientConfig(
        preferred_address_types=("InternalIP", "Hostname"),
        port=farm_port,
        apiserver_ca_file=str(ca.cert_file) if ca is not None else None,
        token_provider=lambda: TOKEN,
        timeout_ns=TIMEOUT_NS,
    )
    return replace(base, **overrides)


ScraperFactory = Callable[..., Scraper]


@pytest.fixture
async def make_scraper() -> AsyncIterator[ScraperFactory]:
    """Builds scrapers and closes every one of them at the end of the test."""
    made: list[Scraper] = []

    def make(cfg: KubeletClientConfig, **kwargs: Any) -> Scraper:
        s = Scraper(cfg, **kwargs)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            await s.close()


class StaticResolver(AbstractResolver):
    """Resolves the simulated nodes' Hostname addresses (node names) to their loopback IPs."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host!r}")
        return [ResolveResult(hostname=host, host=self.table[host], port=port,
                              family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


def wall_ns() -> int:
    return time.time_ns()


def reasons(result: ScrapeResult) -> dict[str, str]:
    return dict(result.errors)


# --------------------------------------------------------------------------------------------
# A small kubelet stand-in that records requests (headers, connection) or delays its answer
# --------------------------------------------------------------------------------------------


def simple_body(node_cpu_s: float = 100.0, pods: Sequence[tuple[str, str, Sequence[str]]] = (),
                ts_ms: int | None = None) -> bytes:
    """A kubelet body: a node and ``pods`` ((namespace, pod, containers)) with fixed usage."""
    ts = ts_ms if ts_ms is not None else time.time_ns() // MS
    containers = [
        ContainerSample(ns, pod, c, 5.0 + i, 1e7, ts, 1.7e9)
        for ns, pod, cs in pods for i, c in enumerate(cs)
    ]
    pod_samples = [PodSample(ns, pod, 6.0, 2e7, ts) for ns, pod, _ in pods]
    return render_resource_metrics(NodeSample(node_cpu_s, 3e9, ts), pod_samples, containers)


class StandIn:
    """Kubelet stand-ins on 127.0.0.1, one listening socket (own port) per node name.

    Each records every request (headers and the client's port) and answers after the node's
    ``delay_s`` with its ``body`` (gzip-compressed when asked for ``gzip``).
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.bodies: dict[str, bytes] = {}
        self.delays: dict[str, float] = {}
        self.gzip = True
        self.requests: list[tuple[str, dict[str, str], int]] = []
        self.ports: dict[str, int] = {}
        self._by_port: dict[int, str] = {}
        self._runner: web.AppRunner | None = None

    async def start(self, names: Sequence[str]) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        for name in names:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            sock.setblocking(False)
            port = sock.getsockname()[1]
            self.ports[name] = port
            self._by_port[port] = name
            await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def node(self, name: str, *, ready: bool = True, **overrides: Any) -> NodeInfo:
        info = NodeInfo(name, {}, (("InternalIP", "127.0.0.1"),), self.ports[name], ready)
        return replace(info, **overrides)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.get_extra_info("sockname")
        peer = request.get_extra_info("peername")
        name = self._by_port[sockname[1]]
        self.requests.append((name, dict(request.headers), peer[1]))
        await asyncio.sleep(self.delays.get(name, 0.0))
        body = self.bodies[name]
        headers = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        if self.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)


@pytest.fixture
async def stand_in() -> AsyncIterator[Callable[..., Any]]:
    made: list[StandIn] = []

    async def make(names: Sequence[str], ssl_context: ssl.SSLContext | None = None) -> StandIn:
        s = StandIn(ssl_context)
        made.append(s)
        await s.start(names)
        return s

    try:
        yield make
    finally:
        for s in made:
            await s.stop()


def tls_server_context(ca: CertAuthority) -> ssl.SSLContext:
    pair = ca.issue("stand-in", "stand-in", ip_addresses=("127.0.0.1",),
                    dns_names=("localhost",), server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pair.cert_file, pair.key_file)
    return ctx


# --------------------------------------------------------------------------------------------
# resolve_url (SPEC §2.3)
# --------------------------------------------------------------------------------------------

NODE = NodeInfo(
    name="n1",
    labels={},
    addresses=(
        ("InternalIP", "10.0.0.1"),
        ("ExternalIP", "203.0.113.7"),
        ("InternalIP", "10.0.0.2"),
        ("Hostname", "n1.example"),
        ("InternalDNS", "n1.internal"),
    ),
    kubelet_port=10255,
    ready=True,
)


@pytest.mark.parametrize(
    ("types", "expected_host"),
    [
        (DEFAULT_ADDRESS_TYPES, "n1.example"),
        (("InternalIP", "ExternalIP", "Hostname"), "10.0.0.1"),  # the first of its type
        (("ExternalIP", "InternalIP"), "203.0.113.7"),
        (("InternalDNS",), "n1.internal"),
        (("ExternalDNS", "InternalIP"), "10.0.0.1"),  # types the node lacks are skipped
        (("internalip", "Hostname"), "n1.example"),  # type names are case-sensitive
        (("CustomType", "Hostname"), "n1.example"),
    ],
)
def test_resolve_url_address_priority(types: tuple[str, ...], expected_host: str) -> None:
    cfg = KubeletClientConfig(preferred_address_types=types)
    assert resolve_url(NODE, cfg) == f"https://{expected_host}:10250/metrics/resource"


def test_resolve_url_no_match() -> None:
    cfg = KubeletClientConfig(preferred_address_types=("ExternalDNS", "Custom"))
    with pytest.raises(ScrapeError, match=re.escape("no address matched types "
                                                    "[ExternalDNS Custom]")) as info:
        resolve_url(NODE, cfg)
    assert info.value.node == "n1"
    bare = replace(NODE, addresses=())
    with pytest.raises(ScrapeError, match=re.escape("no address matched types [Hostname "
                                                    "InternalDNS InternalIP ExternalDNS "
                                                    "ExternalIP]")):
        resolve_url(bare, KubeletClientConfig())


@pytest.mark.parametrize(
    ("cfg_port", "use_status", "node_port", "expected"),
    [
        (10250, False, 10255, 10250),  # --kubelet-port
        (10250, True, 10255, 10255),  # --kubelet-use-node-status-port
        (10250, True, 0, 10250),  # status port unset: --kubelet-port
        (4242, False, 0, 4242),
    ],
)
def test_resolve_url_port(cfg_port: int, use_status: bool, node_port: int, expected: int) -> None:
    cfg = KubeletClientConfig(preferred_address_types=("InternalIP",), port=cfg_port,
                              use_node_status_port=use_status)
    node = replace(NODE, kubelet_port=node_port)
    assert resolve_url(node, cfg) == f"https://10.0.0.1:{expected}/metrics/resource"


@pytest.mark.parametrize(
    ("annotation", "path"),
    [
        ("", "/metrics/resource"),
        ("/metrics/resource/v1alpha1", "/metrics/resource/v1alpha1"),
        ("/custom/path", "/custom/path"),
        ("/odd path?x=1#f", "/odd%20path%3Fx=1%23f"),  # verbatim path, escaped: no query
        ("/a;b,c:d@e$f&g+h=i", "/a;b,c:d@e$f&g+h=i"),
        ("relative", "/relative"),
    ],
)
def test_resolve_url_path_annotation(annotation: str, path: str) -> None:
    cfg = KubeletClientConfig(preferred_address_types=("InternalIP",))
    assert resolve_url(replace(NODE, metrics_path=annotation), cfg) == \
        f"https://10.0.0.1:10250{path}"


def test_resolve_url_ipv6_and_scheme() -> None:
    node = replace(NODE, addresses=(("InternalIP", "fd00::1"),))
    cfg = KubeletClientConfig(preferred_address_types=("InternalIP",))
    assert resolve_url(node, cfg) == "https://[fd00::1]:10250/metrics/resource"
    insecure = replace(cfg, completely_insecure=True, port=10255)
    assert resolve_url(node, insecure) == "http://[fd00::1]:10255/metrics/resource"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="timeout"):
        KubeletClientConfig(timeout_ns=0)
    with pytest.raises(ValueError, match="together"):
        KubeletClientConfig(client_cert_file="/x.crt")
    with pytest.raises(ValueError, match="port"):
        KubeletClientConfig(port=0)


def test_user_agent_shape() -> None:
    assert re.fullmatch(r"fastmetrics/[0-9][^ ]* \([a-z0-9]+/[a-z0-9_]+\) kubernetes/unknown",
                        user_agent())


def test_file_token_provider(tmp_path: Path) -> None:
    path = tmp_path / "token"
    provider = file_token_provider(path)
    assert provider() is None
    path.write_text("first\n")
    assert provider() == "first"
    path.write_text("second-token\n")  # rotated (another size, so seen even within one mtime tick)
    assert provider() == "second-token"


# --------------------------------------------------------------------------------------------
# Scraping the farm: values, order, decoders
# --------------------------------------------------------------------------------------------


async def test_scrape_all_nodes_matches_model(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    scraper = make_scraper(config(farm.port, ca))
    nodes = infos(farm, cluster)
    store = Store(15 * NS_PER_S)
    first = await scraper.scrape(nodes, wall_ns)
    assert first.errors == {}
    assert first.success.tolist() == [True] * len(nodes)
    assert [name for name, _ in first.batches] == [n.name for n in cluster.nodes]
    assert first.node_points == len(nodes)
    assert not store.store(first.batches).ready()
    decoders = dict(scraper.decoders)
    await asyncio.sleep(0.3)  # the farm re-renders its stats after 50 ms
    second = await scraper.scrape(nodes, wall_ns)
    assert second.errors == {}
    snap = store.store(second.batches)
    assert snap.ready()
    # one decoder per node, kept across ticks (the store relies on it for history)
    assert scraper.decoders == decoders
    assert all(scraper.decoders[n] is decoders[n] for n in decoders)
    for model in cluster.nodes:
        usage = snap.node(model.name)
        assert usage is not None
        assert usage.memory_bytes == model.memory_bytes
        assert usage.cpu_nanocores == pytest.approx(model.cpu_nanocores, rel=1e-4)
        assert 0.2 * NS_PER_S < usage.window_ns < 2 * NS_PER_S
        for pod in model.pods:
            pod_usage = snap.pod(pod.namespace, pod.name)
            assert pod_usage is not None
            got = {c.name: c for c in pod_usage.containers}
            assert set(got) == {c.name for c in pod.containers}
            for c in pod.containers:
                assert got[c.name].memory_bytes == c.memory_bytes
                assert got[c.name].cpu_nanocores == pytest.approx(c.cpu_nanocores, rel=1e-4)
    # request durations exclude the jitter and are plausible for loopback
    assert np.all(second.duration_s > 0) and np.all(second.duration_s < 1.0)
    now_s = time.time()
    assert np.all(np.abs(second.end_time_s - now_s) < 5)
    assert np.all(second.end_time_s == np.floor(second.end_time_s))


async def test_connections_are_reused_and_headers(
    ca: CertAuthority, stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    """Headers as client-go sends them; one kept-alive TLS connection per node across ticks;
    a rotated token is picked up at the next tick."""
    server: StandIn = await stand_in(["a", "b"], tls_server_context(ca))
    for name in ("a", "b"):
        server.bodies[name] = simple_body()
    tokens = iter(["token-1", "token-2", "token-3"])
    cfg = config(1, ca, use_node_status_port=True, preferred_address_types=("InternalIP",),
                 token_provider=lambda: next(tokens))
    scraper = make_scraper(cfg)
    nodes = [server.node("a"), server.node("b")]
    for _ in range(3):
        result = await scraper.scrape(nodes, wall_ns)
        assert result.errors == {}
        assert len(result.batches) == 2
    assert len(server.requests) == 6
    by_node: dict[str, list[tuple[dict[str, str], int]]] = {}
    for name, headers, peer_port in server.requests:
        by_node.setdefault(name, []).append((headers, peer_port))
        assert headers["Accept-Encoding"] == "gzip"
        assert "Accept" not in headers
        assert headers["User-Agent"] == user_agent()
        assert headers["Host"] == f"127.0.0.1:{server.ports[name]}"
    for name, reqs in by_node.items():
        # the same client port every tick: the connection was kept alive and reused
        assert len({port for _, port in reqs}) == 1, name
        assert [h["Authorization"] for h, _ in reqs] == \
            ["Bearer token-1", "Bearer token-2", "Bearer token-3"]


async def test_identity_body_and_no_token(
    ca: CertAuthority, stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    server: StandIn = await stand_in(["a"], tls_server_context(ca))
    server.bodies["a"] = simple_body(pods=[("ns", "p", ["c"])])
    server.gzip = False
    scraper = make_scraper(config(1, ca, use_node_status_port=True, token_provider=lambda: None))
    result = await scraper.scrape([server.node("a")], wall_ns)
    assert result.errors == {}
    assert len(result.batches[0][1]) == 1
    assert "Authorization" not in server.requests[0][1]


async def test_completely_insecure_plain_http(
    stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    """--deprecated-kubelet-completely-insecure: http, anonymous, even with a token at hand."""
    server: StandIn = await stand_in(["a"])
    server.bodies["a"] = simple_body()
    cfg = config(1, None, completely_insecure=True, use_node_status_port=True,
                 token_provider=lambda: TOKEN)
    assert cfg.ssl_context() is None
    scraper = make_scraper(cfg)
    result = await scraper.scrape([server.node("a")], wall_ns)
    assert result.errors == {}
    headers = server.requests[0][1]
    assert "Authorization" not in headers
    assert headers["Accept-Encoding"] == "gzip"
    # the same config over TLS towards a plain-HTTP peer fails
    tls = make_scraper(replace(cfg, completely_insecure=False, insecure_tls=True))
    failed = await tls.scrape([server.node("a")], wall_ns)
    assert failed.batches == [] and "a" in failed.errors


async def test_default_timestamp_is_request_time_truncated_to_ms(
    stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    server: StandIn = await stand_in(["a"])
    # no timestamps at all: every sample is stamped with the request time
    server.bodies["a"] = (
        b"node_cpu_usage_seconds_total 10\nnode_memory_working_set_bytes 5\n"
        b'container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"} 1\n'
        b'container_memory_working_set_bytes{container="c",namespace="n",pod="p"} 2\n'
    )
    cfg = config(1, None, completely_insecure=True, use_node_status_port=True)
    scraper = make_scraper(cfg)
    calls: list[int] = []

    def clock() -> int:
        calls.append(1_767_225_600_123_456_789)
        return calls[-1]

    result = await scraper.scrape([server.node("a")], clock)
    batch = result.batches[0][1]
    assert calls  # read once per request, just before sending
    assert batch.node is not None and batch.node.timestamp_ns == 1_767_225_600_123_000_000
    assert batch.timestamp_ns.tolist() == [1_767_225_600_123_000_000]


# --------------------------------------------------------------------------------------------
# Address, port and path against the farm
# --------------------------------------------------------------------------------------------


async def test_hostname_first_with_dns(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    """The binary default order picks Hostname; TLS then verifies the certificate's DNS SAN."""
    resolver = StaticResolver({n.name: n.address for n in cluster.nodes})
    scraper = make_scraper(config(farm.port, ca, preferred_address_types=DEFAULT_ADDRESS_TYPES),
                           resolver=resolver)
    result = await scraper.scrape(infos(farm, cluster), wall_ns)
    assert result.errors == {}
    assert sorted(resolver.lookups) == sorted(n.name for n in cluster.nodes)


async def test_hostname_unresolvable_fails_that_node_only(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    names = {n.name: n.address for n in cluster.nodes[1:]}
    scraper = make_scraper(config(farm.port, ca, preferred_address_types=DEFAULT_ADDRESS_TYPES),
                           resolver=StaticResolver(names))
    result = await scraper.scrape(infos(farm, cluster), wall_ns)
    assert list(result.errors) == [cluster.nodes[0].name]
    assert [n for n, _ in result.batches] == [n.name for n in cluster.nodes[1:]]


async def test_no_address_match_fails_that_node_only(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    nodes = infos(farm, cluster)
    nodes[2] = replace(nodes[2], addresses=(("ExternalIP", "192.0.2.1"),))
    nodes[3] = replace(nodes[3], addresses=())
    scraper = make_scraper(config(farm.port, ca))
    result = await scraper.scrape(nodes, wall_ns)
    assert result.errors == {
        nodes[2].name: "no address matched types [InternalIP Hostname]",
        nodes[3].name: "no address matched types [InternalIP Hostname]",
    }
    assert result.success.tolist() == [True, True, False, False]
    assert [n for n, _ in result.batches] == [nodes[0].name, nodes[1].name]


async def test_node_status_port_versus_kubelet_port(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    wrong = free_port("127.0.0.1")
    nodes = infos(farm, cluster)
    # the node status port is right, --kubelet-port is wrong
    with_status = make_scraper(config(wrong, ca, use_node_status_port=True))
    assert (await with_status.scrape(nodes, wall_ns)).errors == {}
    without = make_scraper(config(wrong, ca, use_node_status_port=False))
    failed = await without.scrape(nodes, wall_ns)
    assert set(failed.errors) == {n.name for n in nodes} and failed.batches == []
    # status port 0: --kubelet-port is used even with the flag
    zero = [replace(n, kubelet_port=0) for n in nodes]
    assert (await make_scraper(config(farm.port, ca, use_node_status_port=True))
            .scrape(zero, wall_ns)).errors == {}
    assert set((await with_status.scrape(zero, wall_ns)).errors) == {n.name for n in nodes}


async def test_path_annotation(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    nodes = infos(farm, cluster)
    nodes[0] = replace(nodes[0], metrics_path="/metrics/resource")
    nodes[1] = replace(nodes[1], metrics_path="/metrics/elsewhere")
    result = await make_scraper(config(farm.port, ca)).scrape(nodes, wall_ns)
    assert result.errors == {nodes[1].name: 'request failed, status: "404 Not Found"'}


# --------------------------------------------------------------------------------------------
# TLS and credentials
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "ok"),
    [
        ("kubelet-ca", True),  # --kubelet-certificate-authority
        ("apiserver-ca", True),  # the default: the apiserver connection's CA
        ("wrong-kubelet-ca", False),  # overrides a right apiserver CA
        ("insecure", True),  # --kubelet-insecure-tls
        ("system-store", False),  # no CA at all: the system trust store
        ("client-cert", True),  # client certificate, no token
        ("client-cert+token", True),
        ("no-credentials", False),  # 401
        ("wrong-token", False),  # 401
    ],
)
async def test_tls_and_credentials(
    case: str, ok: bool, farm: KubeletFarm, cluster: Cluster, ca: CertAuthority,
    tmp_path: Path, make_scraper: ScraperFactory,
) -> None:
    other = CertAuthority(tmp_path / "other", "other")
    client = ca.issue("fastmetrics-client", "system:serviceaccount:kube-system:metrics-server",
                      client=True)
    base = config(farm.port, None)
    cfg = {
        "kubelet-ca": replace(base, ca_file=str(ca.cert_file)),
        "apiserver-ca": replace(base, apiserver_ca_file=str(ca.cert_file)),
        "wrong-kubelet-ca": replace(base, ca_file=str(other.cert_file),
                                    apiserver_ca_file=str(ca.cert_file)),
        "insecure": replace(base, insecure_tls=True),
        "system-store": base,
        "client-cert": replace(base, apiserver_ca_file=str(ca.cert_file), token_provider=None,
                               client_cert_file=str(client.cert_file),
                               client_key_file=str(client.key_file)),
        "client-cert+token": replace(base, apiserver_ca_file=str(ca.cert_file),
                                     client_cert_file=str(client.cert_file),
                                     client_key_file=str(client.key_file)),
        "no-credentials": replace(base, apiserver_ca_file=str(ca.cert_file),
                                  token_provider=None),
        "wrong-token": replace(base, apiserver_ca_file=str(ca.cert_file),
                               token_provider=lambda: "not-" + TOKEN),
    }[case]
    nodes = infos(farm, cluster)
    result = await make_scraper(cfg).scrape(nodes, wall_ns)
    if ok:
        assert result.errors == {}
        assert len(result.batches) == len(nodes)
    else:
        assert set(result.errors) == {n.name for n in nodes}
        assert result.batches == []
        reason = next(iter(result.errors.values()))
        if case in ("no-credentials", "wrong-token"):
            assert reason == 'request failed, status: "401 Unauthorized"'
        else:
            assert reason.startswith("tls: ") and "certificate" in reason.lower()


async def test_token_rotation_against_farm(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    current = ["stale-token"]
    scraper = make_scraper(config(farm.port, ca, token_provider=lambda: current[0]))
    nodes = infos(farm, cluster)
    assert len((await scraper.scrape(nodes, wall_ns)).errors) == len(nodes)
    current[0] = TOKEN
    assert (await scraper.scrape(nodes, wall_ns)).errors == {}


# --------------------------------------------------------------------------------------------
# Faults: every other node is stored, failures are counted and logged
# --------------------------------------------------------------------------------------------

FAULTS = ["slow", "garbage", "http500", "tls", "unauthorized"]


@pytest.fixture
def big_cluster() -> Cluster:
    return Cluster(ClusterShape(nodes=8, pods_per_node=3, containers_per_pod=1, seed=3))


@pytest.fixture
async def faulty_farm(big_cluster: Cluster, ca: CertAuthority) -> AsyncIterator[KubeletFarm]:
    f = KubeletFarm(big_cluster, ca, 0, tokens=[TOKEN], stats_interval_s=0.05)
    await f.start()
    try:
        for node, fault in zip(big_cluster.nodes, FAULTS, strict=False):
            await f.set_faults(node.name, {fault})
        yield f
    finally:
        await f.stop()


async def test_faulty_nodes_do_not_fail_the_tick(
    faulty_farm: KubeletFarm, big_cluster: Cluster, ca: CertAuthority,
    make_scraper: ScraperFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    timeout_s = 1.0
    scraper = make_scraper(config(faulty_farm.port, ca, timeout_ns=int(timeout_s * NS_PER_S)))
    nodes = infos(faulty_farm, big_cluster)
    nodes[4] = replace(nodes[4], ready=False)  # the unauthorized one: logged at DEBUG
    store = Store(15 * NS_PER_S)
    metrics = ServerMetrics(15, process=False)
    manager = Manager(scraper, store, lambda: nodes, 15 * NS_PER_S, metrics)
    # timed below: no full collection of this whole test process in the first tick (the GC
    # policy has tests of its own)
    manager.gc_refreeze_ticks = 0
    caplog.set_level(logging.DEBUG, logger="fastmetrics.scrape")
    for tick in range(2):
        t0 = time.monotonic()
        snap = await manager.tick()
        elapsed = time.monotonic() - t0
        # the slow node takes the whole timeout, nothing takes longer (jitter < 64 ms)
        assert timeout_s <= elapsed < timeout_s + 0.6, elapsed
        result = manager.last_result
        assert result is not None
        healthy = [n.name for n in nodes[len(FAULTS):]]
        assert [n for n, _ in result.batches] == healthy
        assert snap.node_names == healthy
        errors = result.errors
        assert errors[nodes[0].name].startswith("timeout")
        assert errors[nodes[1].name].startswith("invalid metric name")  # HTML is not Prometheus
        assert errors[nodes[2].name] == 'request failed, status: "500 Internal Server Error"'
        assert errors[nodes[3].name].startswith("tls: ")
        assert errors[nodes[4].name] == 'request failed, status: "401 Unauthorized"'
        assert result.timeouts == 1
        assert metrics.request_count(False) == 5 * (tick + 1)
        assert metrics.request_count(True) == 3 * (tick + 1)
        await asyncio.sleep(0.1)
    assert store.ready()
    by_node = {getattr(r, "node", None): r for r in caplog.records if r.name == "fastmetrics.scrape"
               and r.getMessage().startswith("Failed")}
    assert by_node[nodes[0].name].getMessage() == \
        "Failed to scrape node, timeout to access kubelet"
    assert by_node[nodes[0].name].levelno == logging.WARNING
    assert by_node[nodes[1].name].levelno == logging.WARNING
    assert by_node[nodes[4].name].levelno == logging.DEBUG  # not Ready
    assert set(by_node) == {n.name for n in nodes[: len(FAULTS)]}
    finished = [r for r in caplog.records if r.getMessage() == "Scrape finished"]
    assert len(finished) == 2 and finished[-1].levelno == logging.INFO
    assert finished[-1].nodes == 3  # type: ignore[attr-defined]
    assert finished[-1].pods == 9  # type: ignore[attr-defined]


async def test_insecure_tls_accepts_untrusted_kubelet(
    faulty_farm: KubeletFarm, big_cluster: Cluster, make_scraper: ScraperFactory
) -> None:
    """A kubelet with a certificate nobody trusts (self-signed) works with insecure TLS."""
    tls_node = node_info(big_cluster.nodes[3], faulty_farm.port)
    scraper = make_scraper(config(faulty_farm.port, None, insecure_tls=True))
    result = await scraper.scrape([tls_node], wall_ns)
    assert result.errors == {}


async def test_body_too_large(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    scraper = make_scraper(config(farm.port, ca, max_body_bytes=2000))
    result = await scraper.scrape(infos(farm, cluster), wall_ns)
    assert len(result.errors) == len(cluster.nodes)
    assert all(r.startswith("body too large") for r in result.errors.values())


async def test_fault_cleared_node_comes_back(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    scraper = make_scraper(config(farm.port, ca, timeout_ns=NS_PER_S // 2))
    nodes = infos(farm, cluster)
    name = cluster.nodes[0].name
    await farm.set_faults(name, {"tls"})
    assert list((await scraper.scrape(nodes, wall_ns)).errors) == [name]
    await farm.set_faults(name, set())
    assert (await scraper.scrape(nodes, wall_ns)).errors == {}


# --------------------------------------------------------------------------------------------
# Node churn
# --------------------------------------------------------------------------------------------


async def test_node_churn_drops_decoders(
    ca: CertAuthority, make_scraper: ScraperFactory
) -> None:
    cluster = Cluster(ClusterShape(nodes=6, pods_per_node=2, containers_per_pod=1, seed=5))
    async with KubeletFarm(cluster, ca, 0, tokens=[TOKEN], stats_interval_s=0.05) as farm:
        scraper = make_scraper(config(farm.port, ca))
        store = Store(15 * NS_PER_S)
        all_nodes = infos(farm, cluster)
        current = all_nodes[:3]
        manager = Manager(scraper, store, lambda: current, 15 * NS_PER_S)
        await manager.tick()
        assert set(scraper.decoders) == {n.name for n in all_nodes[:3]}
        kept = {n: scraper.decoders[n] for n in (all_nodes[1].name, all_nodes[2].name)}
        current = all_nodes[1:6]
        await asyncio.sleep(0.1)
        snap = await manager.tick()
        assert set(scraper.decoders) == {n.name for n in all_nodes[1:6]}
        assert all(scraper.decoders[n] is d for n, d in kept.items())
        assert snap.node_names == [n.name for n in all_nodes[1:6]]
        # nodes 1 and 2 have a baseline (same decoder), 3-5 are new
        assert snap.nodes_with_baseline == 2
        current = []
        snap = await manager.tick()
        assert scraper.decoders == {} and snap.node_names == []
        # a node listed twice is scraped once
        current = [all_nodes[0], all_nodes[0]]
        result = await scraper.scrape(current, wall_ns)
        assert result.nodes == [all_nodes[0].name] and len(result.batches) == 1


# --------------------------------------------------------------------------------------------
# SPEC §10.5 scraper vectors, timescale / ~4 (timeouts of about a second)
# --------------------------------------------------------------------------------------------

NODE1_PODS = [("ns1", "pod1", ["container1", "container2"]), ("ns1", "pod2", ["container1"]),
              ("ns2", "pod1", ["container1"]), ("ns3", "pod1", ["container1"])]
FIXTURE_NODES = ["node1", "node-no-host", "node3", "node4"]


async def fixture_servers(stand_in: Callable[..., Any]) -> tuple[StandIn, list[NodeInfo]]:
    server: StandIn = await stand_in(FIXTURE_NODES)
    for name in FIXTURE_NODES:
        server.bodies[name] = simple_body(pods=NODE1_PODS if name == "node1" else ())
    nodes = [
        server.node("node1", addresses=(("Hostname", "node1"), ("InternalIP", "127.0.0.1"))),
        server.node("node-no-host"),
        server.node("node3", ready=False),
        server.node("node4"),
    ]
    return server, nodes


def fixture_scraper(make_scraper: ScraperFactory, timeout_s: float, **kwargs: Any) -> Scraper:
    cfg = KubeletClientConfig(completely_insecure=True, use_node_status_port=True,
                              timeout_ns=int(timeout_s * NS_PER_S))
    return make_scraper(cfg, resolver=StaticResolver({"node1": "127.0.0.1"}), **kwargs)


def pods_of(result: ScrapeResult) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for _, batch in result.batches:
        out.update(batch.keys.pod_tuple[p] for p in np.unique(batch.pod_id).tolist())
    return out


async def timed_scrape(scraper: Scraper, nodes: list[NodeInfo],
                       deadline_s: float) -> tuple[ScrapeResult, float]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await scraper.scrape(nodes, wall_ns, deadline=t0 + deadline_s)
    return result, loop.time() - t0


async def test_vector_a_all_within_timeout(
    stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    """(a) every kubelet takes 1 s, timeout 3 s, context 4 s: all 4 nodes and 4 pods, <= 3 s."""
    server, nodes = await fixture_servers(stand_in)
    server.delays = dict.fromkeys(FIXTURE_NODES, 0.25)
    result, elapsed = await timed_scrape(fixture_scraper(make_scraper, 0.75), nodes, 1.0)
    assert elapsed < 0.75
    assert result.nodes == FIXTURE_NODES and result.errors == {}
    assert result.node_points == 4
    assert pods_of(result) == {(ns, pod) for ns, pod, _ in NODE1_PODS}


async def test_vector_b_slow_node_times_out(
    stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    """(b) node1 takes 4 s, the others 2 s, timeout 3 s: ~3 s, every node but node1, no pods."""
    server, nodes = await fixture_servers(stand_in)
    server.delays = {"node1": 1.0, "node-no-host": 0.5, "node3": 0.5, "node4": 0.5}
    result, elapsed = await timed_scrape(fixture_scraper(make_scraper, 0.75), nodes, 1.25)
    assert 0.75 <= elapsed < 0.75 + 0.3
    assert [n for n, _ in result.batches] == ["node-no-host", "node3", "node4"]
    assert result.errors == {"node1": "timeout after 0.75s"} and result.timeouts == 1
    assert pods_of(result) == set()


async def test_vector_c_tick_deadline_wins(
    stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    """(c) all take 4 s, timeout 5 s, tick context 1 s: ~1 s, no nodes."""
    server, nodes = await fixture_servers(stand_in)
    server.delays = dict.fromkeys(FIXTURE_NODES, 1.0)
    result, elapsed = await timed_scrape(fixture_scraper(make_scraper, 1.25), nodes, 0.25)
    assert 0.25 <= elapsed < 0.25 + 0.3
    assert result.batches == [] and result.timeouts == 4
    assert set(result.errors.values()) == {"timeout: tick deadline exceeded"}


async def test_vector_d_metrics_with_fake_clock(
    stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    """(d) one successful node1 scrape, a fake clock advancing 1 s per reading: duration 1 s
    (bucket le=1), request_total{success="true"} 1, last request time = Go's zero time."""
    _server, nodes = await fixture_servers(stand_in)
    ticks = iter(range(0, 100 * NS_PER_S, NS_PER_S))
    go_zero_time_ns = -62135596800 * NS_PER_S
    scraper = fixture_scraper(make_scraper, 1.0, monotonic_ns=lambda: next(ticks),
                              wall_clock_ns=lambda: go_zero_time_ns)
    result = await scraper.scrape(nodes[:1], wall_ns)
    assert result.duration_s.tolist() == [1.0]
    metrics = ServerMetrics(60, process=False)
    metrics.observe_requests(result.nodes, result.duration_s, result.success, result.end_time_s)
    text = metrics.render().decode()
    name = "metrics_server_kubelet_request_duration_seconds"
    assert f'{name}_bucket{{node="node1",le="0.5"}} 0\n' in text
    assert f'{name}_bucket{{node="node1",le="1"}} 1\n' in text
    assert f'{name}_sum{{node="node1"}} 1\n' in text
    assert f'{name}_count{{node="node1"}} 1\n' in text
    assert 'metrics_server_kubelet_request_total{success="true"} 1\n' in text
    assert ('metrics_server_kubelet_last_request_time_seconds{node="node1"} -6.21355968e+10\n'
            in text)


async def test_vector_e_node_without_address(
    stand_in: Callable[..., Any], make_scraper: ScraperFactory
) -> None:
    """(e) node1 has no addresses: the other three nodes are still returned."""
    _server, nodes = await fixture_servers(stand_in)
    nodes[0] = replace(nodes[0], addresses=())
    result, _ = await timed_scrape(fixture_scraper(make_scraper, 1.0), nodes, 2.0)
    assert [n for n, _ in result.batches] == ["node-no-host", "node3", "node4"]
    assert result.errors["node1"].startswith("no address matched types")


async def test_vector_f_lister_error(
    stand_in: Callable[..., Any], make_scraper: ScraperFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """(f) a node lister error: logged, the tick stores an empty batch, nothing raises."""

    def broken() -> list[NodeInfo]:
        raise RuntimeError("lister broke")

    store = Store(15 * NS_PER_S)
    manager = Manager(fixture_scraper(make_scraper, 1.0), store, broken, 15 * NS_PER_S)
    snap = await manager.tick()
    assert snap.node_names == [] and manager.ticks == 1
    assert any(r.getMessage() == "Failed to list nodes" for r in caplog.records)


# --------------------------------------------------------------------------------------------
# The Manager: cadence, overrun, deadline, partial stores, liveness
# --------------------------------------------------------------------------------------------


class FakeScraper:
    """Sleeps ``durations`` (one per call, then 0) and returns an empty result."""

    def __init__(self, durations: Sequence[float] = ()) -> None:
        self.durations = list(durations)
        self.calls: list[float] = []
        self.deadlines: list[float | None] = []
        self.closed = False

    async def scrape(self, nodes: Sequence[NodeInfo], fn: Callable[[], int], *,
                     deadline: float | None = None) -> ScrapeResult:
        loop = asyncio.get_running_loop()
        self.calls.append(loop.time())
        self.deadlines.append(deadline)
        if self.durations:
            await asyncio.sleep(self.durations.pop(0))
        return ScrapeResult.empty()

    async def close(self) -> None:
        self.closed = True


class RecordingStore(Store):
    def __init__(self, resolution_ns: int) -> None:
        super().__init__(resolution_ns)
        self.stored: list[list[str]] = []

    def store(self, batches: Any) -> Snapshot:
        self.stored.append([name for name, _ in batches])
        return super().store(batches)


async def run_for(manager: Manager, seconds: float) -> None:
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(seconds)
    manager.stop()
    await asyncio.wait_for(task, 2.0)


def offsets(calls: list[float], t0: float) -> list[float]:
    return [round(c - t0, 2) for c in calls]


async def test_manager_first_tick_immediate_then_cadence() -> None:
    R = 0.2
    scraper = FakeScraper()
    store = RecordingStore(int(R * NS_PER_S))
    manager = Manager(scraper, store, list, int(R * NS_PER_S))  # type: ignore[arg-type]
    t0 = asyncio.get_running_loop().time()
    await run_for(manager, 0.9)
    got = [c - t0 for c in scraper.calls]
    assert len(got) == 5, offsets(scraper.calls, t0)
    for k, t in enumerate(got):
        assert k * R - 0.01 <= t < k * R + 0.09, offsets(scraper.calls, t0)
    # each tick's deadline is one resolution after its start
    for call, deadline in zip(scraper.calls, scraper.deadlines, strict=True):
        assert deadline is not None and deadline == pytest.approx(call + R, abs=0.02)
    assert store.stored == [[]] * 5  # stored even when empty
    assert manager.ticks == 5


async def test_manager_overrun_collapses_missed_ticks() -> None:
    R = 0.2
    scraper = FakeScraper([0.5])  # the first tick overruns 2.5 periods
    manager = Manager(scraper, Store(int(R * NS_PER_S)), list,  # type: ignore[arg-type]
                      int(R * NS_PER_S))
    t0 = asyncio.get_running_loop().time()
    await run_for(manager, 0.9)
    got = [c - t0 for c in scraper.calls]
    # 0; the missed ticks at 0.2 and 0.4 collapse into one right after the overrun (0.5);
    # then the grid again: 0.6, 0.8
    expected = [0.0, 0.5, 0.6, 0.8]
    assert len(got) == len(expected), offsets(scraper.calls, t0)
    for t, e in zip(got, expected, strict=True):
        assert e - 0.01 <= t < e + 0.09, offsets(scraper.calls, t0)


async def test_manager_stop_cancels_a_running_tick() -> None:
    scraper = FakeScraper([10.0])
    manager = Manager(scraper, Store(NS_PER_S), list, NS_PER_S)  # type: ignore[arg-type]
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    manager.stop()
    await asyncio.wait_for(task, 1.0)
    assert time.monotonic() - t0 < 0.5
    assert manager.ticks == 0


async def test_manager_tick_deadline_stores_partial_result(
    faulty_farm: KubeletFarm, big_cluster: Cluster, ca: CertAuthority,
    make_scraper: ScraperFactory,
) -> None:
    """The tick context (one resolution) cuts a slow node short even with a longer request
    timeout; what arrived is stored and the tick duration is observed."""
    R = 0.6
    scraper = make_scraper(config(faulty_farm.port, ca, timeout_ns=5 * NS_PER_S))
    store = RecordingStore(int(R * NS_PER_S))
    metrics = ServerMetrics(R, process=False)
    nodes = infos(faulty_farm, big_cluster)
    manager = Manager(scraper, store, lambda: nodes, int(R * NS_PER_S), metrics)
    manager.gc_refreeze_ticks = 0  # timed: no full collection of the test process in the tick
    t0 = time.monotonic()
    snap = await manager.tick()
    assert R <= time.monotonic() - t0 < R + 0.3
    assert store.stored == [[n.name for n in nodes[len(FAULTS):]]]
    assert snap.node_names == store.stored[0]
    assert metrics.tick_count == 1
    assert manager.last_tick_duration_s is not None and manager.last_tick_duration_s >= R
    text = metrics.render().decode()
    assert 'metrics_server_storage_points{type="node"} 0\n' in text


def test_timely_vectors() -> None:
    """SPEC §10.5 probes, resolution 60 s: passes before any tick, after a failed tick, after a
    tick that started now - resolution; fails after one that started now - 2 x resolution."""
    R = 60 * NS_PER_S
    now = [1_000 * NS_PER_S]
    manager = Manager(FakeScraper(), Store(R), list, R,  # type: ignore[arg-type]
                      monotonic_ns=lambda: now[0])
    assert manager.timely()
    manager.last_tick_start_ns = now[0]  # a tick whose scrape failed: still timely
    assert manager.timely()
    manager.last_tick_start_ns = now[0] - R
    assert manager.timely()
    manager.last_tick_start_ns = now[0] - 2 * R
    assert not manager.timely()
    # the boundary: more than 1.5 x resolution fails
    manager.last_tick_start_ns = now[0] - 3 * R // 2
    assert manager.timely()
    assert not manager.timely(now[0] + 1)


async def test_timely_after_real_tick() -> None:
    R = 60 * NS_PER_S
    now = [5_000 * NS_PER_S]
    manager = Manager(FakeScraper(), Store(R), list, R,  # type: ignore[arg-type]
                      monotonic_ns=lambda: now[0])
    await manager.tick()
    assert manager.last_tick_start_ns == now[0]
    assert manager.last_tick_start_wall_ns is not None
    now[0] += R
    assert manager.timely()
    now[0] += R
    assert not manager.timely()


# --------------------------------------------------------------------------------------------
# Proxies from the environment (Go's http.ProxyFromEnvironment)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypass"),
    [
        ("10.0.0.1", "", False),
        ("10.0.0.1", "*", True),
        ("10.0.0.1", "10.0.0.0/8", True),
        ("10.0.0.1", "10.0.0.1", True),
        ("10.0.0.1", "10.0.0.1:10250", True),
        ("10.0.0.2", "10.0.0.1, 192.168.0.0/16", False),
        ("node1.cluster.local", "cluster.local", True),
        ("cluster.local", "cluster.local", True),
        ("cluster.local", ".cluster.local", False),
        ("node1.cluster.local", ".cluster.local", True),
        ("node1.other", "cluster.local", False),
        ("fd00::1", "fd00::/8", True),
        ("[fd00::1]", "[fd00::1]:10250", True),
    ],
)
def test_no_proxy_matching(host: str, no_proxy: str, bypass: bool) -> None:
    from fastmetrics.scrape import _no_proxy

    assert _no_proxy(host, no_proxy) is bypass


def test_proxy_for_url() -> None:
    from yarl import URL

    from fastmetrics.scrape import _proxy_for

    proxies = {"https": "http://proxy:3128", "no": "10.0.0.0/8"}
    assert _proxy_for(URL("https://203.0.113.5:10250/metrics/resource"), proxies) == \
        "http://proxy:3128"
    assert _proxy_for(URL("https://10.1.2.3:10250/metrics/resource"), proxies) is None
    assert _proxy_for(URL("https://127.0.1.5:10250/metrics/resource"), proxies) is None  # loopback
    assert _proxy_for(URL("https://localhost:10250/x"), proxies) is None
    assert _proxy_for(URL("http://203.0.113.5:10255/x"), proxies) is None  # no HTTP_PROXY


async def test_loopback_is_never_proxied(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port('127.0.0.1')}")
    result = await make_scraper(config(farm.port, ca)).scrape(infos(farm, cluster), wall_ns)
    assert result.errors == {}


async def test_token_provider_failure_sends_no_token(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority, make_scraper: ScraperFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> str:
        raise OSError("token file unreadable")

    result = await make_scraper(config(farm.port, ca, token_provider=broken)).scrape(
        infos(farm, cluster), wall_ns)
    assert set(result.errors.values()) == {'request failed, status: "401 Unauthorized"'}
    assert any(r.getMessage() == "Failed to read the bearer token" for r in caplog.records)


# --------------------------------------------------------------------------------------------
# Scale: the store runs off the event loop; cut TLS connections are not loop errors
# --------------------------------------------------------------------------------------------


class SlowStore(Store):
    """Blocks for ``seconds`` inside store() (as a 5,000-node tick's store does) and records
    the thread it ran on."""

    def __init__(self, resolution_ns: int, seconds: float) -> None:
        super().__init__(resolution_ns)
        self.seconds = seconds
        self.threads: list[int] = []

    def store(self, batches: Any) -> Snapshot:
        import threading

        self.threads.append(threading.get_ident())
        time.sleep(self.seconds)  # holds no GIL while sleeping, as the kernels do
        return super().store(batches)


async def test_manager_stores_off_the_event_loop() -> None:
    import threading

    store = SlowStore(NS_PER_S, 0.3)
    manager = Manager(FakeScraper(), store, list, NS_PER_S)  # type: ignore[arg-type]
    gaps: list[float] = []
    loop = asyncio.get_running_loop()

    async def heartbeat() -> None:
        last = loop.time()
        for _ in range(40):  # bounded: 40 beats of 10 ms
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    snap = await manager.tick()
    await beat
    assert store.threads and store.threads[0] != threading.get_ident()
    assert snap is store.snapshot and manager.ticks == 1
    # the loop kept running while the store worked for 0.3 s
    assert max(gaps) < 0.2, max(gaps)


def test_quiet_tls_handler_downgrades_only_cut_tls_connections(
        caplog: pytest.LogCaptureFixture) -> None:
    from fastmetrics.scrape import _quiet_cut_tls_connections, _restore_exception_handler

    loop = asyncio.new_event_loop()
    try:
        seen: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        installed = _quiet_cut_tls_connections(loop)
        assert installed is loop
        assert _quiet_cut_tls_connections(loop) is None  # once per loop
        handler = loop.get_exception_handler()
        assert handler is not None
        with caplog.at_level(logging.DEBUG, logger="fastmetrics.scrape"):
            handler(loop, {"message": "Fatal error on SSL protocol",
                           "exception": ssl.SSLError(1, "[SSL: BAD_LENGTH] bad length")})
            # uvloop writing to the transport the timeout just closed
            handler(loop, {"message": "Fatal error on SSL protocol",
                           "exception": RuntimeError("unable to perform operation on "
                                                     "<TCPTransport closed=True>; the handler "
                                                     "is closed")})
        assert seen == []
        assert sum(r.getMessage() == "TLS connection closed with an error"
                   for r in caplog.records) == 2
        other = {"message": "Task exception was never retrieved",
                 "exception": RuntimeError("boom")}
        handler(loop, other)
        not_tls = {"message": "Fatal error on transport", "exception": RuntimeError("x")}
        handler(loop, not_tls)
        assert seen == [other, not_tls]  # everything else reaches the previous handler
        _restore_exception_handler(loop)
        assert not isinstance(loop.get_exception_handler(),
                              type(handler))
    finally:
        loop.close()


async def test_jittered_requests_start_in_order_without_a_task_per_node_up_front(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each node starts after its own jitter sleep (in jitter order), and the tick's start
    does not create every node's task and timer at once (a loop stall at 5,000 nodes)."""
    import random

    n = 60  # jitter window min(8 ms x 60, 4 s) = 480 ms
    nodes = [NodeInfo(f"n{i}", {}, (("InternalIP", "127.0.0.1"),), 10250, True)
             for i in range(n)]
    scraper = Scraper(KubeletClientConfig(), rng=random.Random(7))
    loop = asyncio.get_running_loop()
    started: dict[str, float] = {}
    alive: list[int] = []

    async def fake(node: NodeInfo, *args: Any) -> Any:
        started[node.name] = loop.time()
        alive.append(len(asyncio.all_tasks()))
        raise ScrapeError("no kubelet here", node=node.name)

    monkeypatch.setattr(scraper, "_scrape_node", fake)
    try:
        t0 = loop.time()
        result = await scraper.scrape(nodes, time.time_ns, deadline=t0 + 5.0)
    finally:
        await scraper.close()
    assert len(result.errors) == n and not result.batches
    rng = random.Random(7)  # the scraper's draws, replayed
    jitters = [rng.randrange(8 * n) for _ in range(n)]
    for i, node in enumerate(nodes):  # never before its jitter
        assert started[node.name] - t0 >= jitters[i] / 1000 - 0.002, node.name
    order = sorted(started, key=started.__getitem__)
    assert order == [nodes[i].name for i in sorted(range(n), key=jitters.__getitem__)] or (
        # equal start times may come in either order
        sorted(jitters) == [jitters[int(name[1:])] for name in order])
    # far fewer tasks alive than nodes: nodes are started when due, not all at once
    assert max(alive) < n // 2, max(alive)
    assert result.max_jitter_ms == max(jitters)


async def test_finished_node_tasks_are_let_go_during_the_tick(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's task is not kept until the tick ends once it finished (at 5,000 nodes the
    finished tasks, coroutines and contexts were ~30,000 objects every young collection of the
    tick walked again), and an unexpected exception in one still ends the scrape."""
    import random
    import weakref

    n = 40
    nodes = [NodeInfo(f"n{i}", {}, (("InternalIP", "127.0.0.1"),), 10250, True)
             for i in range(n)]
    scraper = Scraper(KubeletClientConfig(), rng=random.Random(3))
    refs: list[weakref.ref[asyncio.Task[Any]]] = []
    alive_at_start: list[int] = []

    async def fake(node: NodeInfo, *args: Any) -> Any:
        alive_at_start.append(sum(1 for r in refs if r() is not None))
        task = asyncio.current_task()
        assert task is not None
        refs.append(weakref.ref(task))
        raise ScrapeError("no kubelet here", node=node.name)

    monkeypatch.setattr(scraper, "_scrape_node", fake)
    try:
        result = await scraper.scrape(nodes, time.time_ns)
        assert len(result.errors) == n
        # when the last nodes start, the earlier (finished) tasks are gone
        assert max(alive_at_start[n // 2:]) < n // 4, alive_at_start

        class Boom(BaseException):
            """Not an Exception: not a node's failure, so it ends the scrape."""

        async def broken(node: NodeInfo, *args: Any) -> Any:
            raise Boom

        monkeypatch.setattr(scraper, "_scrape_node", broken)
        with pytest.raises(Boom):
            await asyncio.wait_for(scraper.scrape(nodes[:3], time.time_ns), 5.0)
    finally:
        await scraper.close()


async def test_manager_pauses_gc_during_the_tick_and_freezes_what_it_leaves() -> None:
    """Automatic collection is off while a tick scrapes and stores (no collection walks the
    per-node objects in flight, in any thread) and back on after; what the tick leaves alive
    is frozen at its end, so young collections between ticks do not walk it either."""
    import gc

    seen: list[bool] = []

    class Watching(FakeScraper):
        async def scrape(self, nodes: Sequence[NodeInfo], fn: Callable[[], int], *,
                         deadline: float | None = None) -> ScrapeResult:
            seen.append(gc.isenabled())
            self.left = [object() for _ in range(100)] + [[] for _ in range(100)]
            return ScrapeResult.empty()

    gc.unfreeze()
    assert gc.isenabled()
    try:
        scraper = Watching()
        manager = Manager(scraper, Store(NS_PER_S), list, NS_PER_S)  # type: ignore[arg-type]
        await manager.tick()
        assert seen == [False] and gc.isenabled()
        assert gc.get_freeze_count() > 0
        young = {id(o) for g in (0, 1, 2) for o in gc.get_objects(generation=g)}
        assert not any(id(x) in young for x in scraper.left[100:])  # frozen, not young
        off = Manager(Watching(), Store(NS_PER_S), list, NS_PER_S)  # type: ignore[arg-type]
        off.gc_refreeze_ticks = 0  # the policy off: collection stays on, nothing frozen
        gc.unfreeze()
        await off.tick()
        assert seen[-1] is True and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
        gc.enable()


async def test_manager_freezes_long_lived_objects_after_the_first_real_tick() -> None:
    """After the first tick that scraped a node, garbage is collected once and what is alive
    is frozen out of the cyclic GC (at 5,000 nodes a full collection over the connections'
    and decoders' objects took ~210 ms on the loop); again every gc_refreeze_ticks ticks."""
    import gc

    from fastmetrics.decode import decode

    body = (b'node_cpu_usage_seconds_total 10 1767225600000\n'
            b'node_memory_working_set_bytes 1e9 1767225600000\n'
            b'container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"} 1 '
            b'1767225600000\n'
            b'container_memory_working_set_bytes{container="c",namespace="n",pod="p"} 1e6 '
            b'1767225600000\n')

    class OneNode(FakeScraper):
        async def scrape(self, nodes: Sequence[NodeInfo], fn: Callable[[], int], *,
                         deadline: float | None = None) -> ScrapeResult:
            batch = decode(body, default_timestamp_ns=0)
            return ScrapeResult([("n1", batch)], ["n1"], np.ones(1, np.bool_),
                                np.zeros(1), np.zeros(1), {})

    gc.unfreeze()
    try:
        idle = Manager(FakeScraper(), Store(NS_PER_S), list, NS_PER_S)  # type: ignore[arg-type]
        await idle.tick()  # nothing scraped: no full collection yet
        assert idle._frozen_tick is None
        manager = Manager(OneNode(), Store(NS_PER_S), list, NS_PER_S)  # type: ignore[arg-type]
        manager.gc_refreeze_ticks = 3
        await manager.tick()
        assert gc.get_freeze_count() > 0 and manager._frozen_tick == 1
        await manager.tick()
        assert manager._frozen_tick == 1  # not every tick
        await manager.tick()
        await manager.tick()  # the third tick after the freeze: collected and frozen again
        assert manager._frozen_tick == 4
        # a process that never scrapes still gets its periodic full collection
        never = Manager(FakeScraper(), Store(NS_PER_S), list, NS_PER_S)  # type: ignore[arg-type]
        never.gc_refreeze_ticks = 2
        await never.tick()
        assert never._frozen_tick is None
        await never.tick()
        assert never._frozen_tick == 2
        off = Manager(OneNode(), Store(NS_PER_S), list, NS_PER_S)  # type: ignore[arg-type]
        off.gc_refreeze_ticks = 0
        gc.unfreeze()
        await off.tick()
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


# --------------------------------------------------------------------------------------------
# CollectorThread: the tick loop on a thread and event loop of its own
# --------------------------------------------------------------------------------------------


class ThreadRecordingMetrics(ServerMetrics):
    """Records the thread each tick observation ran on."""

    def __init__(self) -> None:
        super().__init__(0.3, process=False)
        self.threads: list[int] = []

    def observe_tick(self, duration_s: float) -> None:
        import threading

        self.threads.append(threading.get_ident())
        super().observe_tick(duration_s)


async def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_collector_thread_scrapes_off_the_serving_loop(
    farm: KubeletFarm, cluster: Cluster, ca: CertAuthority,
) -> None:
    """Ticks run on the collector's own thread and loop against real kubelets; the node list
    is read and the metrics are updated on the caller's loop; stop() cancels, closes the
    kubelet connections and joins the thread."""
    import threading

    from fastmetrics.scrape import CollectorThread

    R = 0.3
    main = threading.get_ident()
    nodes = infos(farm, cluster)
    listed_on: list[int] = []

    def nodes_fn() -> list[NodeInfo]:
        listed_on.append(threading.get_ident())
        return nodes

    store = Store(int(R * NS_PER_S))
    metrics = ThreadRecordingMetrics()
    scraper = Scraper(config(farm.port, ca), resolution_ns=int(R * NS_PER_S))
    collector = CollectorThread(scraper, store, nodes_fn, int(R * NS_PER_S), metrics)
    assert collector.timely()  # nothing started yet
    collector.start()
    try:
        await wait_until(lambda: len(metrics.threads) >= 3)
        manager = collector.manager
        assert manager is not None and manager.ticks >= 3
        assert store.ready() and set(store.snapshot.node_names) == {n.name for n in nodes}
        assert listed_on and set(listed_on) == {main}
        assert set(metrics.threads) == {main}
        assert metrics.request_count(True) >= 3 * len(nodes)
        assert collector.timely()
        assert collector._thread.is_alive() and collector._thread.ident != main
    finally:
        t0 = time.monotonic()
        await asyncio.wait_for(collector.stop(), 5.0)
    assert time.monotonic() - t0 < 2.0
    assert not collector._thread.is_alive()
    assert scraper._closed and scraper._session is None
    await asyncio.wait_for(collector.wait(), 1.0)  # stopped: no exception


async def test_collector_thread_stop_right_after_start_and_never_started() -> None:
    from fastmetrics.scrape import CollectorThread

    scraper = FakeScraper([10.0])  # a first tick that would take 10 s
    collector = CollectorThread(scraper, Store(NS_PER_S), list,  # type: ignore[arg-type]
                                NS_PER_S)
    collector.start()
    t0 = time.monotonic()
    await asyncio.wait_for(collector.stop(), 5.0)
    assert time.monotonic() - t0 < 2.0
    assert not collector._thread.is_alive()
    await asyncio.wait_for(collector.wait(), 1.0)
    assert scraper.closed
    idle = CollectorThread(FakeScraper(), Store(NS_PER_S), list,  # type: ignore[arg-type]
                           NS_PER_S)
    await asyncio.wait_for(idle.stop(), 1.0)  # never started: nothing to join


class FailingStore(Store):
    def store(self, batches: Any) -> Snapshot:
        raise RuntimeError("store broke")


async def test_collector_thread_failure_reaches_wait() -> None:
    """What ends the tick loop on the collector's thread is raised by wait() on the caller's
    loop (the server then exits with it)."""
    from fastmetrics.scrape import CollectorThread

    collector = CollectorThread(FakeScraper(), FailingStore(NS_PER_S), list,  # type: ignore[arg-type]
                                NS_PER_S)
    collector.start()
    try:
        with pytest.raises(RuntimeError, match="store broke"):
            await asyncio.wait_for(collector.wait(), 5.0)
    finally:
        await asyncio.wait_for(collector.stop(), 5.0)
    assert not collector._thread.is_alive()


async def test_collector_thread_node_list_timeout_is_an_empty_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A caller's loop too busy to read the node list within the bound: the tick logs it and
    goes on with no nodes, as with any node-list failure."""
    from fastmetrics.scrape import CollectorThread

    scraper = FakeScraper()
    store = RecordingStore(NS_PER_S)

    def slow_nodes() -> list[NodeInfo]:
        time.sleep(0.4)  # blocks the caller's loop past the collector's bound
        return []

    caplog.set_level(logging.ERROR, logger="fastmetrics.scrape")
    collector = CollectorThread(scraper, store, slow_nodes, NS_PER_S,  # type: ignore[arg-type]
                                nodes_timeout_s=0.1)
    collector.start()
    try:
        await wait_until(lambda: len(store.stored) >= 1, 5.0)
    finally:
        await asyncio.wait_for(collector.stop(), 5.0)
    assert store.stored[0] == []
    failed = [r for r in caplog.records if r.getMessage() == "Failed to list nodes"]
    assert failed and "not read within 0.1s" in failed[0].err  # type: ignore[attr-defined]
