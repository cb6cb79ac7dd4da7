"""metrics.k8s.io Kubernetes protobuf (``application/vnd.kubernetes.protobuf``), hand encoded.

A body is the magic ``k8s\\x00`` followed by a ``runtime.Unknown`` message
(``typeMeta{apiVersion, kind}``, ``raw`` = the object's own message, ``contentEncoding`` "",
``contentType`` ""). Field numbers are those of ``k8s.io/metrics/pkg/apis/metrics/v1beta1/
generated.proto`` and apimachinery's ``meta/v1``, ``runtime`` and ``api/resource`` protos:

* NodeMetrics: metadata 1 (ObjectMeta), timestamp 2 (Time), window 3 (Duration),
  usage 4 (map<string, Quantity>). PodMetrics: same 1-3, containers 4 (ContainerMetrics:
  name 1, usage 2). Lists: metadata 1 (ListMeta), items 2.
* ObjectMeta: name 1, namespace 3, creationTimestamp 8, labels 11 (map<string, string>).
  Time: seconds 1, nanos 2; Duration: duration 1 (int64 ns); Quantity: string 1.

The bytes follow the gogo-generated Go marshalers: fields in ascending order, non-pointer
scalars always written (an empty ``generateName``, ``generation`` 0, ...), map entries sorted by
key, and a zero ``Time`` (our ``timestamp_ns`` None) written as an empty message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from ..store import NodeUsage, PodUsage
from .format import format_cpu, format_memory

__all__ = [
    "MAGIC",
    "creation_timestamp_field",
    "node_metrics",
    "node_metrics_list",
    "pod_metrics",
    "pod_metrics_list",
    "status",
]

MAGIC: Final = b"k8s\x00"
API_VERSION: Final = "metrics.k8s.io/v1beta1"
_U64: Final = (1 << 64) - 1
_SMALL: Final = tuple(bytes((i,)) for i in range(128))
# varints of 0..16383 (one or two bytes: every length inside a pod's message in practice), and
# 14-bit groups with both continuation bits set, for larger values
_V_LIMIT: Final = 1 << 14
_VARINT: Final = _SMALL + tuple(bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(128, _V_LIMIT))
_CONT2: Final = tuple(bytes(((i & 0x7F) | 0x80, (i >> 7) | 0x80)) for i in range(_V_LIMIT))


def _varint(n: int) -> bytes:
    """Base-128 varint of ``n``; a negative ``n`` is its 64-bit two's complement (int64)."""
    if 0 <= n < _V_LIMIT:
        return _VARINT[n]
    n &= _U64
    out = b""
    while n >= _V_LIMIT:  # 14 bits (two bytes, both with the continuation bit) at a time
        out += _CONT2[n & 0x3FFF]
        n >>= 14
    return out + _VARINT[n]


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag byte(s), varint length, payload."""
    n = len(payload)
    return tag + (_VARINT[n] if n < _V_LIMIT else _varint(n)) + payload


def _str(tag: bytes, s: str) -> bytes:
    return _ld(tag, s.encode())


def _time(ns: int | None) -> bytes:
    """``metav1.Time`` message (Timestamp{seconds 1, nanos 2}); empty for the zero time."""
    if ns is None:
        return b""
    seconds, nanos = divmod(int(ns), 1_000_000_000)
    return b"\x08" + _varint(seconds) + b"\x10" + _varint(nanos)


def creation_timestamp_field(now_ns: int) -> bytes:
    """ObjectMeta's ``creationTimestamp`` (field 8) for a request at ``now_ns``, as encoded."""
    return _ld(b"\x42", _time(now_ns))


def _duration(ns: int) -> bytes:
    return b"\x08" + _varint(int(ns))


_EMPTY_OBJECT_FIELDS: Final = b"\x22\x00\x2a\x00\x32\x00\x38\x00"  # selfLink, uid, rv, generation


def _object_meta(name: str, namespace: str, labels: Mapping[str, str], created: bytes) -> bytes:
    parts = [
        _str(b"\x0a", name), b"\x12\x00", _str(b"\x1a", namespace), _EMPTY_OBJECT_FIELDS,
        _ld(b"\x42", created),
    ]
    if labels:
        for k in sorted(labels):
            parts.append(_ld(b"\x5a", _str(b"\x0a", k) + _str(b"\x12", labels[k])))
    return b"".join(parts)


_LIST_META: Final = b"\x0a\x06\x0a\x00\x12\x00\x1a\x00"  # field 1: selfLink, rv, continue ""


