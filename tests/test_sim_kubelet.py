"""Tests for the simulated kubelets (``fastmetrics.sim.kubelet.KubeletFarm``).

Everything runs over real HTTPS on loopback addresses (127.0.1.x) and ports picked at run time.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import random
import resource
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastmetrics.decode import DecodeError, Decoder
from fastmetrics.sim.certs import CertAuthority, KeyPair, client_context
from fastmetrics.sim.exposition import format_go_float, render_resource_metrics
from fastmetrics.sim.kubelet import (
    CONTENT_TYPE,
    METRICS_PATH,
    KubeletFarm,
    free_port,
    go_float,
)
from fastmetrics.sim.model import NS_PER_S, Cluster, ClusterShape, NodeModel

TOKEN = "sim-metrics-server-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "identity"}
TIMEOUT = aiohttp.ClientTimeout(total=10)

Sample = tuple[float, int]  # value, timestamp ms


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki", "cluster")


@pytest.fixture
def cluster() -> Cluster:
    return Cluster(ClusterShape(nodes=4, pods_per_node=6, containers_per_pod=2, seed=11))


@pytest.fixture
async def farm(cluster: Cluster, ca: CertAuthority) -> AsyncIterator[KubeletFarm]:
    f = KubeletFarm(cluster, ca, 0, tokens=[TOKEN], stats_interval_s=0.05)
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


def session_for(ca: CertAuthority, pair: KeyPair | None = None, *,
                headers: dict[str, str] | None = None, **kwargs: object) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(ssl=client_context(ca.cert_file, pair))
    return aiohttp.ClientSession(connector=connector, timeout=TIMEOUT,
                                 headers=HEADERS if headers is None else headers,
                                 **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def client(ca: CertAuthority) -> AsyncIterator[aiohttp.ClientSession]:
    async with session_for(ca) as s:
        yield s


async def get(client: aiohttp.ClientSession, url: str, **kwargs: object) -> tuple[int, bytes]:
    async with client.get(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.read()


def parse(body: bytes) -> dict[str, dict[tuple[str, ...], Sample]]:
    """Sample name -> label values (sorted label names) -> (value, timestamp ms)."""
    out: dict[str, dict[tuple[str, ...], Sample]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            key = tuple(s.labels[k] for k in sorted(s.labels))
            ts = -1 if s.timestamp is None else round(float(s.timestamp) * 1000)
            out.setdefault(s.name, {})[key] = (s.value, ts)
    return out


def expected_containers(node: NodeModel) -> set[tuple[str, str, str]]:
    """(container, namespace, pod) of every container the kubelet reports."""
    return {(c.name, p.namespace, p.name) for p in node.pods for c in p.containers}


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# The body against the model
# --------------------------------------------------------------------------------------------


async def test_scrape_matches_model(farm: KubeletFarm, cluster: Cluster,
                                    client: aiohttp.ClientSession) -> None:
    node = cluster.nodes[1]
    async with client.get(farm.url(node.name)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE
        body = await resp.read()
    m = parse(body)

    cpu = m["container_cpu_usage_seconds_total"]
    memory = m["container_memory_working_set_bytes"]
    start = m["container_start_time_seconds"]
    assert set(cpu) == set(memory) == set(start) == expected_containers(node)
    assert set(m["container_swap_usage_bytes"]) == set(cpu)
    stats_ms = farm.stats_time_ns(node.name) // 1_000_000  # type: ignore[operator]
    for p in node.pods:
        for c in p.containers:
            key = (c.name, p.namespace, p.name)
            value, ts = cpu[key]
            assert stats_ms - 50 < ts <= stats_ms
            assert memory[key] == (c.memory_bytes, ts)
            assert value == pytest.approx(c.cpu_seconds_at(ts * 1_000_000), abs=1e-9)
            assert value > 0
            assert start[key][0] == pytest.approx(c.start_time_ns / NS_PER_S, abs=1e-6)
            assert start[key][1] == -1  # no timestamp on start times (kubelet >= 1.29)
            assert m["container_swap_usage_bytes"][key] == (0, ts)
        pod_cpu, pod_ts = m["pod_cpu_usage_seconds_total"][(p.namespace, p.name)]
        own = sum(c.cpu_seconds_at(pod_ts * 1_000_000) for c in p.containers)
        assert own < pod_cpu < own + 0.001 * (pod_ts / 1000 - p.creation_ns / NS_PER_S)
        pod_mem = m["pod_memory_working_set_bytes"][(p.namespace, p.name)][0]
        assert p.memory_bytes < pod_mem < p.memory_bytes + 1024 * 1024
    node_cpu, node_ts = m["node_cpu_usage_seconds_total"][()]
    assert node_cpu == pytest.approx(node.cpu_seconds_at(node_ts * 1_000_000), abs=1e-6)
    assert m["node_memory_working_set_bytes"][()] == (node.memory_bytes, node_ts)
    assert m["node_swap_usage_bytes"][()] == (0, node_ts)
    assert m["resource_scrape_error"][()] == (0, -1)


async def test_rates_equal_model(farm: KubeletFarm, cluster: Cluster,
                                 client: aiohttp.ClientSession) -> None:
    """Two scrapes 0.3 s apart give exactly the model's rates, from the samples' timestamps."""
    node = cluster.nodes[0]
    _, first = await get(client, farm.url(node.name))
    await asyncio.sleep(0.3)
    _, second = await get(client, farm.url(node.name))
    a, b = parse(first), parse(second)
    checked = 0
    for p in node.pods:
        for c in p.containers:
            key = (c.name, p.namespace, p.name)
            (v1, t1), (v2, t2) = (x["container_cpu_usage_seconds_total"][key] for x in (a, b))
            assert t2 - t1 >= 250
            rate = (v2 - v1) / ((t2 - t1) / 1000) * 1e9
            assert rate == pytest.approx(c.cpu_nanocores, rel=1e-6, abs=10)
            checked += 1
    assert checked == 12
    (v1, t1), (v2, t2) = (x["node_cpu_usage_seconds_total"][()] for x in (a, b))
    rate = (v2 - v1) / ((t2 - t1) / 1000) * 1e9
    assert rate == pytest.approx(node.cpu_nanocores, rel=1e-6, abs=10)


async def test_body_is_byte_exact(farm: KubeletFarm, cluster: Cluster,
                                  client: aiohttp.ClientSession) -> None:
    node = cluster.nodes[2]
    _, body = await get(client, farm.url(node.name))
    assert body == render_resource_metrics(*farm.samples(node.name))
    lines = body.decode().splitlines()
    assert lines[0] == ("# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time "
                        "consumed by the container in core-seconds")
    assert lines[1] == "# TYPE container_cpu_usage_seconds_total counter"
    families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert families == sorted(families)
    assert families == [
        "container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
        "container_start_time_seconds", "container_swap_usage_bytes",
        "node_cpu_usage_seconds_total", "node_memory_working_set_bytes",
        "node_swap_usage_bytes", "pod_cpu_usage_seconds_total",
        "pod_memory_working_set_bytes", "pod_swap_usage_bytes", "resource_scrape_error",
    ]
    assert body.endswith(b"\nresource_scrape_error 0\n")


def edge_cluster() -> Cluster:
    """Restarts, zeros, fresh containers, non-Running pods, an empty pod, odd label values."""
    cl = Cluster(ClusterShape(nodes=2, pods_per_node=8, containers_per_pod=3, seed=5))
    n0 = cl.nodes[0].name
    p = cl.nodes[0].pods
    cl.restart_container(p[0].namespace, p[0].name, p[0].containers[1].name, ago_ns=3 * NS_PER_S)
    cl.set_zero(p[1].namespace, p[1].name, p[1].containers[0].name)
    cl.add_pod("default", "fresh-job", n0, {}, ["worker"], started_ago_ns=12 * NS_PER_S)
    cl.add_pod("default", "pending-pod", n0, {}, ["app"], phase="Pending",
               started_ago_ns=5 * NS_PER_S)
    cl.add_pod("default", "empty-pod", n0, {}, [])
    cl.add_pod('we"ird\\ns', "pod\nname", n0, {}, ["c\\1"], started_ago_ns=100 * NS_PER_S)
    cl.add_pod("default", "future", n0, {}, ["later"], started_ago_ns=-5 * NS_PER_S)
    return cl


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_render_equals_reference(ca: CertAuthority, seed: int) -> None:
    """The fast path is byte-identical to render_resource_metrics over samples()."""
    clusters = [edge_cluster(), Cluster(ClusterShape(nodes=3, pods_per_node=40, seed=seed)),
                Cluster(ClusterShape(nodes=1, pods_per_node=0, seed=seed))]
    for cl in clusters:
        farm = KubeletFarm(cl, ca, 0)  # render() and samples() need no start()
        now = cl.clock()
        for step in range(3):
            t = now + step * 15 * NS_PER_S + seed * 7_777_777
            for node in cl.nodes:
                fast = farm.render(node.name, t)
                assert fast == render_resource_metrics(*farm.samples(node.name, t)), node.name
        # layout changes are picked up
        node = cl.nodes[0]
        cl.add_pod("zz", "late", node.name, {}, ["a", "b"], started_ago_ns=60 * NS_PER_S)
        cl.delete_pod(node.pods[0].namespace, node.pods[0].name)
        assert farm.render(node.name, now) == render_resource_metrics(
            *farm.samples(node.name, now))


def test_go_float_matches_format_go_float(rand: random.Random) -> None:
    values = [0.0, -0.0, 1.0, -1.0, 1e-4, 9.99e-5, 1e6, 999999.9999999999, 1e16, 9.999e15,
              1.7672200002499998e9, 12533760.0, 0.5, 123.0, math.inf, -math.inf, math.nan,
              5e-324, 1.7976931348623157e308, 2.0**53, 1e300, -3.5]
    for _ in range(20_000):
        e = rand.uniform(-8, 18)
        values.append(rand.random() * 10**e)
        values.append(float(rand.randrange(1, 10**rand.randint(1, 17))))
        values.append(rand.randrange(1, 10**rand.randint(1, 16)) / NS_PER_S)
    for v in values:
        assert go_float(v) == format_go_float(v), repr(v)


async def test_decoder_reads_body(farm: KubeletFarm, cluster: Cluster,
                                  client: aiohttp.ClientSession) -> None:
    node = cluster.nodes[3]
    _, body = await get(client, farm.url(node.name))
    batch = Decoder().decode(body, time.time_ns())
    assert batch.node is not None
    assert batch.node.memory_bytes == node.memory_bytes
    node_ts = batch.node.timestamp_ns
    assert abs(batch.node.cpu_nanocore_seconds - node.cpu_seconds_at(node_ts) * 1e9) < 1e4
    rows = {(ns, pod, c): rest for ns, pod, c, *rest in batch.containers()}
    assert set(rows) == {(p.namespace, p.name, c.name) for p in node.pods for c in p.containers}
    for p in node.pods:
        for c in p.containers:
            ts, start, cpu, memory = rows[(p.namespace, p.name, c.name)]
            assert ts % 1_000_000 == 0
            assert memory == c.memory_bytes
            assert abs(cpu - (ts - c.start_time_ns) * c.cpu_nanocores // NS_PER_S) <= 1
            assert abs(start - c.start_time_ns) < 1_000
    assert batch.dropped_pods == 0


# --------------------------------------------------------------------------------------------
# Authentication and routing
# --------------------------------------------------------------------------------------------


async def test_authentication(farm: KubeletFarm, cluster: Cluster, ca: CertAuthority,
                              client: aiohttp.ClientSession) -> None:
    url = farm.url(cluster.nodes[0].name)
    async with session_for(ca, headers={}) as anonymous:
        status, body = await get(anonymous, url)
        assert (status, body) == (401, b"Unauthorized\n")
        status, _ = await get(anonymous, url, headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _ = await get(anonymous, url, headers={"Authorization": f"Basic {TOKEN}"})
        assert status == 401
    # a client certificate from the cluster CA is enough (no token)
    pair = ca.issue("metrics-server-client", "system:metrics-server", client=True)
    async with session_for(ca, pair, headers={}) as with_cert:
        status, body = await get(with_cert, url)
        assert status == 200
        assert b"container_cpu_usage_seconds_total{" in body
    # a client certificate from another CA fails the handshake
    other = CertAuthority(ca.directory / "other", "other")
    stranger = other.issue("stranger", "stranger", client=True)
    async with session_for(ca, stranger, headers={}) as bad_cert:
        with pytest.raises(aiohttp.ClientError):
            await get(bad_cert, url)
    status, _ = await get(client, url)
    assert status == 200


async def test_other_paths(farm: KubeletFarm, cluster: Cluster, ca: CertAuthority,
                           client: aiohttp.ClientSession) -> None:
    base = farm.url(cluster.nodes[0].name, "")
    assert farm.url(cluster.nodes[0].name) == base + METRICS_PATH
    assert base == f"https://{cluster.nodes[0].address}:{farm.port}"
    for path in ("/metrics", "/stats/summary", "/", "/metrics/resource/v1alpha1"):
        assert (await get(client, base + path))[0] == 404
    async with session_for(ca, headers={}) as anonymous:
        assert (await get(anonymous, base + "/metrics"))[0] == 401
    async with client.post(base + METRICS_PATH) as resp:
        assert resp.status == 405


async def test_nodes_told_apart_by_address(farm: KubeletFarm, cluster: Cluster,
                                           client: aiohttp.ClientSession) -> None:
    assert len({n.address for n in cluster.nodes}) == 4
    bodies = {}
    for node in cluster.nodes:
        assert node.address.startswith("127.0.1.")
        _, body = await get(client, farm.url(node.name))
        assert set(parse(body)["container_cpu_usage_seconds_total"]) == expected_containers(node)
        bodies[node.name] = body
    assert len(set(bodies.values())) == 4


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


async def test_fault_slow(farm: KubeletFarm, cluster: Cluster,
                          client: aiohttp.ClientSession) -> None:
    name = cluster.nodes[0].name
    cluster.set_faults(name, {"slow"})
    with pytest.raises(asyncio.TimeoutError):
        await get(client, farm.url(name), timeout=aiohttp.ClientTimeout(total=0.3))
    assert farm.pending_slow == 1
    assert (await get(client, farm.url(cluster.nodes[1].name)))[0] == 200  # others unaffected


async def test_fault_garbage(farm: KubeletFarm, cluster: Cluster,
                             client: aiohttp.ClientSession) -> None:
    name = cluster.nodes[0].name
    cluster.set_faults(name, {"garbage"})
    status, body = await get(client, farm.url(name))
    assert status == 200
    with pytest.raises(DecodeError):
        Decoder().decode(body, time.time_ns())


@pytest.mark.parametrize(("fault", "status"), [("http500", 500), ("unauthorized", 401)])
async def test_fault_status(farm: KubeletFarm, cluster: Cluster,
                            client: aiohttp.ClientSession, fault: str, status: int) -> None:
    name = cluster.nodes[2].name
    cluster.set_faults(name, {fault})
    assert (await get(client, farm.url(name)))[0] == status
    cluster.set_faults(name, set())
    assert (await get(client, farm.url(name)))[0] == 200


async def test_fault_tls_from_start(cluster: Cluster, ca: CertAuthority,
                                    client: aiohttp.ClientSession) -> None:
    bad = cluster.nodes[1].name
    cluster.set_faults(bad, {"tls"})
    async with KubeletFarm(cluster, ca, 0, tokens=[TOKEN]) as farm:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(client, farm.url(bad))
        assert (await get(client, farm.url(cluster.nodes[0].name)))[0] == 200
        # it is a working TLS server, only with a certificate nobody trusts
        async with aiohttp.ClientSession(headers=HEADERS, timeout=TIMEOUT) as insecure:
            assert (await get(insecure, farm.url(bad), ssl=False))[0] == 200
        await farm.set_faults(bad, set())
        assert (await get(client, farm.url(bad)))[0] == 200


async def test_fault_tls_set_later(farm: KubeletFarm, cluster: Cluster,
                                   client: aiohttp.ClientSession) -> None:
    name = cluster.nodes[3].name
    assert (await get(client, farm.url(name)))[0] == 200  # a kept-alive connection exists
    cluster.set_faults(name, {"tls"})  # behind the farm's back
    with pytest.raises(aiohttp.ClientError):
        await get(client, farm.url(name))
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(client, farm.url(name))
    await farm.set_faults(name, set())
    assert (await get(client, farm.url(name)))[0] == 200
    await farm.set_faults(name, {"tls"})
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(client, farm.url(name))


async def test_stop_is_prompt_with_slow_request(cluster: Cluster, ca: CertAuthority,
                                                client: aiohttp.ClientSession) -> None:
    cluster.set_faults(cluster.nodes[0].name, {"slow"})
    farm = KubeletFarm(cluster, ca, 0, tokens=[TOKEN])
    await farm.start()
    try:
        task = asyncio.create_task(get(client, farm.url(cluster.nodes[0].name)))
        await wait_until(lambda: farm.pending_slow == 1)
    finally:
        t0 = time.monotonic()
        await farm.stop()
        elapsed = time.monotonic() - t0
    assert elapsed < 2.5  # the runner would wait 5 s for a handler that was not released
    try:
        status, _ = await asyncio.wait_for(task, 5)
        assert status == 503
    except aiohttp.ClientError:
        pass  # the connection was closed before the answer arrived: fine too
    assert farm.pending_slow == 0
    # every socket is closed: the port is free again on every node address
    for node in cluster.nodes:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((node.address, farm.port))


# --------------------------------------------------------------------------------------------
# Model changes show up
# --------------------------------------------------------------------------------------------


class FakeClock:
    """An injectable ns clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * NS_PER_S)


