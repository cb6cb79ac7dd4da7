"""Long pod lists through the HTTP routes: built off the event loop from the snapshot's columns,
written in chunks, byte for byte what the object-by-object path serves (SPEC §5.1-§5.4).

The app is the metrics.k8s.io routes alone (``add_routes``); a real ``Snapshot`` takes the
columnar path and the same snapshot behind a plain wrapper (only ``pod``/``node``) takes the
object path, so the two bodies of each request can be compared.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fastmetrics._batch import DecodedBatch, KeyTable, NodePoint
from fastmetrics.api import handlers, render
from fastmetrics.api.handlers import MetricsAPI, add_routes
from fastmetrics.cluster import Labels
from fastmetrics.monitoring import ServerMetrics
from fastmetrics.store import NodeUsage, PodUsage, Snapshot, Store

S = 1_000_000_000
T0 = 1_767_225_600 * S
NOW = T0 + 40 * S
P = "/apis/metrics.k8s.io/v1beta1"
PB = "application/vnd.kubernetes.protobuf"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
NAMESPACES = ("default", "kube-system", "zeta")


def _snapshot(n_pods: int) -> Snapshot:
    """Two ticks of two nodes; every pod has two containers (one is dropped for pod 7)."""
    keys = [KeyTable(), KeyTable()]
    rows: list[list[tuple[str, str, str]]] = [[], []]
    for i in range(n_pods):
        for c in ("app", "side<car>"):
            rows[i % 2].append((NAMESPACES[i % 3], f"pod-{i:04d}", c))

    def batch(node: int, k: int) -> DecodedBatch:
        r = rows[node]
        ids = [keys[node].intern(*x) for x in r]
        n = len(r)
        cpu = np.arange(n, dtype=np.uint64) * np.uint64(10**7) * np.uint64(k)
        if k == 2 and node == 1:
            cpu[[j for j, x in enumerate(r) if x[1] == "pod-0007"]] = 0  # dropped
        return DecodedBatch(
            NodePoint(T0 + k * 15 * S, 10**12 + k, 1 << 30),
            np.array([a for a, _ in ids], np.int32), np.array([b for _, b in ids], np.int32),
            np.full(n, T0 + k * 15 * S + node, np.int64), np.full(n, T0 - 3600 * S, np.int64),
            cpu, np.arange(1, n + 1, dtype=np.uint64) << np.uint64(20), keys[node])

    store = Store(15 * S)
    store.store([("n0", batch(0, 1)), ("n1", batch(1, 1))])
    return store.store([("n0", batch(0, 2)), ("n1", batch(1, 2))])


class Cluster:
    def __init__(self, pods: list[Any]) -> None:
        self._pods = pods

    def nodes(self) -> list[Any]:
        return []

    def node(self, name: str) -> Any:
        return None

    def pods_in(self, namespace: str | None) -> list[Any]:
        return [p for p in self._pods if namespace is None or p.namespace == namespace]

    def pod(self, namespace: str, name: str) -> Any:
        return next((p for p in self._pods if (p.namespace, p.name) == (namespace, name)), None)


class Plain:
    """A snapshot seen only through ``pod``/``node``: the handlers take the object path."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def node(self, name: str) -> NodeUsage | None:
        return self.snap.node(name)

    def pod(self, namespace: str, name: str) -> PodUsage | None:
        return self.snap.pod(namespace, name)


N_PODS = 240
SNAP = _snapshot(N_PODS)
LABELS = [Labels({"app": "web", "tier": "<front>"}), Labels({"app": "db"}), Labels({})]
PODS = [SimpleNamespace(namespace=NAMESPACES[i % 3], name=f"pod-{i:04d}",
                        labels=LABELS[i % 3] if i % 5 else {"app": "web", "i": str(i)})
        for i in range(N_PODS) if i % 11] + [
    SimpleNamespace(namespace="default", name="not-scraped", labels={})]
PODS.reverse()

Client = TestClient[web.Request, web.Application]