def _usage_entries(tag: bytes, cpu: int, mem: int) -> bytes:
    """Two ``map<string, Quantity>`` entries (``cpu``, ``memory``: sorted) with field ``tag``."""
    return _ld(tag, b"\x0a\x03cpu" + _ld(b"\x12", _str(b"\x0a", format_cpu(cpu)))) + _ld(
        tag, b"\x0a\x06memory" + _ld(b"\x12", _str(b"\x0a", format_memory(mem)))
    )


def _node_raw(name: str, labels: Mapping[str, str], u: NodeUsage, created: bytes) -> bytes:
    return b"".join(
        (
            _ld(b"\x0a", _object_meta(name, "", labels, created)),
            _ld(b"\x12", _time(u.timestamp_ns)),
            _ld(b"\x1a", _duration(u.window_ns)),
            _usage_entries(b"\x22", u.cpu_nanocores, u.memory_bytes),
        )
    )


def _pod_raw(
    namespace: str, name: str, labels: Mapping[str, str], u: PodUsage, created: bytes
) -> bytes:
    parts = [
        _ld(b"\x0a", _object_meta(name, namespace, labels, created)),
        _ld(b"\x12", _time(u.timestamp_ns)),
        _ld(b"\x1a", _duration(u.window_ns)),
    ]
    for c in u.containers:
        parts.append(
            _ld(b"\x22", _str(b"\x0a", c.name) + _usage_entries(
                b"\x12", c.cpu_nanocores, c.memory_bytes
            ))
        )
    return b"".join(parts)


def _envelope(kind: str, raw: bytes, api_version: str = API_VERSION) -> bytes:
    """``k8s\\x00`` + runtime.Unknown{typeMeta 1, raw 2, contentEncoding 3, contentType 4}."""
    type_meta = _str(b"\x0a", api_version) + _str(b"\x12", kind)
    return b"".join((MAGIC, _ld(b"\x0a", type_meta), _ld(b"\x12", raw), b"\x1a\x00\x22\x00"))


def node_metrics(name: str, labels: Mapping[str, str], usage: NodeUsage, now_ns: int) -> bytes:
    """A ``NodeMetrics`` protobuf body; ``now_ns`` is its ``creationTimestamp``."""
    return _envelope("NodeMetrics", _node_raw(name, labels, usage, _time(now_ns)))


def pod_metrics(
    namespace: str, name: str, labels: Mapping[str, str], usage: PodUsage, now_ns: int
) -> bytes:
    """A ``PodMetrics`` protobuf body."""
    return _envelope("PodMetrics", _pod_raw(namespace, name, labels, usage, _time(now_ns)))


def node_metrics_list(
    items: Iterable[tuple[str, Mapping[str, str], NodeUsage]], now_ns: int
) -> bytes:
    """A ``NodeMetricsList`` protobuf body; items in the order given."""
    created = _time(now_ns)
    parts = [_LIST_META]
    parts.extend(_ld(b"\x12", _node_raw(n, labels, u, created)) for n, labels, u in items)
    return _envelope("NodeMetricsList", b"".join(parts))


# the bytes before a quantity string of length n in a usage map entry (field 2 of
# ContainerMetrics): entry{key 1 "cpu"/"memory", value 2 Quantity{string 1}}; quantities are
# short (at most ~25 characters), the tables go to 100
_CPU_ENTRY_PREFIX: Final = tuple(
    b"\x12" + _VARINT[n + 9] + b"\x0a\x03cpu\x12" + _VARINT[n + 2] + b"\x0a" + _VARINT[n]
    for n in range(100))
_MEMORY_ENTRY_PREFIX: Final = tuple(
    b"\x12" + _VARINT[n + 12] + b"\x0a\x06memory\x12" + _VARINT[n + 2] + b"\x0a" + _VARINT[n]
    for n in range(100))