async def test_model_changes_show_up(ca: CertAuthority) -> None:
    clock = FakeClock()
    cluster = Cluster(ClusterShape(nodes=2, pods_per_node=4, seed=3), clock=clock)
    node = cluster.nodes[0]
    restarted_pod = node.pods[0]
    restarted = restarted_pod.containers[0]
    zero_pod = node.pods[1]
    zero = zero_pod.containers[1]
    async with (KubeletFarm(cluster, ca, 0, tokens=[TOKEN], stats_interval_s=10) as farm,
                session_for(ca) as client):
        _, before = await get(client, farm.url(node.name))
        clock.advance(15)
        cluster.restart_container(restarted_pod.namespace, restarted_pod.name, restarted.name,
                                  ago_ns=2 * NS_PER_S)
        cluster.set_zero(zero_pod.namespace, zero_pod.name, zero.name)
        fresh = cluster.add_pod("default", "batch-job-7kq4t", node.name, {"app": "job"},
                                ["worker"], started_ago_ns=12 * NS_PER_S)
        cluster.add_pod("default", "init-pod", node.name, {}, ["init"], phase="Pending",
                        started_ago_ns=NS_PER_S)
        _, body = await get(client, farm.url(node.name))
    assert farm.stats_time_ns(node.name) == clock.now
    stats_ms = clock.now // 1_000_000
    old, m = parse(before), parse(body)
    cpu, memory = m["container_cpu_usage_seconds_total"], m["container_memory_working_set_bytes"]
    start = m["container_start_time_seconds"]

    # restart: a new start time 2 s before the stats time, the counter started again from 0
    key = (restarted.name, restarted_pod.namespace, restarted_pod.name)
    assert start[key][0] == pytest.approx(restarted.start_time_ns / NS_PER_S, abs=1e-6)
    assert start[key][0] > old["container_start_time_seconds"][key][0]
    value, ts = cpu[key]
    age = ts / 1000 - start[key][0]
    assert 1.95 < age <= 2.0
    assert value == pytest.approx(restarted.cpu_nanocores * age / NS_PER_S, rel=1e-3, abs=1e-6)
    assert value < old["container_cpu_usage_seconds_total"][key][0]

    # zero: cpu and memory 0, stamped with the stats time; the start time stays
    key = (zero.name, zero_pod.namespace, zero_pod.name)
    assert cpu[key] == (0.0, stats_ms) and memory[key] == (0.0, stats_ms)
    assert start[key] == old["container_start_time_seconds"][key]
    assert m["container_swap_usage_bytes"][key] == (0.0, stats_ms)

    # fresh: started 10-12 s before its sample, counter = rate x age
    c = fresh.containers[0]
    key = ("worker", "default", "batch-job-7kq4t")
    value, ts = cpu[key]
    age = ts / 1000 - start[key][0]
    assert 9.95 < age <= 12.0
    assert value == pytest.approx(c.cpu_nanocores * age / NS_PER_S, rel=1e-3, abs=1e-6)
    assert key not in old["container_cpu_usage_seconds_total"]

    # a pod that is not Running is still reported by the kubelet
    assert ("init", "default", "init-pod") in cpu
    assert ("default", "init-pod") in m["pod_cpu_usage_seconds_total"]

    # and the body is still exactly the reference rendering
    assert body == render_resource_metrics(*farm.samples(node.name))


