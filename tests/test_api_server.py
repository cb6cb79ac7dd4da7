"""The metrics.k8s.io routes of make_app, on fake informers and a fake snapshot (SPEC §5)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fastmetrics.api import discovery, objects, protobuf
from fastmetrics.api.handlers import MetricsAPI, negotiate
from fastmetrics.auth import allow_everyone
from fastmetrics.health import HealthState
from fastmetrics.monitoring import ServerMetrics
from fastmetrics.selectors import parse_label_selector
from fastmetrics.server import make_app
from fastmetrics.store import ContainerUsage, NodeUsage, PodUsage

S = 1_000_000_000
NOW = 1_767_225_620 * S  # 2026-01-01T00:00:20Z
CREATED = "2026-01-01T00:00:20Z"
P = "/apis/metrics.k8s.io/v1beta1"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
PB = "application/vnd.kubernetes.protobuf"


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


class FakeCluster:
    def __init__(self, nodes: list[Node], pods: list[Pod]) -> None:
        self._nodes = {n.name: n for n in nodes}
        self._pods = {(p.namespace, p.name): p for p in pods}

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def node(self, name: str) -> Node | None:
        return self._nodes.get(name)

    def pods_in(self, namespace: str | None) -> list[Pod]:
        return [p for p in self._pods.values() if namespace is None or p.namespace == namespace]

    def pod(self, namespace: str, name: str) -> Pod | None:
        return self._pods.get((namespace, name))


class FakeSnapshot:
    def __init__(self, nodes: dict[str, NodeUsage], pods: dict[tuple[str, str], PodUsage]):
        self.nodes, self.pods = nodes, pods

    def node(self, name: str) -> NodeUsage | None:
        return self.nodes.get(name)

    def pod(self, namespace: str, name: str) -> PodUsage | None:
        return self.pods.get((namespace, name))


def _nu(cpu: int) -> NodeUsage:
    return NodeUsage(cpu, 1024 * 1024 * 1024, NOW - 8 * S, 15 * S)


def _pu(ns: str, name: str, cpu: int) -> PodUsage:
    return PodUsage(ns, name, NOW - 7 * S, 15 * S,
                    [ContainerUsage("main", cpu, 5 * 1024 * 1024),
                     ContainerUsage("side", 1_000_000, 1024 * 1024)])


# nodes are listed out of order; "w-gpu" is excluded by the server's --node-selector;
# "w-nometrics" exists but has no usage
NODES = [Node("w2", {"pool": "a"}), Node("w1", {"pool": "a", "zone": "x"}),
         Node("w-gpu", {"pool": "gpu"}), Node("w-nometrics", {"pool": "a"})]
PODS = [Pod("shop", "web-2", {"app": "web"}), Pod("default", "web-1", {"app": "web"}),
        Pod("default", "db-0", {"app": "db"}), Pod("shop", "api-1", {"app": "api"}),
        Pod("default", "nometrics", {"app": "web"})]
SNAP = FakeSnapshot(
    {"w1": _nu(1_000_000_000), "w2": _nu(2_000_000_000), "w-gpu": _nu(3_000_000_000)},
    {(p.namespace, p.name): _pu(p.namespace, p.name, 50_000_000) for p in PODS
     if p.name != "nometrics"} | {("gone", "ghost"): _pu("gone", "ghost", 1)},
)


@pytest.fixture
def metrics() -> ServerMetrics:
    return ServerMetrics(15.0, process=False)


def _api(metrics: ServerMetrics | None = None) -> MetricsAPI:
    return MetricsAPI(FakeCluster(NODES, PODS), lambda: SNAP,
                      parse_label_selector("pool!=gpu"), metrics, "10.0.0.1:10250",
                      version="v0.8.1", clock_ns=lambda: NOW)


@pytest.fixture
async def client(metrics: ServerMetrics) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = make_app(HealthState(), metrics, api=_api(metrics), security=allow_everyone())
    async with TestClient(TestServer(app)) as c:
        yield c


Client = TestClient[web.Request, web.Application]


async def _json(client: Client, path: str, status: int = 200, **kw: Any) -> Any:
    r = await client.get(path, **kw)
    body = await r.read()
    assert r.status == status, body
    assert r.headers["Content-Type"] == "application/json"
    return orjson.loads(body)


def _names(doc: Any) -> list[Any]:
    return [(i["metadata"].get("namespace"), i["metadata"]["name"]) for i in doc["items"]]


# ------------------------------------------------------------------ nodes


async def test_node_list_sorted_filtered_by_node_selector_and_storage(client: Client) -> None:
    r = await client.get(f"{P}/nodes")
    body = await r.read()
    items = [(n, NODES[[x.name for x in NODES].index(n)].labels, SNAP.nodes[n])
             for n in ("w1", "w2")]
    assert body == objects.node_metrics_list(items, NOW)
    doc = orjson.loads(body)
    assert doc["items"][0]["metadata"] == {"name": "w1", "creationTimestamp": CREATED,
                                           "labels": {"pool": "a", "zone": "x"}}


@pytest.mark.parametrize(("query", "names"), [
    ("labelSelector=zone%3Dx", ["w1"]),
    ("labelSelector=pool%3Dgpu", []),  # the server's --node-selector still applies
    ("fieldSelector=metadata.name%3Dw2", ["w2"]),
    ("fieldSelector=metadata.name!%3Dw2", ["w1"]),
    ("fieldSelector=metadata.namespace%3Dx", []),
    ("fieldSelector=metadata.namespace!%3Dx", ["w1", "w2"]),
])
async def test_node_list_selectors(client: Client, query: str, names: list[str]) -> None:
    doc = await _json(client, f"{P}/nodes?{query}")
    assert [n for _, n in _names(doc)] == names
    assert doc["items"] == [] or doc["items"][0]["metadata"]["name"] == names[0]


async def test_node_get_and_both_404s(client: Client) -> None:
    r = await client.get(f"{P}/nodes/w1")
    assert await r.read() == objects.node_metrics("w1", NODES[1].labels, SNAP.nodes["w1"], NOW)
    doc = await _json(client, f"{P}/nodes/nope", 404)
    assert (doc["message"], doc["details"]) == ('node "nope" not found',
                                                {"name": "nope", "kind": "node"})
    doc = await _json(client, f"{P}/nodes/w-nometrics", 404)
    assert doc["message"] == 'nodemetrics.metrics.k8s.io "w-nometrics" not found'
    # --node-selector is not applied on get: the usage is there, it is served
    doc = await _json(client, f"{P}/nodes/w-gpu")
    assert doc["usage"]["cpu"] == "3"


# ------------------------------------------------------------------ pods


async def test_pod_list_all_namespaces_sorted_running_with_metrics(client: Client) -> None:
    r = await client.get(f"{P}/pods")
    body = await r.read()
    doc = orjson.loads(body)
    assert _names(doc) == [("default", "db-0"), ("default", "web-1"), ("shop", "api-1"),
                           ("shop", "web-2")]
    by = {(p.namespace, p.name): p for p in PODS}
    items = [(ns, n, by[ns, n].labels, SNAP.pods[ns, n]) for ns, n in _names(doc)]
    assert body == objects.pod_metrics_list(items, NOW)


@pytest.mark.parametrize(("path", "names"), [
    (f"{P}/namespaces/default/pods", [("default", "db-0"), ("default", "web-1")]),
    (f"{P}/namespaces/nowhere/pods", []),
    (f"{P}/namespaces/gone/pods", []),  # in storage, not in the informer
    (f"{P}/namespaces/default/pods?labelSelector=app%3Dweb", [("default", "web-1")]),
    (f"{P}/pods?labelSelector=app+in+(web,api)",
     [("default", "web-1"), ("shop", "api-1"), ("shop", "web-2")]),
    (f"{P}/pods?fieldSelector=metadata.namespace%3Dshop", [("shop", "api-1"), ("shop", "web-2")]),
    (f"{P}/pods?fieldSelector=metadata.name%3Dweb-2", [("shop", "web-2")]),
    (f"{P}/namespaces/shop/pods?fieldSelector=metadata.namespace%3Ddefault", []),
])
async def test_pod_list_selectors(client: Client, path: str, names: list[Any]) -> None:
    assert _names(await _json(client, path)) == names


async def test_pod_get_and_both_404s(client: Client) -> None:
    r = await client.get(f"{P}/namespaces/shop/pods/web-2")
    assert await r.read() == objects.pod_metrics("shop", "web-2", {"app": "web"},
                                                 SNAP.pods["shop", "web-2"], NOW)
    doc = await _json(client, f"{P}/namespaces/shop/pods/nope", 404)
    assert (doc["message"], doc["details"]) == ('pods "nope" not found',
                                                {"name": "nope", "kind": "pods"})
    doc = await _json(client, f"{P}/namespaces/gone/pods/ghost", 404)
    assert doc["message"] == 'pods "ghost" not found'
    doc = await _json(client, f"{P}/namespaces/default/pods/nometrics", 404)
    assert doc["message"] == 'podmetrics.metrics.k8s.io "default/nometrics" not found'
    assert doc["details"]["name"] == "default/nometrics"
    doc = await _json(client, f"{P}/pods/web-2", 404)  # no namespace: not a route
    assert doc["message"] == "the server could not find the requested resource"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(("query", "message"), [
    ("fieldSelector=spec.nodeName%3Dx",
     '"spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace"'),
    ("labelSelector=a%3D%3D%3Db", None),
    ("labelSelector=%21%21", None),
])
@pytest.mark.parametrize("resource", ["nodes", "pods", "namespaces/default/pods"])
async def test_bad_selectors_400(client: Client, resource: str, query: str,
                                 message: str | None) -> None:
    doc = await _json(client, f"{P}/{resource}?{query}", 400)
    assert doc["reason"] == "BadRequest"
    if message is not None:
        assert doc["message"] == message


async def test_watch_and_other_methods_405(client: Client) -> None:
    for watch in ("1", "true"):
        doc = await _json(client, f"{P}/nodes?watch={watch}", 405)
        assert doc["message"] == 'watch is not supported on resources of kind ' \
                                 '"nodes.metrics.k8s.io"'
        assert doc["details"] == {"group": "metrics.k8s.io", "kind": "nodes"}
        doc = await _json(client, f"{P}/namespaces/default/pods?watch={watch}", 405)
        assert doc["details"]["kind"] == "pods"
    doc = await _json(client, f"{P}/pods?watch=false")
    assert doc["kind"] == "PodMetricsList"
    for path in (f"{P}/nodes", f"{P}/nodes/w1", f"{P}/namespaces/default/pods/db-0"):
        r = await client.post(path, data=b"{}")
        assert r.status == 405
        assert orjson.loads(await r.read())["reason"] == "MethodNotAllowed"


# ------------------------------------------------------------------ content negotiation


async def test_table_output(client: Client) -> None:
    r = await client.get(f"{P}/nodes", headers={"Accept": TABLE})
    assert r.headers["Content-Type"] == TABLE
    items = [("w1", NODES[1].labels, SNAP.nodes["w1"]), ("w2", NODES[0].labels, SNAP.nodes["w2"])]
    assert await r.read() == objects.node_metrics_table(items, NOW)
    r = await client.get(f"{P}/pods?includeObject=None",
                         headers={"Accept": TABLE.replace("v=v1", "v=v1beta1")})
    doc = orjson.loads(await r.read())
    assert doc["apiVersion"] == "meta.k8s.io/v1beta1"
    assert [row["cells"][0] for row in doc["rows"]] == ["db-0", "web-1", "api-1", "web-2"]
    assert doc["rows"][0]["object"] is None
    r = await client.get(f"{P}/namespaces/shop/pods/web-2?includeObject=Object",
                         headers={"Accept": TABLE})
    doc = orjson.loads(await r.read())
    assert doc["rows"][0]["cells"] == ["web-2", "51m", "6Mi", "15s"]
    assert doc["rows"][0]["object"]["kind"] == "PodMetrics"
    doc = await _json(client, f"{P}/nodes?includeObject=All", 400, headers={"Accept": TABLE})
    assert "includeObject" in doc["message"]
    r = await client.get(f"{P}/namespaces/nowhere/pods", headers={"Accept": TABLE})
    doc = orjson.loads(await r.read())
    assert (doc["columnDefinitions"], doc["rows"]) == (None, None)


async def test_protobuf_output(client: Client) -> None:
    r = await client.get(f"{P}/namespaces/default/pods",
                         headers={"Accept": f"{PB}, */*"})
    assert r.headers["Content-Type"] == PB
    body = await r.read()
    assert body.startswith(protobuf.MAGIC)
    items = [("default", n, {"app": a}, SNAP.pods["default", n]) for n, a in
             (("db-0", "db"), ("web-1", "web"))]
    assert body == protobuf.pod_metrics_list(items, NOW)
    r = await client.get(f"{P}/nodes/w1", headers={"Accept": PB})
    assert await r.read() == protobuf.node_metrics("w1", NODES[1].labels, SNAP.nodes["w1"], NOW)
    r = await client.get(f"{P}/nodes/nope", headers={"Accept": PB})
    assert (r.status, r.headers["Content-Type"]) == (404, PB)
    assert await r.read() == protobuf.status(404, "NotFound", 'node "nope" not found',
                                             {"name": "nope", "kind": "node"})


@pytest.mark.parametrize(("accept", "kind"), [
    ("", "json"),
    ("application/json", "json"),
    ("*/*", "json"),
    ("text/html, application/*;q=0.9", "json"),
    ("application/yaml, */*", "json"),
    (f"{PB}, */*", "protobuf"),
    (f"{TABLE}, application/json", "table"),
    ("application/json;as=Table;v=v2;g=meta.k8s.io, application/json", "json"),
    ("text/html", None),
    ("application/json;q=0", None),
])
def test_negotiate(accept: str, kind: str | None) -> None:
    fmt = negotiate(accept)
    assert (fmt.kind if fmt is not None else None) == kind


async def test_accept_fallback_and_406(client: Client) -> None:
    doc = await _json(client, f"{P}/nodes", headers={"Accept": "text/plain, */*"})
    assert doc["kind"] == "NodeMetricsList"
    doc = await _json(client, f"{P}/nodes", 406, headers={"Accept": "text/plain"})
    assert doc["reason"] == "NotAcceptable"


async def test_pretty(client: Client) -> None:
    r = await client.get(f"{P}/nodes/w1?pretty=true")
    body = await r.read()
    assert body == objects.pretty(
        objects.node_metrics("w1", NODES[1].labels, SNAP.nodes["w1"], NOW))


async def test_freshness_observed_for_every_item(client: Client,
                                                 metrics: ServerMetrics) -> None:
    await client.get(f"{P}/nodes")  # 2 items, 8 s old
    await client.get(f"{P}/pods")  # 4 items, 7 s old
    await client.get(f"{P}/nodes/nope")  # nothing
    text = metrics.render().decode()
    assert "metrics_server_api_metric_freshness_seconds_count 6" in text
    assert "metrics_server_api_metric_freshness_seconds_sum 44" in text


# ------------------------------------------------------------------ discovery, version, openapi


async def test_discovery_documents(client: Client) -> None:
    r = await client.get("/apis")
    assert await r.read() == discovery.api_group_list("10.0.0.1:10250")
    r = await client.get("/apis/metrics.k8s.io")
    assert await r.read() == discovery.API_GROUP
    r = await client.get(P)
    assert await r.read() == discovery.API_RESOURCE_LIST
    r = await client.get("/version")
    assert await r.read() == discovery.version_document("v0.8.1")
    r = await client.get("/openapi/v2")
    assert await r.read() == discovery.openapi_v2("v0.8.1")
    r = await client.get("/openapi/v3")
    assert await r.read() == discovery.openapi_v3_root("v0.8.1")
    r = await client.get("/openapi/v3/apis/metrics.k8s.io/v1beta1")
    assert await r.read() == discovery.openapi_v3_group("v0.8.1")


@pytest.mark.parametrize(("version", "content_type", "body"), [
    ("v2", discovery.AGGREGATED_V2_CONTENT_TYPE, discovery.AGGREGATED_DISCOVERY_V2),
    ("v2beta1", discovery.AGGREGATED_V2BETA1_CONTENT_TYPE, discovery.AGGREGATED_DISCOVERY_V2BETA1),
])
async def test_aggregated_discovery_and_304(client: Client, version: str, content_type: str,
                                            body: bytes) -> None:
    accept = (f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList,"
              "application/json")
    r = await client.get("/apis", headers={"Accept": accept})
    assert r.headers["Content-Type"] == content_type
    assert r.headers["ETag"] == discovery.AGGREGATED_DISCOVERY_ETAG
    assert await r.read() == body
    r = await client.get("/apis", headers={"Accept": accept,
                                           "If-None-Match": discovery.AGGREGATED_DISCOVERY_ETAG})
    assert r.status == 304
    assert await r.read() == b""
    r = await client.get("/apis", headers={"Accept": accept, "If-None-Match": '"other"'})
    assert r.status == 200


async def test_unknown_api_path_and_index(client: Client) -> None:
    doc = await _json(client, f"{P}/watch/nodes", 404)
    assert doc["message"] == "the server could not find the requested resource"
    doc = await _json(client, "/nowhere", 404)
    assert "/apis/metrics.k8s.io/v1beta1" in doc["paths"]
    assert "/version" in doc["paths"]
    assert not any(p.startswith(f"{P}/") for p in doc["paths"])


# Authentication and authorization in front of these routes: tests/test_auth.py (units) and
# tests/test_e2e_security.py (over real TLS against the simulated cluster).
