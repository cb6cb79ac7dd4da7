"""JSON bodies of the metrics API, byte for byte (SPEC §5.2-§5.6)."""

from __future__ import annotations

import time

import orjson
import pytest

from fastmetrics.api import objects
from fastmetrics.store import ContainerUsage, NodeUsage, PodUsage

S = 1_000_000_000
T0 = 1767225600 * S  # 2026-01-01T00:00:00Z
NOW = T0 + 20 * S + 123_456_789  # the request time: 00:00:20Z once truncated
KI = 1024

NODE_LABELS = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": "kind-worker"}
NODE = NodeUsage(1221459987, 1681180 * KI, T0 + 12 * S + 345_000_000, 15_013_000_000)
BATCH = PodUsage(
    "default", "batch-job-7kq4t", T0 + 13 * S + 562_004_000, 12_400_000_000,
    [ContainerUsage("worker", 932419677, 102900 * KI)],
)
WEB = PodUsage(
    "default", "web-5d4f8c7b9-q8r2n", T0 + 13 * S + 199_000_000, 14_977_000_000,
    [
        ContainerUsage("nginx", 50914735, 24832 * KI),
        ContainerUsage("log-shipper", 3004005, 9 << 20),
    ],
)
COREDNS = PodUsage(
    "kube-system", "coredns-7db6d8ff4d-x2k9p", T0 + 14 * S + 1, 15_025_000_000,
    [ContainerUsage("coredns", 3815336, 13376 * KI)],
)
PODS = [(u.namespace, u.name, {}, u) for u in (BATCH, WEB, COREDNS)]

SPEC_NODE = (
    b'{"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{"name":"kind-worker",'
    b'"creationTimestamp":"2026-01-01T00:00:20Z","labels":{"kubernetes.io/hostname":"kind-worker",'
    b'"kubernetes.io/os":"linux"}},"timestamp":"2026-01-01T00:00:12Z","window":"15.013s",'
    b'"usage":{"cpu":"1221459987n","memory":"1681180Ki"}}\n'
)
SPEC_PODS = (
    b'{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":['
    b'{"metadata":{"name":"batch-job-7kq4t","namespace":"default","creationTimestamp":'
    b'"2026-01-01T00:00:20Z"},"timestamp":"2026-01-01T00:00:13Z","window":"12.4s","containers":'
    b'[{"name":"worker","usage":{"cpu":"932419677n","memory":"102900Ki"}}]},'
    b'{"metadata":{"name":"web-5d4f8c7b9-q8r2n","namespace":"default","creationTimestamp":'
    b'"2026-01-01T00:00:20Z"},"timestamp":"2026-01-01T00:00:13Z","window":"14.977s","containers":'
    b'[{"name":"nginx","usage":{"cpu":"50914735n","memory":"24832Ki"}},{"name":"log-shipper",'
    b'"usage":{"cpu":"3004005n","memory":"9Mi"}}]},'
    b'{"metadata":{"name":"coredns-7db6d8ff4d-x2k9p","namespace":"kube-system",'
    b'"creationTimestamp":"2026-01-01T00:00:20Z"},"timestamp":"2026-01-01T00:00:14Z",'
    b'"window":"15.025s","containers":[{"name":"coredns","usage":{"cpu":"3815336n",'
    b'"memory":"13376Ki"}}]}]}\n'
)


# -- objects and lists -------------------------------------------------------------------------

def test_node_worked_example() -> None:
    assert objects.node_metrics("kind-worker", NODE_LABELS, NODE, NOW) == SPEC_NODE


def test_pods_list_worked_example() -> None:
    assert objects.pod_metrics_list(PODS, NOW) == SPEC_PODS


def test_node_list_items_have_no_type_meta() -> None:
    body = objects.node_metrics_list([("kind-worker", NODE_LABELS, NODE)], NOW)
    item = SPEC_NODE[: -2].split(b'"apiVersion":"metrics.k8s.io/v1beta1",', 1)[1]
    assert body == (
        b'{"kind":"NodeMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":[{'
        + item + b"}]}\n"
    )