async def test_deleted_pod_disappears(farm: KubeletFarm, cluster: Cluster,
                                      client: aiohttp.ClientSession) -> None:
    node = cluster.nodes[0]
    gone = node.pods[2]
    _, body = await get(client, farm.url(node.name))
    assert f'pod="{gone.name}"'.encode() in body
    cluster.delete_pod(gone.namespace, gone.name)
    await asyncio.sleep(0.06)  # stats interval 0.05 s
    _, body = await get(client, farm.url(node.name))
    assert gone.name.encode() not in body
    assert set(parse(body)["container_cpu_usage_seconds_total"]) == expected_containers(node)


# --------------------------------------------------------------------------------------------
# Caching, gzip, counters
# --------------------------------------------------------------------------------------------


async def test_cache_and_gzip(cluster: Cluster, ca: CertAuthority) -> None:
    async with KubeletFarm(cluster, ca, 0, tokens=[TOKEN], stats_interval_s=3600) as farm:
        url = farm.url(cluster.nodes[0].name)
        async with session_for(ca, auto_decompress=False) as raw_client:
            async with raw_client.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Encoding"] == "gzip"
                assert resp.headers["Content-Type"] == CONTENT_TYPE
                compressed = await resp.read()
            assert compressed[:2] == b"\x1f\x8b"
            async with raw_client.get(url) as resp:  # identity, from the same stats
                assert "Content-Encoding" not in resp.headers
                plain = await resp.read()
            async with raw_client.get(url, headers={"Accept-Encoding": "br, gzip;q=0"}) as resp:
                assert "Content-Encoding" not in resp.headers
                assert await resp.read() == plain
        assert gzip.decompress(compressed) == plain
        assert len(compressed) * 4 < len(plain)
        assert farm.stats()[cluster.nodes[0].name].renders == 1  # fresh stats are cached
        async with session_for(ca, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            _, body = await get(client, url)  # aiohttp asks for gzip and decompresses
        assert body == plain
        assert farm.renders == 1
        assert plain == render_resource_metrics(*farm.samples(cluster.nodes[0].name))


async def test_stats_interval(ca: CertAuthority) -> None:
    clock = FakeClock()
    cluster = Cluster(ClusterShape(nodes=2, pods_per_node=3), clock=clock)
    name = cluster.nodes[0].name
    async with (KubeletFarm(cluster, ca, 0, tokens=[TOKEN], stats_interval_s=10) as farm,
                session_for(ca) as client):
        url = farm.url(name)
        _, a = await get(client, url)
        t = farm.stats_time_ns(name)
        assert t == clock.now
        clock.advance(9.999)
        _, b = await get(client, url)
        assert a == b  # still fresh: the cached body
        assert farm.renders == 1
        clock.advance(0.001)
        _, c = await get(client, url)
        assert c != a
        assert farm.stats_time_ns(name) == t + 10 * NS_PER_S
        assert farm.renders == 2
        # the other node renders on its own schedule
        assert farm.stats_time_ns(cluster.nodes[1].name) is None


async def test_counters(farm: KubeletFarm, cluster: Cluster, ca: CertAuthority,
                        client: aiohttp.ClientSession) -> None:
    a, b = cluster.nodes[0].name, cluster.nodes[1].name
    served = 0
    for _ in range(3):
        status, body = await get(client, farm.url(a))
        assert status == 200
        served += len(body)
    async with session_for(ca, headers={"Accept-Encoding": "identity"}) as anonymous:
        status, body = await get(anonymous, farm.url(a))
        assert status == 401
        served += len(body)
    status, body = await get(client, farm.url(b, "/nope"))
    assert status == 404
    stats = farm.stats()
    assert set(stats) == {n.name for n in cluster.nodes}
    assert stats[a].requests == 4
    assert stats[a].by_status == {200: 3, 401: 1}
    assert stats[a].bytes_served == served
    assert stats[b].requests == 1 and stats[b].by_status == {404: 1}
    assert stats[cluster.nodes[2].name].requests == 0
    assert farm.requests == 5
    assert farm.bytes_served == served + len(body)


# --------------------------------------------------------------------------------------------
# Sockets and limits
# --------------------------------------------------------------------------------------------


async def test_sockets_ports_and_limits(cluster: Cluster, ca: CertAuthority) -> None:
    port = free_port()
    assert 0 < port < 65536
    blocker = socket.socket()
    try:
        blocker.bind((cluster.nodes[2].address, port))
        blocker.listen(1)
        farm = KubeletFarm(cluster, ca, port, tokens=[TOKEN])
        with pytest.raises(OSError, match=rf"{cluster.nodes[2].address}:{port}"):
            await farm.start()
    finally:
        blocker.close()
    async with KubeletFarm(cluster, ca, port, tokens=[TOKEN]) as farm:
        assert farm.port == port
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert soft == hard or hard == resource.RLIM_INFINITY
        async with session_for(ca) as client:
            for node in cluster.nodes:
                assert (await get(client, f"https://{node.address}:{port}{METRICS_PATH}"))[0] \
                    == 200
    with pytest.raises(ValueError, match="port"):
        KubeletFarm(cluster, ca, 70000)
    with pytest.raises(ValueError, match="stats_interval_s"):
        KubeletFarm(cluster, ca, 0, stats_interval_s=-1)


@pytest.mark.parametrize("nodes_per_cert", [1, 3])
async def test_certificate_grouping(ca: CertAuthority, nodes_per_cert: int) -> None:
    cl = Cluster(ClusterShape(nodes=5, pods_per_node=1))
    async with (KubeletFarm(cl, ca, 0, tokens=[TOKEN], nodes_per_cert=nodes_per_cert,
                            cert_dir=ca.directory / f"g{nodes_per_cert}") as farm,
                session_for(ca) as client):
        for node in cl.nodes:  # hostname (IP SAN) verification passes on every node
            assert (await get(client, farm.url(node.name)))[0] == 200
    certs = list((ca.directory / f"g{nodes_per_cert}").glob("kubelet-*.crt"))
    assert len(certs) == math.ceil(5 / nodes_per_cert)
