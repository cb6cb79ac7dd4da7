"""Discovery, version, index and OpenAPI documents (SPEC §5.7, §5.8)."""

from __future__ import annotations

import hashlib

import orjson

from fastmetrics.api import discovery

SPEC_APIS = (
    '{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"metrics.k8s.io","versions":'
    '[{"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"}],"preferredVersion":'
    '{"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"},"serverAddressByClientCIDRs":'
    '[{"clientCIDR":"0.0.0.0/0","serverAddress":"<advertise-ip>:<port>"}]}]}'
)
SPEC_AGGREGATED = (
    '{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},'
    '"items":[{"metadata":{"name":"metrics.k8s.io","creationTimestamp":null},"versions":'
    '[{"version":"v1beta1","resources":[{"resource":"nodes","responseKind":{"group":'
    '"metrics.k8s.io","version":"v1beta1","kind":"NodeMetrics"},"scope":"Cluster",'
    '"singularResource":"","verbs":["get","list"]},{"resource":"pods","responseKind":'
    '{"group":"metrics.k8s.io","version":"v1beta1","kind":"PodMetrics"},"scope":"Namespaced",'
    '"singularResource":"","verbs":["get","list"]}],"freshness":"Current"}]}]}'
)
SPEC_GROUP = (
    '{"kind":"APIGroup","apiVersion":"v1","name":"metrics.k8s.io","versions":[{"groupVersion":'
    '"metrics.k8s.io/v1beta1","version":"v1beta1"}],"preferredVersion":{"groupVersion":'
    '"metrics.k8s.io/v1beta1","version":"v1beta1"}}'
)
SPEC_RESOURCES = (
    '{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"metrics.k8s.io/v1beta1",'
    '"resources":[{"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics",'
    '"verbs":["get","list"]},{"name":"pods","singularName":"","namespaced":true,'
    '"kind":"PodMetrics","verbs":["get","list"]}]}'
)


def test_api_group_list() -> None:
    # the SPEC's placeholder address: Go escapes < and > in JSON strings
    expected = SPEC_APIS.replace(
        "<advertise-ip>:<port>", "\\u003cadvertise-ip\\u003e:\\u003cport\\u003e"
    )
    assert discovery.api_group_list("<advertise-ip>:<port>") == (expected + "\n").encode()
    body = discovery.api_group_list("10.96.0.12:10250")
    assert body == (SPEC_APIS.replace("<advertise-ip>:<port>", "10.96.0.12:10250") + "\n").encode()
    assert orjson.loads(discovery.api_group_list("[fd00::1]:443", "::/0"))["groups"][0][
        "serverAddressByClientCIDRs"
    ] == [{"clientCIDR": "::/0", "serverAddress": "[fd00::1]:443"}]


def test_group_and_resource_list() -> None:
    assert (SPEC_GROUP + "\n").encode() == discovery.API_GROUP
    assert (SPEC_RESOURCES + "\n").encode() == discovery.API_RESOURCE_LIST
    for r in orjson.loads(discovery.API_RESOURCE_LIST)["resources"]:
        assert r["singularName"] == ""


def test_aggregated_discovery() -> None:
    assert (SPEC_AGGREGATED + "\n").encode() == discovery.AGGREGATED_DISCOVERY_V2
    v2beta1 = SPEC_AGGREGATED.replace("apidiscovery.k8s.io/v2", "apidiscovery.k8s.io/v2beta1")
    assert (v2beta1 + "\n").encode() == discovery.AGGREGATED_DISCOVERY_V2BETA1
    assert discovery.AGGREGATED_V2_CONTENT_TYPE == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    assert discovery.AGGREGATED_V2BETA1_CONTENT_TYPE == (
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    )


def test_etag_is_stable() -> None:
    tag = discovery.AGGREGATED_DISCOVERY_ETAG
    assert tag == discovery.etag(discovery.AGGREGATED_DISCOVERY_V2)
    assert tag == '"' + hashlib.sha512(discovery.AGGREGATED_DISCOVERY_V2).hexdigest().upper() + '"'
    assert tag == discovery.etag((SPEC_AGGREGATED + "\n").encode())
    assert discovery.etag(b"other") != tag
    assert len(tag) == 130 and tag.startswith('"') and tag.endswith('"')