def test_pod_object() -> None:
    body = objects.pod_metrics("default", WEB.name, {"app": "web", "tier": "fe"}, WEB, NOW)
    assert body == (
        b'{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{"name":'
        b'"web-5d4f8c7b9-q8r2n","namespace":"default","creationTimestamp":"2026-01-01T00:00:20Z",'
        b'"labels":{"app":"web","tier":"fe"}},"timestamp":"2026-01-01T00:00:13Z",'
        b'"window":"14.977s","containers":[{"name":"nginx","usage":{"cpu":"50914735n",'
        b'"memory":"24832Ki"}},{"name":"log-shipper","usage":{"cpu":"3004005n","memory":"9Mi"}}]}\n'
    )


def test_pod_list_items_equal_pod_objects_without_type_meta() -> None:
    labels = {"b": "2", "a": "1"}
    items = [(u.namespace, u.name, labels, u) for u in (BATCH, WEB, COREDNS)]
    listed = orjson.loads(objects.pod_metrics_list(items, NOW))["items"]
    for (ns, name, lab, u), item in zip(items, listed, strict=True):
        single = orjson.loads(objects.pod_metrics(ns, name, lab, u, NOW))
        assert single.pop("kind") == "PodMetrics"
        assert single.pop("apiVersion") == "metrics.k8s.io/v1beta1"
        assert single == item
        assert list(item["metadata"]["labels"]) == ["a", "b"]


def test_null_timestamp_and_no_containers() -> None:
    u = PodUsage("ns", "p", None, 0, [])
    assert objects.pod_metrics("ns", "p", {}, u, NOW) == (
        b'{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{"name":"p",'
        b'"namespace":"ns","creationTimestamp":"2026-01-01T00:00:20Z"},"timestamp":null,'
        b'"window":"0s","containers":[]}\n'
    )
    assert b'"timestamp":null,"window":"0s","containers":[]}]}' in objects.pod_metrics_list(
        [("ns", "p", {}, u)], NOW
    )


def test_empty_lists() -> None:
    assert objects.node_metrics_list([], NOW) == (
        b'{"kind":"NodeMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},'
        b'"items":[]}\n'
    )
    assert objects.pod_metrics_list(iter([]), NOW) == (
        b'{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},'
        b'"items":[]}\n'
    )


def test_labels_mapping_types_and_sorting() -> None:
    from types import MappingProxyType

    a = objects.node_metrics("n", MappingProxyType({"z": "1", "a": "2"}), NODE, NOW)
    b = objects.node_metrics("n", {"a": "2", "z": "1"}, NODE, NOW)
    assert a == b
    assert b'"labels":{"a":"2","z":"1"}' in a
    assert b"labels" not in objects.node_metrics("n", {}, NODE, NOW)


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ('say "hi"', b'"say \\"hi\\""'),
        ("back\\slash", b'"back\\\\slash"'),
        ("<a&b>", b'"\\u003ca\\u0026b\\u003e"'),
        ("line\nfeed\ttab\rcr", b'"line\\nfeed\\ttab\\rcr"'),
        ("\x00\x01\x1f\x7f", b'"\\u0000\\u0001\\u001f\x7f"'),
        ("\b\f", b'"\\b\\f"'),
        ("caf\u00e9 \u2603 \U0001f600", '"caf\u00e9 \u2603 \U0001f600"'.encode()),
        ("\u2028\u2029", b'"\\u2028\\u2029"'),
        ("plain-value_1.2", b'"plain-value_1.2"'),
    ],
)
def test_escaping_like_go(value: str, escaped: bytes) -> None:
    assert objects.json_string(value).encode() == escaped
    labels = {value: value, "k": value}
    body = objects.pod_metrics("ns", value, labels, WEB._replace(name=value), NOW)
    parsed = orjson.loads(body)
    assert parsed["metadata"]["name"] == value
    assert parsed["metadata"]["labels"] == {value: value, "k": value}
    assert escaped + b',"namespace":"ns"' in body
    listed = orjson.loads(objects.pod_metrics_list([("ns", value, {value: value}, WEB)], NOW))
    assert listed["items"][0]["metadata"] == {
        "name": value, "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:20Z",
        "labels": {value: value},
    }
    table = orjson.loads(objects.pod_metrics_table([("ns", value, {}, WEB)], NOW))
    assert table["rows"][0]["cells"][0] == value