def _app(snapshot: Callable[[], Any], metrics: ServerMetrics | None = None) -> web.Application:
    app = web.Application()
    add_routes(app, MetricsAPI(Cluster(PODS), snapshot, metrics=metrics, clock_ns=lambda: NOW))
    return app


@pytest.fixture
def small_offload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists of 20 pods and more go to the render executor (and the columnar path); the
    selectors run on the loop over a namespace's pods (~70), in the executor over all."""
    monkeypatch.setattr(handlers, "OFFLOAD_MIN_PODS", 20)
    monkeypatch.setattr(handlers, "SELECT_INLINE_MAX", 100)


@pytest.fixture
async def clients(small_offload: None) -> AsyncIterator[tuple[Client, Client]]:
    fast, plain = _app(lambda: SNAP), _app(lambda: Plain(SNAP))
    async with TestClient(TestServer(fast)) as a, TestClient(TestServer(plain)) as b:
        yield a, b


QUERIES = [
    "", "?pretty=true", "?labelSelector=app%3Dweb", "?labelSelector=app%21%3Dweb,tier",
    "?fieldSelector=metadata.name%21%3Dpod-0003", "?fieldSelector=metadata.namespace%3Dzeta",
    "?labelSelector=app&fieldSelector=metadata.name%3Dpod-0010",
]


@pytest.mark.parametrize("accept", ["application/json", PB, TABLE])
@pytest.mark.parametrize("path", [f"{P}/pods", f"{P}/namespaces/default/pods",
                                  f"{P}/namespaces/nowhere/pods"])
async def test_columnar_bodies_equal_object_bodies(clients: tuple[Client, Client], path: str,
                                                   accept: str) -> None:
    fast, plain = clients
    bodies = []
    for query in QUERIES:
        ra = await fast.get(path + query, headers={"Accept": accept})
        rb = await plain.get(path + query, headers={"Accept": accept})
        a, b = await ra.read(), await rb.read()
        assert (ra.status, ra.headers["Content-Type"]) == (rb.status, rb.headers["Content-Type"])
        assert ra.status == 200, a
        assert a == b, query
        bodies.append(a)
    if accept == "application/json" and "nowhere" not in path:
        items = orjson.loads(bodies[0])["items"]  # no selector
        assert len(items) > 50 and all(i["metadata"]["name"] != "pod-0011" for i in items)
        sizes = [len(orjson.loads(b)["items"]) for b in bodies]
        assert len(set(sizes)) >= 3, sizes  # the selectors select