def test_version_document() -> None:
    body = discovery.version_document(
        "v0.8.1", major="0", minor="8", git_commit="abc", git_tree_state="clean",
        build_date="2026-01-01T00:00:00Z", go_version="go1.24.4",
    )
    assert body == (
        b'{\n  "major": "0",\n  "minor": "8",\n  "gitVersion": "v0.8.1",\n  "gitCommit": "abc",\n'
        b'  "gitTreeState": "clean",\n  "buildDate": "2026-01-01T00:00:00Z",\n'
        b'  "goVersion": "go1.24.4",\n  "compiler": "gc",\n  "platform": "linux/amd64"\n}'
    )


def test_root_paths() -> None:
    body = discovery.root_paths()
    paths = orjson.loads(body)["paths"]
    assert paths == sorted(paths)
    for p in ("/apis", "/apis/metrics.k8s.io/v1beta1", "/healthz", "/livez", "/readyz",
              "/readyz/metric-storage-ready", "/livez/metric-collection-timely",
              "/metrics", "/openapi/v2", "/version"):
        assert p in paths
    assert discovery.root_paths(["/b", "/a", "/a"]) == (
        b'{\n  "paths": [\n    "/a",\n    "/b"\n  ]\n}'
    )


def _check_openapi_schemas(schemas: dict[str, dict[str, object]]) -> None:
    m = "io.k8s.metrics.pkg.apis.metrics.v1beta1"
    assert schemas[f"{m}.NodeMetrics"]["required"] == ["timestamp", "window", "usage"]
    assert schemas[f"{m}.PodMetrics"]["required"] == ["timestamp", "window", "containers"]
    assert schemas[f"{m}.ContainerMetrics"]["required"] == ["name", "usage"]
    for kind in ("NodeMetricsList", "PodMetricsList"):
        assert schemas[f"{m}.{kind}"]["x-kubernetes-group-version-kind"] == [
            {"group": "metrics.k8s.io", "kind": kind, "version": "v1beta1"}
        ]


def _refs(obj: object) -> set[str]:
    if isinstance(obj, dict):
        out = {obj["$ref"]} if "$ref" in obj else set()
        for v in obj.values():
            out |= _refs(v)
        return out
    if isinstance(obj, list):
        return set().union(*(_refs(v) for v in obj)) if obj else set()
    return set()


def test_openapi_v2() -> None:
    doc = orjson.loads(discovery.openapi_v2("v0.8.1-3-gabcdef"))
    assert doc["swagger"] == "2.0"
    assert doc["info"] == {"title": "Kubernetes metrics-server", "version": "v0.8.1"}
    _check_openapi_schemas(doc["definitions"])
    assert set(doc["paths"]) == {
        "/apis/metrics.k8s.io/v1beta1/nodes",
        "/apis/metrics.k8s.io/v1beta1/nodes/{name}",
        "/apis/metrics.k8s.io/v1beta1/pods",
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods",
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}",
    }
    for ref in _refs(doc):  # every reference resolves
        assert ref.removeprefix("#/definitions/") in doc["definitions"]
    assert discovery.openapi_v2("v0.8.1") == discovery.openapi_v2("v0.8.1-dirty")


def test_openapi_v3() -> None:
    doc = orjson.loads(discovery.openapi_v3_group("v0.8.1"))
    assert doc["openapi"].startswith("3.0")
    assert doc["info"]["title"] == "Kubernetes metrics-server"
    _check_openapi_schemas(doc["components"]["schemas"])
    for ref in _refs(doc):
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
    root = orjson.loads(discovery.openapi_v3_root("v0.8.1"))
    url = root["paths"]["apis/metrics.k8s.io/v1beta1"]["serverRelativeURL"]
    digest = hashlib.sha512(discovery.openapi_v3_group("v0.8.1")).hexdigest().upper()
    assert url == f"/openapi/v3/apis/metrics.k8s.io/v1beta1?hash={digest}"
    assert discovery.openapi_version("v0.8.1") == "v0.8.1"