def test_every_body_is_valid_json() -> None:
    bodies = [
        objects.node_metrics("kind-worker", NODE_LABELS, NODE, NOW),
        objects.node_metrics_list([("a", {}, NODE), ("b", NODE_LABELS, NODE)], NOW),
        objects.pod_metrics_list(PODS, NOW),
        objects.pod_metrics_table(PODS, NOW, "Object"),
        objects.node_metrics_table([("a", {}, NODE)], NOW, "None"),
    ]
    for body in bodies:
        assert body.endswith(b"}\n") and body.count(b"\n") == 1
        assert orjson.dumps(orjson.loads(body)) == body[:-1].replace(b"\\u003c", b"<")


def test_huge_quantities() -> None:
    u = NodeUsage(2**64 - 1, 2**63 + 5, T0, 3_600_000_000_000)
    parsed = orjson.loads(objects.node_metrics("n", {}, u, NOW))
    assert parsed["window"] == "1h0m0s"
    assert parsed["usage"] == {"cpu": "18446744073709551610n", "memory": "9223372036854775810"}


def test_150k_pod_list_renders_fast_and_parses() -> None:
    items = []
    for i in range(150_000):
        ns = f"ns-{i % 500}"
        name = f"pod-{i:06d}-x7k2p"
        cs = [ContainerUsage("app", 1_000_000 + i, (1000 + i) * KI)]
        if i % 2:
            cs.append(ContainerUsage("sidecar", 3004005, 9 << 20))
        labels = {"app": f"app-{i % 300}", "pod-template-hash": f"{i:x}"}
        items.append((ns, name, labels, PodUsage(ns, name, T0 + i * 1000, 15 * S + i % 7, cs)))
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        body = objects.pod_metrics_list(items, NOW)
        best = min(best, time.perf_counter() - start)
    assert best < 2.0  # ~0.4 s on the reference machine; generous for slow CI runners
    parsed = orjson.loads(body)
    assert len(parsed["items"]) == 150_000
    last = parsed["items"][-1]
    assert last["metadata"]["name"] == "pod-149999-x7k2p"
    assert last["containers"][1] == {
        "name": "sidecar", "usage": {"cpu": "3004005n", "memory": "9Mi"}
    }


# -- Status errors (SPEC §5.5) -----------------------------------------------------------------

def _status(message: str, reason: str, details: str | None, code: int) -> bytes:
    det = "" if details is None else f',"details":{details}'
    return (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        f'"message":{message},"reason":"{reason}"{det},"code":{code}}}\n'
    ).encode()