async def test_big_lists_are_built_in_the_render_executor(
        clients: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    fast, _ = clients
    threads: list[str] = []
    real = render.pod_list

    def spy(*args: Any, **kw: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kw)

    monkeypatch.setattr(render, "pod_list", spy)
    for accept in ("application/json", PB):
        r = await fast.get(f"{P}/pods", headers={"Accept": accept})
        assert r.status == 200
    # 1 pod out of a namespace's: selected and rendered on the loop
    r = await fast.get(f"{P}/namespaces/kube-system/pods?fieldSelector=metadata.name%3Dpod-0001")
    assert r.status == 200 and len(orjson.loads(await r.read())["items"]) == 1
    # selected in the executor (all pods), then 1 pod: rendered there object by object
    r = await fast.get(f"{P}/pods?fieldSelector=metadata.name%3Dpod-0001")
    assert r.status == 200 and len(orjson.loads(await r.read())["items"]) == 1
    assert len(threads) == 2 and all(t.startswith("fastmetrics-render") for t in threads)
    assert render.MEMO_KEY in SNAP._memo  # the table is kept with the snapshot


async def test_the_loop_serves_others_while_a_list_is_built(
        clients: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    """A list held up in the executor does not hold up a small request."""
    fast, _ = clients
    entered, release = threading.Event(), threading.Event()
    real = render.pod_list

    def slow(*args: Any, **kw: Any) -> Any:
        entered.set()
        assert release.wait(10), "never released"
        return real(*args, **kw)

    monkeypatch.setattr(render, "pod_list", slow)
    big = asyncio.ensure_future(fast.get(f"{P}/pods"))
    for _ in range(200):
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    assert entered.is_set()
    try:
        r = await asyncio.wait_for(fast.get(f"{P}/namespaces/zeta/pods/pod-0002"), 5)
        assert r.status == 200 and not big.done()
    finally:
        release.set()
    r = await asyncio.wait_for(big, 10)
    assert r.status == 200 and len(orjson.loads(await r.read())["items"]) > 100


async def test_long_bodies_are_written_in_chunks(
        clients: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    fast, plain = clients
    monkeypatch.setattr(handlers, "STREAM_MIN_BYTES", 1000)
    monkeypatch.setattr(handlers, "STREAM_CHUNK_BYTES", 777)
    writes: list[int] = []
    real_write = web.StreamResponse.write

    async def counting(self: web.StreamResponse, data: Any) -> None:
        writes.append(len(data))
        await real_write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", counting)
    for accept in ("application/json", PB):
        ra = await fast.get(f"{P}/pods", headers={"Accept": accept})
        a = await ra.read()
        b = await (await plain.get(f"{P}/pods", headers={"Accept": accept})).read()
        assert a == b and ra.headers["Content-Length"] == str(len(a))
        assert ra.headers["Content-Type"] == ("application/json" if "json" in accept else PB)
    assert len(writes) > 20 and max(writes) == 777
    r = await fast.head(f"{P}/pods")
    assert r.status == 200 and await r.read() == b""


async def test_freshness_is_observed_for_every_listed_pod(small_offload: None) -> None:
    metrics = ServerMetrics(15.0, process=False)
    async with TestClient(TestServer(_app(lambda: SNAP, metrics))) as c:
        doc = orjson.loads(await (await c.get(f"{P}/pods")).read())
    with_ts = [i for i in doc["items"] if i["timestamp"] is not None]
    assert len(with_ts) < len(doc["items"])  # pod-0007 lost its containers
    text = metrics.render().decode()
    assert f"metrics_server_api_metric_freshness_seconds_count {len(with_ts)}\n" in text


async def test_a_failing_render_is_a_500_status(
        clients: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while building a list in the executor reaches the client as a Status, and
    the server keeps serving."""
    from fastmetrics.server import error_middleware

    def broken(*args: Any, **kw: Any) -> Any:
        raise ValueError("bad table")

    monkeypatch.setattr(render, "pod_list", broken)
    app = web.Application(middlewares=[error_middleware])
    add_routes(app, MetricsAPI(Cluster(PODS), lambda: SNAP, clock_ns=lambda: NOW))
    async with TestClient(TestServer(app)) as c:
        r = await c.get(f"{P}/pods")
        assert r.status == 500
        assert orjson.loads(await r.read())["reason"] == "InternalError"
        r = await c.get(f"{P}/namespaces/zeta/pods/pod-0002")
        assert r.status == 200


async def test_a_client_leaving_mid_body_is_not_an_error(
        small_offload: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from fastmetrics.server import error_middleware

    monkeypatch.setattr(handlers, "STREAM_MIN_BYTES", 1000)
    monkeypatch.setattr(handlers, "STREAM_CHUNK_BYTES", 200)
    app = web.Application(middlewares=[error_middleware])
    add_routes(app, MetricsAPI(Cluster(PODS), lambda: SNAP, clock_ns=lambda: NOW))
    async with TestClient(TestServer(app)) as c:
        assert c.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", c.port)
        writer.write(f"GET {P}/pods HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.read(2000), 5)
        assert head.startswith(b"HTTP/1.1 200")
        writer.transport.abort()
        for _ in range(50):
            await asyncio.sleep(0.01)
        r = await c.get(f"{P}/namespaces/zeta/pods/pod-0002")
        assert r.status == 200
    assert not [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL")]
