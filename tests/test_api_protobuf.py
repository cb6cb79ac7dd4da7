"""Kubernetes protobuf bodies, decoded by google.protobuf with the real field numbers.

The message classes are built here from a descriptor that transcribes the generated.proto files
(k8s.io/metrics .../v1beta1, apimachinery meta/v1, runtime, api/resource), proto2 like them.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from fastmetrics.api import protobuf
from fastmetrics.store import ContainerUsage, NodeUsage, PodUsage

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
STR, I64, I32, BYTES, MSG = F.TYPE_STRING, F.TYPE_INT64, F.TYPE_INT32, F.TYPE_BYTES, F.TYPE_MESSAGE

S = 1_000_000_000
T0 = 1767225600 * S
NOW = T0 + 20 * S + 123_456_789


def _message(
    fp: descriptor_pb2.FileDescriptorProto,
    name: str,
    fields: list[tuple[str, int, int, int, str | None]],
    maps: dict[str, str] | None = None,
) -> None:
    m = fp.message_type.add(name=name)
    for key, value_type in (maps or {}).items():
        entry = m.nested_type.add(name=key[0].upper() + key[1:] + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=OPT, type=STR)
        if value_type == "string":
            entry.field.add(name="value", number=2, label=OPT, type=STR)
        else:
            entry.field.add(name="value", number=2, label=OPT, type=MSG, type_name=value_type)
    for fname, number, label, ftype, type_name in fields:
        f = m.field.add(name=fname, number=number, label=label, type=ftype)
        if type_name:
            f.type_name = type_name


def _classes() -> dict[str, Any]:
    fp = descriptor_pb2.FileDescriptorProto(
        name="k8s_metrics_test.proto", package="k", syntax="proto2"
    )
    _message(fp, "Quantity", [("string", 1, OPT, STR, None)])
    _message(fp, "Time", [("seconds", 1, OPT, I64, None), ("nanos", 2, OPT, I32, None)])
    _message(fp, "Duration", [("duration", 1, OPT, I64, None)])
    _message(
        fp, "ObjectMeta",
        [
            ("name", 1, OPT, STR, None), ("generateName", 2, OPT, STR, None),
            ("namespace", 3, OPT, STR, None), ("selfLink", 4, OPT, STR, None),
            ("uid", 5, OPT, STR, None), ("resourceVersion", 6, OPT, STR, None),
            ("generation", 7, OPT, I64, None), ("creationTimestamp", 8, OPT, MSG, ".k.Time"),
            ("labels", 11, REP, MSG, ".k.ObjectMeta.LabelsEntry"),
        ],
        {"labels": "string"},
    )
    _message(
        fp, "ListMeta",
        [("selfLink", 1, OPT, STR, None), ("resourceVersion", 2, OPT, STR, None),
         ("continue", 3, OPT, STR, None)],
    )
    _message(
        fp, "ContainerMetrics",
        [("name", 1, OPT, STR, None), ("usage", 2, REP, MSG, ".k.ContainerMetrics.UsageEntry")],
        {"usage": ".k.Quantity"},
    )
    common = [
        ("metadata", 1, OPT, MSG, ".k.ObjectMeta"), ("timestamp", 2, OPT, MSG, ".k.Time"),
        ("window", 3, OPT, MSG, ".k.Duration"),
    ]
    _message(
        fp, "NodeMetrics", [*common, ("usage", 4, REP, MSG, ".k.NodeMetrics.UsageEntry")],
        {"usage": ".k.Quantity"},
    )
    _message(fp, "PodMetrics", [*common, ("containers", 4, REP, MSG, ".k.ContainerMetrics")])
    for kind in ("NodeMetrics", "PodMetrics"):
        _message(
            fp, f"{kind}List",
            [("metadata", 1, OPT, MSG, ".k.ListMeta"), ("items", 2, REP, MSG, f".k.{kind}")],
        )
    _message(fp, "TypeMeta", [("apiVersion", 1, OPT, STR, None), ("kind", 2, OPT, STR, None)])
    _message(
        fp, "Unknown",
        [("typeMeta", 1, OPT, MSG, ".k.TypeMeta"), ("raw", 2, OPT, BYTES, None),
         ("contentEncoding", 3, OPT, STR, None), ("contentType", 4, OPT, STR, None)],
    )
    _message(
        fp, "StatusCause",
        [("reason", 1, OPT, STR, None), ("message", 2, OPT, STR, None),
         ("field", 3, OPT, STR, None)],
    )
    _message(
        fp, "StatusDetails",
        [("name", 1, OPT, STR, None), ("group", 2, OPT, STR, None), ("kind", 3, OPT, STR, None),
         ("uid", 6, OPT, STR, None), ("causes", 4, REP, MSG, ".k.StatusCause"),
         ("retryAfterSeconds", 5, OPT, I32, None)],
    )
    _message(
        fp, "Status",
        [("metadata", 1, OPT, MSG, ".k.ListMeta"), ("status", 2, OPT, STR, None),
         ("message", 3, OPT, STR, None), ("reason", 4, OPT, STR, None),
         ("details", 5, OPT, MSG, ".k.StatusDetails"), ("code", 6, OPT, I32, None)],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fp)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"k.{m.name}"))
        for m in fp.message_type
    }


PB = _classes()


def decode(body: bytes, kind: str, api_version: str = "metrics.k8s.io/v1beta1") -> Any:
    assert body[:4] == b"k8s\x00"
    unknown = PB["Unknown"]()
    unknown.ParseFromString(body[4:])
    assert unknown.typeMeta.apiVersion == api_version
    assert unknown.typeMeta.kind == kind
    assert unknown.HasField("contentEncoding") and unknown.contentEncoding == ""
    assert unknown.HasField("contentType") and unknown.contentType == ""
    # every byte is accounted for: re-encoding what was decoded gives the same bytes
    assert unknown.SerializeToString(deterministic=True) == body[4:]
    obj = PB[kind]()
    obj.ParseFromString(unknown.raw)
    assert obj.SerializeToString(deterministic=True) == unknown.raw
    return obj


def ns_of(t: Any) -> int:
    return int(t.seconds) * S + int(t.nanos)


def usage_of(m: Any) -> dict[str, str]:
    return {k: v.string for k, v in m.items()}


def check_meta(meta: Any, name: str, namespace: str, labels: dict[str, str]) -> None:
    assert meta.name == name and meta.namespace == namespace
    for f in ("generateName", "selfLink", "uid", "resourceVersion"):
        assert meta.HasField(f) and getattr(meta, f) == ""
    assert meta.HasField("generation") and meta.generation == 0
    assert ns_of(meta.creationTimestamp) == NOW
    assert dict(meta.labels) == labels


NODE = NodeUsage(1221459987, 1681180 * 1024, T0 + 12 * S + 345_000_000, 15_013_000_000)
WEB = PodUsage(
    "default", "web-5d4f8c7b9-q8r2n", T0 + 13 * S + 199_000_000, 14_977_000_000,
    [
        ContainerUsage("nginx", 50914735, 24832 * 1024),
        ContainerUsage("log-shipper", 3004005, 9 << 20),
    ],
)


def test_node_metrics() -> None:
    labels = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": "kind-worker"}
    body = protobuf.node_metrics("kind-worker", labels, NODE, NOW)
    m = decode(body, "NodeMetrics")
    check_meta(m.metadata, "kind-worker", "", labels)
    assert ns_of(m.timestamp) == NODE.timestamp_ns
    assert m.window.duration == 15_013_000_000
    assert usage_of(m.usage) == {"cpu": "1221459987n", "memory": "1681180Ki"}
    # field order and the map entries sorted as Go writes them
    raw = body.split(b"k8s\x00", 1)[1]
    assert raw.index(b"kubernetes.io/hostname") < raw.index(b"kubernetes.io/os")
    assert raw.index(b"\x0a\x03cpu") < raw.index(b"\x0a\x06memory")


def test_pod_metrics() -> None:
    body = protobuf.pod_metrics("default", WEB.name, {"app": "web"}, WEB, NOW)
    m = decode(body, "PodMetrics")
    check_meta(m.metadata, WEB.name, "default", {"app": "web"})
    assert ns_of(m.timestamp) == WEB.timestamp_ns
    assert m.window.duration == 14_977_000_000
    assert [(c.name, usage_of(c.usage)) for c in m.containers] == [
        ("nginx", {"cpu": "50914735n", "memory": "24832Ki"}),
        ("log-shipper", {"cpu": "3004005n", "memory": "9Mi"}),
    ]


def test_null_timestamp_is_an_empty_time() -> None:
    u = PodUsage("ns", "p", None, 0, [])
    m = decode(protobuf.pod_metrics("ns", "p", {}, u, NOW), "PodMetrics")
    assert m.HasField("timestamp")
    assert not m.timestamp.HasField("seconds") and not m.timestamp.HasField("nanos")
    assert m.HasField("window") and m.window.duration == 0
    assert len(m.containers) == 0
    assert len(m.metadata.labels) == 0


def test_negative_and_large_values() -> None:
    u = NodeUsage(2**64 - 1, 2**63 + 5, -1, -5)
    m = decode(protobuf.node_metrics("n", {}, u, -S - 1), "NodeMetrics")
    assert ns_of(m.timestamp) == -1
    assert m.timestamp.nanos == 999_999_999 and m.timestamp.seconds == -1
    assert m.window.duration == -5
    assert usage_of(m.usage) == {"cpu": "18446744073709551610n", "memory": "9223372036854775810"}
    assert ns_of(m.metadata.creationTimestamp) == -S - 1


def test_node_list() -> None:
    items = [
        ("node1", {"a": "1"}, NODE),
        ("node2", {}, NODE._replace(cpu_nanocores=0, window_ns=1000)),
        ("ノード-é", {"k": "値" * 200}, NODE),  # multi-byte text and a length over 127
    ]
    m = decode(protobuf.node_metrics_list(items, NOW), "NodeMetricsList")
    assert m.HasField("metadata")
    assert [i.metadata.name for i in m.items] == ["node1", "node2", "ノード-é"]
    assert dict(m.items[2].metadata.labels) == {"k": "値" * 200}
    assert usage_of(m.items[1].usage) == {"cpu": "0", "memory": "1681180Ki"}
    assert m.items[1].window.duration == 1000
    for (name, labels, u), item in zip(items, m.items, strict=True):
        single = decode(protobuf.node_metrics(name, labels, u, NOW), "NodeMetrics")
        assert single == item


def test_pod_list_items_are_the_single_objects() -> None:
    items = [
        ("default", WEB.name, {"app": "web", "pod-template-hash": "5d4f8c7b9"}, WEB),
        ("kube-system", "p" * 300, {}, WEB._replace(timestamp_ns=None, containers=[])),
        ("kube-system", "q", {}, WEB._replace(window_ns=2**40)),
    ]
    body = protobuf.pod_metrics_list(items, NOW)
    m = decode(body, "PodMetricsList")
    assert [(i.metadata.namespace, i.metadata.name) for i in m.items] == [
        (ns, name) for ns, name, _, _ in items
    ]
    for (ns, name, labels, u), item in zip(items, m.items, strict=True):
        single = decode(protobuf.pod_metrics(ns, name, labels, u, NOW), "PodMetrics")
        assert single == item
        check_meta(item.metadata, name, ns, labels)
        # byte for byte: the list's item is the single object's raw message
        raw = PB["Unknown"]()
        raw.ParseFromString(protobuf.pod_metrics(ns, name, labels, u, NOW)[4:])
        assert item.SerializeToString(deterministic=True) == raw.raw


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (protobuf.node_metrics_list, "NodeMetricsList"),
        (protobuf.pod_metrics_list, "PodMetricsList"),
    ],
)
def test_empty_lists(fn: Any, kind: str) -> None:
    body = fn([], NOW)
    m = decode(body, kind)
    assert len(m.items) == 0
    assert m.HasField("metadata")
    assert body == (
        b"k8s\x00\x0a" + bytes([len("metrics.k8s.io/v1beta1") + len(kind) + 4])
        + b"\x0a\x16metrics.k8s.io/v1beta1\x12" + bytes([len(kind)]) + kind.encode()
        + b"\x12\x08\x0a\x06\x0a\x00\x12\x00\x1a\x00\x1a\x00\x22\x00"
    )


def test_150k_pods() -> None:
    items = []
    for i in range(150_000):
        ns = f"ns-{i % 500}"
        name = f"pod-{i:06d}-x7k2p"
        cs = [ContainerUsage("app", 1_000_000 + i, (1000 + i) * 1024)]
        if i % 2:
            cs.append(ContainerUsage("sidecar", 3004005, 9 << 20))
        labels = {"app": f"app-{i % 300}", "pod-template-hash": f"{i:x}"}
        items.append((ns, name, labels, PodUsage(ns, name, T0 + i * 1000, 15 * S + i % 7, cs)))
    start = time.perf_counter()
    body = protobuf.pod_metrics_list(items, NOW)
    assert time.perf_counter() - start < 3.0  # ~0.55 s on the reference machine
    m = decode(body, "PodMetricsList")
    assert len(m.items) == 150_000
    last = m.items[-1]
    assert last.metadata.name == "pod-149999-x7k2p"
    assert dict(last.metadata.labels) == {"app": "app-299", "pod-template-hash": f"{149999:x}"}
    assert usage_of(last.containers[1].usage) == {"cpu": "3004005n", "memory": "9Mi"}


def test_status_not_found() -> None:
    details = {"name": "default/db-0", "group": "metrics.k8s.io", "kind": "podmetrics"}
    body = protobuf.status(404, "NotFound", 'podmetrics.metrics.k8s.io "default/db-0" not found',
                           details)
    m = decode(body, "Status", "v1")
    assert m.HasField("metadata")
    assert (m.status, m.reason, m.code) == ("Failure", "NotFound", 404)
    assert m.message == 'podmetrics.metrics.k8s.io "default/db-0" not found'
    assert (m.details.name, m.details.group, m.details.kind) == (
        "default/db-0", "metrics.k8s.io", "podmetrics"
    )
    assert m.details.HasField("uid") and m.details.retryAfterSeconds == 0
    assert len(m.details.causes) == 0


def test_status_causes_and_no_details() -> None:
    body = protobuf.status(
        500, "InternalError", "Internal error occurred: boom",
        {"causes": [{"message": "boom"}, {"reason": "r", "field": "f"}], "retryAfterSeconds": 3},
    )
    m = decode(body, "Status", "v1")
    assert [(c.reason, c.message, c.field) for c in m.details.causes] == [
        ("", "boom", ""), ("r", "", "f"),
    ]
    assert m.details.retryAfterSeconds == 3 and m.code == 500
    bad = decode(protobuf.status(400, "BadRequest", "nope", None), "Status", "v1")
    assert not bad.HasField("details") and bad.code == 400
    with pytest.raises(TypeError):
        protobuf.status(500, "InternalError", "x", {"causes": "boom"})