def test_status_spec_example() -> None:
    assert objects.status_nodemetrics_not_found("kind-worker2") == (
        404,
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":'
        b'"nodemetrics.metrics.k8s.io \\"kind-worker2\\" not found","reason":"NotFound",'
        b'"details":{"name":"kind-worker2","group":"metrics.k8s.io","kind":"nodemetrics"},'
        b'"code":404}\n',
    )


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            objects.status_node_not_found("X"),
            (404, _status(
                r'"node \"X\" not found"', "NotFound", '{"name":"X","kind":"node"}', 404
            )),
        ),
        (
            objects.status_nodemetrics_not_found("X"),
            (404, _status(
                r'"nodemetrics.metrics.k8s.io \"X\" not found"', "NotFound",
                '{"name":"X","group":"metrics.k8s.io","kind":"nodemetrics"}', 404,
            )),
        ),
        (
            objects.status_pod_not_found("P"),
            (404, _status(
                r'"pods \"P\" not found"', "NotFound", '{"name":"P","kind":"pods"}', 404
            )),
        ),
        (
            objects.status_podmetrics_not_found("default", "db-0"),
            (404, _status(
                r'"podmetrics.metrics.k8s.io \"default/db-0\" not found"', "NotFound",
                '{"name":"default/db-0","group":"metrics.k8s.io","kind":"podmetrics"}', 404,
            )),
        ),
        (
            objects.status_internal("failed listing nodes: boom"),
            (500, _status(
                '"Internal error occurred: failed listing nodes: boom"', "InternalError",
                '{"causes":[{"message":"failed listing nodes: boom"}]}', 500,
            )),
        ),
        (
            objects.status_method_not_allowed("nodes"),
            (405, _status(
                r'"watch is not supported on resources of kind \"nodes.metrics.k8s.io\""',
                "MethodNotAllowed", '{"group":"metrics.k8s.io","kind":"nodes"}', 405,
            )),
        ),
        (
            objects.status_method_not_allowed("pods"),
            (405, _status(
                r'"watch is not supported on resources of kind \"pods.metrics.k8s.io\""',
                "MethodNotAllowed", '{"group":"metrics.k8s.io","kind":"pods"}', 405,
            )),
        ),
        (
            objects.status_method_not_allowed(),
            (405, _status(
                '"the server does not allow this method on the requested resource"',
                "MethodNotAllowed", "{}", 405,
            )),
        ),
        (
            objects.status_not_found_path(),
            (404, _status(
                '"the server could not find the requested resource"', "NotFound", "{}", 404
            )),
        ),
        (
            objects.status_bad_request(
                '"spec.nodeName" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            ),
            (400, _status(
                r'"\"spec.nodeName\" is not a known field selector: only \"metadata.name\", '
                r'\"metadata.namespace\""', "BadRequest", None, 400,
            )),
        ),
        (
            objects.status_not_acceptable(["application/json", "application/yaml"]),
            (406, _status(
                '"only the following media types are accepted: application/json, '
                'application/yaml"', "NotAcceptable", None, 406,
            )),
        ),
    ],
)
def test_status_rows(result: tuple[int, bytes], expected: tuple[int, bytes]) -> None:
    assert result == expected
    parsed = orjson.loads(result[1])
    assert parsed["code"] == result[0]
    assert list(parsed)[:6] == ["kind", "apiVersion", "metadata", "status", "message", "reason"]


def test_status_generic() -> None:
    body = objects.status(429, "TooManyRequests", "too many requests", {"retryAfterSeconds": 1})
    assert body == _status('"too many requests"', "TooManyRequests", '{"retryAfterSeconds":1}', 429)


# -- Table (SPEC §5.6, §10.4) ------------------------------------------------------------------

NAME_COL = (
    '{"name":"Name","type":"string","format":"name","description":"Name of the resource",'
    '"priority":0}'
)
COLS = (
    f'[{NAME_COL},{{"name":"cpu","type":"string","format":"quantity","description":"",'
    '"priority":0},{"name":"memory","type":"string","format":"quantity","description":"",'
    '"priority":0},{"name":"Window","type":"string","format":"duration","description":"",'
    '"priority":0}]'
)
M = 1_000_000  # 1m in nanocores


def _table_nodes() -> list[tuple[str, dict[str, str], NodeUsage]]:
    return [
        ("node1", {"labelKey": "labelValue"}, NodeUsage(10 * M, 5 << 20, T0, 1000)),
        ("node2", {"otherKey": "labelValue"}, NodeUsage(5 * M, 0, T0, 2000)),
        ("node3", {}, NodeUsage(1000 * M, 1 << 30, T0, 3000)),
    ]