def pod_metrics_list(
    items: Iterable[tuple[str, str, Mapping[str, str], PodUsage]], now_ns: int
) -> bytes:
    """A ``PodMetricsList`` protobuf body; items in the order given."""
    # the per-pod encoder of _pod_raw, flattened: the repeated pieces (namespace + fixed
    # ObjectMeta fields, label entries per labels object, container names, timestamps,
    # windows) are encoded once per body, lengths come from one varint table, and every
    # item is one concatenation appended to a single join
    created = _ld(b"\x42", _time(now_ns))
    ns_cache: dict[str, bytes] = {}
    labels_cache: dict[int, tuple[Mapping[str, str], bytes]] = {}
    sec_cache: dict[int, bytes] = {}
    win_cache: dict[int, bytes] = {}
    cname_cache: dict[str, bytes] = {}
    v = _VARINT
    c2 = _CONT2
    lim = _V_LIMIT
    cpu_pre, mem_pre = _CPU_ENTRY_PREFIX, _MEMORY_ENTRY_PREFIX
    fcpu, fmem = format_cpu, format_memory
    parts = [_LIST_META]
    append = parts.append
    for namespace, name, labels, u in items:
        ns = ns_cache.get(namespace)
        if ns is None:
            ns = ns_cache[namespace] = b"\x12\x00" + _str(b"\x1a", namespace) + (
                _EMPTY_OBJECT_FIELDS + created
            )
        nb = name.encode()
        n = len(nb)
        if labels:
            hit = labels_cache.get(id(labels))
            if hit is None or hit[0] is not labels:
                # keyed by identity (informers share one labels object between pods); the
                # object is kept in the entry so its id cannot be reused during the call
                enc = b"".join([_ld(b"\x5a", _str(b"\x0a", k) + _str(b"\x12", labels[k]))
                                for k in sorted(labels)])
                labels_cache[id(labels)] = (labels, enc)
            else:
                enc = hit[1]
            meta = b"\x0a" + (v[n] if n < lim else _varint(n)) + nb + ns + enc
        else:
            meta = b"\x0a" + (v[n] if n < lim else _varint(n)) + nb + ns
        t = u.timestamp_ns
        if t is None:
            ts = b"\x12\x00"
        else:
            # pods rarely share a timestamp, but they share its seconds
            sec, nanos = divmod(t, 1_000_000_000)
            sec_b = sec_cache.get(sec)
            if sec_b is None:
                sec_b = sec_cache[sec] = b"\x08" + _varint(sec)
            if nanos < lim:
                time_b = sec_b + b"\x10" + v[nanos]
            elif nanos < 1 << 28:
                time_b = sec_b + b"\x10" + c2[nanos & 0x3FFF] + v[nanos >> 14]
            else:
                time_b = (sec_b + b"\x10" + c2[nanos & 0x3FFF] + c2[(nanos >> 14) & 0x3FFF]
                          + v[nanos >> 28])
            ts = b"\x12" + v[len(time_b)] + time_b
        w = u.window_ns
        win = win_cache.get(w)
        if win is None:
            win = win_cache[w] = _ld(b"\x1a", _duration(w))
        n = len(meta)
        body = b"\x0a" + (v[n] if n < lim else _varint(n)) + meta + ts + win
        for c in u.containers:
            cn = cname_cache.get(c.name)
            if cn is None:
                cn = cname_cache[c.name] = _str(b"\x0a", c.name)
            cpu = fcpu(c.cpu_nanocores).encode()
            mem = fmem(c.memory_bytes).encode()
            entries = cpu_pre[len(cpu)] + cpu + mem_pre[len(mem)] + mem
            n = len(cn) + len(entries)
            body += b"\x22" + (v[n] if n < lim else _varint(n)) + cn + entries
        n = len(body)
        append(b"\x12" + (v[n] if n < lim else _varint(n)) + body)
    return _envelope("PodMetricsList", b"".join(parts))


def status(code: int, reason: str, message: str, details: Mapping[str, object] | None) -> bytes:
    """A ``Status`` (``v1``) protobuf body, for errors negotiated to protobuf (the HPA's client).

    Status: metadata 1 (ListMeta), status 2, message 3, reason 4, details 5 (omitted when None),
    code 6. StatusDetails: name 1, group 2, kind 3, causes 4 (StatusCause: reason 1, message 2,
    field 3), retryAfterSeconds 5, uid 6. ``details`` takes the JSON keys of StatusDetails.
    """
    parts = [
        _LIST_META, _str(b"\x12", "Failure"), _str(b"\x1a", message), _str(b"\x22", reason),
    ]
    if details is not None:
        causes = details.get("causes") or []
        if not isinstance(causes, list):
            raise TypeError("details['causes'] must be a list of dicts")
        d = [
            _str(b"\x0a", str(details.get("name", ""))),
            _str(b"\x12", str(details.get("group", ""))),
            _str(b"\x1a", str(details.get("kind", ""))),
        ]
        for cause in causes:
            d.append(
                _ld(
                    b"\x22",
                    _str(b"\x0a", str(cause.get("reason", "")))
                    + _str(b"\x12", str(cause.get("message", "")))
                    + _str(b"\x1a", str(cause.get("field", ""))),
                )
            )
        retry = details.get("retryAfterSeconds", 0)
        if not isinstance(retry, int):
            raise TypeError("details['retryAfterSeconds'] must be an int")
        d.append(b"\x28" + _varint(retry))
        d.append(_str(b"\x32", str(details.get("uid", ""))))
        parts.append(_ld(b"\x2a", b"".join(d)))
    parts.append(b"\x30" + _varint(int(code)))
    return _envelope("Status", b"".join(parts), "v1")