def _table_pods() -> list[tuple[str, str, dict[str, str], PodUsage]]:
    def pod(ns: str, name: str, window: int, *cs: tuple[int, int]) -> PodUsage:
        containers = [ContainerUsage(f"c{i}", *c) for i, c in enumerate(cs)]
        return PodUsage(ns, name, T0, window, containers)

    return [
        (
            "other", "pod1", {"labelKey": "labelValue"},
            pod("other", "pod1", 1000, (10 * M, 0), (0, 5 << 20)),
        ),
        ("other", "pod2", {}, pod("other", "pod2", 2000, (10 * M, 5 << 20), (10 * M, 10 << 20))),
        (
            "testValue", "pod3", {},
            pod("testValue", "pod3", 3000, (15 * M, 20 << 20), (5 * M, 5 << 20)),
        ),
    ]


def test_node_table_metadata_default() -> None:
    created = "2026-01-01T00:00:20Z"
    partial = '{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":'
    expected = (
        '{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":'
        f"{COLS},"
        '"rows":['
        f'{{"cells":["node1","10m","5Mi","1µs"],"object":{partial}{{"name":"node1",'
        f'"creationTimestamp":"{created}","labels":{{"labelKey":"labelValue"}}}}}}}},'
        f'{{"cells":["node2","5m","0","2µs"],"object":{partial}{{"name":"node2",'
        f'"creationTimestamp":"{created}","labels":{{"otherKey":"labelValue"}}}}}}}},'
        f'{{"cells":["node3","1","1Gi","3µs"],"object":{partial}{{"name":"node3",'
        f'"creationTimestamp":"{created}"}}}}}}]}}\n'
    ).encode()
    assert objects.node_metrics_table(_table_nodes(), NOW) == expected
    assert objects.node_metrics_table(_table_nodes(), NOW, "") == expected
    assert objects.node_metrics_table(_table_nodes(), NOW, None) == expected
    assert objects.node_metrics_table(_table_nodes(), NOW, "Metadata") == expected


def test_pod_table_sums_containers() -> None:
    parsed = orjson.loads(objects.pod_metrics_table(_table_pods(), NOW))
    assert [c["name"] for c in parsed["columnDefinitions"]] == ["Name", "cpu", "memory", "Window"]
    assert [r["cells"] for r in parsed["rows"]] == [
        ["pod1", "10m", "5Mi", "1µs"],
        ["pod2", "20m", "15Mi", "2µs"],
        ["pod3", "20m", "25Mi", "3µs"],
    ]
    assert parsed["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {
            "name": "pod1", "namespace": "other", "creationTimestamp": "2026-01-01T00:00:20Z",
            "labels": {"labelKey": "labelValue"},
        },
    }


def test_pod_table_sum_beyond_int64() -> None:
    cs = [ContainerUsage("a", 2**62, 2**62), ContainerUsage("b", 2**62, 2**62)]
    big = PodUsage("ns", "p", T0, 1, cs)
    row = orjson.loads(objects.pod_metrics_table([("ns", "p", {}, big)], NOW))["rows"][0]
    assert row["cells"][1:3] == ["9223372036854775808n", "8Ei"]


def test_table_include_object_and_none() -> None:
    obj = orjson.loads(objects.pod_metrics_table(_table_pods(), NOW, "Object"))
    for (ns, name, labels, u), row in zip(_table_pods(), obj["rows"], strict=True):
        assert row["object"] == orjson.loads(objects.pod_metrics(ns, name, labels, u, NOW))
    body = objects.node_metrics_table(_table_nodes(), NOW, "Object")
    assert b'"object":{"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{' in (
        body
    )
    none = objects.node_metrics_table(_table_nodes(), NOW, "None")
    assert none.count(b'"object":null') == 3
    assert orjson.loads(objects.pod_metrics_table(_table_pods(), NOW, "None"))["rows"][2] == {
        "cells": ["pod3", "20m", "25Mi", "3µs"], "object": None,
    }


def test_table_v1beta1() -> None:
    body = objects.node_metrics_table(_table_nodes(), NOW, table_version="v1beta1")
    assert body.startswith(b'{"kind":"Table","apiVersion":"meta.k8s.io/v1beta1",')
    assert b'"apiVersion":"meta.k8s.io/v1beta1","metadata":{"name":"node1"' in body


@pytest.mark.parametrize("bad", ["metadata", "All", "object", " Metadata"])
def test_table_include_object_invalid(bad: str) -> None:
    with pytest.raises(ValueError, match="Unable to convert to Table as requested") as exc:
        objects.node_metrics_table(_table_nodes(), NOW, bad)
    assert str(exc.value) == (
        "Unable to convert to Table as requested: includeObject: Unsupported value: "
        f'"{bad}": supported values: "Metadata", "None", "Object"'
    )
    with pytest.raises(ValueError, match="includeObject"):
        objects.pod_metrics_table([], NOW, bad)


def test_table_empty() -> None:
    expected = (
        b'{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":null,'
        b'"rows":null}\n'
    )
    assert objects.node_metrics_table([], NOW) == expected
    assert objects.pod_metrics_table([], NOW, "Object") == expected


def test_table_single_objects() -> None:
    node = objects.node_metrics_table_single("node1", {}, NodeUsage(10 * M, 5 << 20, T0, 1000), NOW)
    parsed = orjson.loads(node)
    assert parsed["rows"] == [{
        "cells": ["node1", "10m", "5Mi", "1µs"],
        "object": {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "node1", "creationTimestamp": "2026-01-01T00:00:20Z"},
        },
    }]
    ns, name, labels, u = _table_pods()[1]
    pod = orjson.loads(objects.pod_metrics_table_single(ns, name, labels, u, NOW, "None"))
    assert pod["columnDefinitions"] == orjson.loads(COLS)
    assert pod["rows"] == [{"cells": ["pod2", "20m", "15Mi", "2µs"], "object": None}]


def test_table_pod_without_containers_first() -> None:
    # metrics-server's table.go: the columns come from the first item with usage keys; rows
    # before it have no quantity cells, later items without a key render "0"
    empty = PodUsage("ns", "a", None, 0, [])
    full = _table_pods()[1][3]
    parsed = orjson.loads(
        objects.pod_metrics_table(
            [("ns", "a", {}, empty), ("ns", "b", {}, full), ("ns", "c", {}, empty)], NOW, "None"
        )
    )
    assert [c["name"] for c in parsed["columnDefinitions"]] == ["Name", "cpu", "memory", "Window"]
    assert [r["cells"] for r in parsed["rows"]] == [
        ["a", "0s"], ["b", "20m", "15Mi", "2µs"], ["c", "0", "0", "0s"],
    ]
    only_empty = orjson.loads(objects.pod_metrics_table([("ns", "a", {}, empty)], NOW))
    assert [c["name"] for c in only_empty["columnDefinitions"]] == ["Name", "Window"]


def test_pretty() -> None:
    body = objects.node_metrics("a<b", {"k": "v"}, NODE._replace(window_ns=1000), NOW)
    assert objects.pretty(body) == (
        '{\n  "kind": "NodeMetrics",\n  "apiVersion": "metrics.k8s.io/v1beta1",\n'
        '  "metadata": {\n    "name": "a\\u003cb",\n'
        '    "creationTimestamp": "2026-01-01T00:00:20Z",\n    "labels": {\n      "k": "v"\n    }\n'
        '  },\n  "timestamp": "2026-01-01T00:00:12Z",\n  "window": "1µs",\n  "usage": {\n'
        '    "cpu": "1221459987n",\n    "memory": "1681180Ki"\n  }\n}'
    ).encode()
    empty = objects.pretty(objects.pod_metrics_list([], NOW))
    assert empty.endswith(b'"metadata": {},\n  "items": []\n}')
