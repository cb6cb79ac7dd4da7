"""The pure-Python twin of ``fastmetrics._render`` (same functions, same bytes, same errors).

Used with ``FASTMETRICS_NO_EXTENSIONS=1`` or when the extension is not built; the property
tests hold the two equal, and both equal to the object-by-object renderers of ``objects`` and
``protobuf``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from ..errors import FastMetricsError
from .protobuf import _ld, _varint  # the object path's field encoders

if TYPE_CHECKING:
    from .render import PodTable

__all__ = [
    "NameIndex",
    "gather",
    "intern",
    "join",
    "pack",
    "pod_list_json",
    "pod_list_protobuf",
    "sort_pods",
    "take_packed",
]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
T = TypeVar("T")

_J_HEAD: Final = (b'{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1",'
                  b'"metadata":{},"items":[')
_P_TYPE_META: Final = b"\x0a\x16metrics.k8s.io/v1beta1\x12\x0ePodMetricsList"
_P_LIST_META: Final = b"\x0a\x06\x0a\x00\x12\x00\x1a\x00"
_P_OBJECT_FIELDS: Final = b"\x22\x00\x2a\x00\x32\x00\x38\x00"

# what needs escaping in a JSON string (orjson's escapes plus Go's HTML-safe ones)
_ESCAPE: Final = re.compile(b'["\\\\<>&\x00-\x1f]|\xe2\x80[\xa8\xa9]')
_SHORT: Final = {b'"': b'\\"', b"\\": b"\\\\", b"\b": b"\\b", b"\t": b"\\t", b"\n": b"\\n",
                 b"\f": b"\\f", b"\r": b"\\r", "\u2028".encode(): b"\\u2028",
                 "\u2029".encode(): b"\\u2029"}


def _escape_one(m: re.Match[bytes]) -> bytes:
    c = m.group()
    return _SHORT.get(c) or b"\\u00%02x" % c[0]


def _json_str(s: bytes) -> bytes:
    return b'"' + _ESCAPE.sub(_escape_one, s) + b'"'


# ---------------------------------------------------------------------------- building a table


def pack(strings: Sequence[str]) -> tuple[bytes, I64]:
    """The strings' UTF-8 back to back, and ``n + 1`` int64 offsets."""
    parts = []
    for i, s in enumerate(strings):
        if type(s) is not str:
            raise FastMetricsError(f"pack: item {i} is {type(s).__name__}, not str")
        parts.append(s.encode())
    off = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=off[1:])
    return b"".join(parts), off


def _row_list(lists: Sequence[Any], o: int) -> list[Any]:
    if o < 0 or o >= len(lists):
        raise FastMetricsError(f"list index {o} out of range")
    cur = lists[o]
    if type(cur) is not list:
        raise FastMetricsError(f"lists[{o}] is {type(cur).__name__}, not list")
    return cur


def _pairs(name: str, lists: Sequence[Sequence[T]], outer: I32, inner: I32) -> list[T]:
    if inner.shape[0] != outer.shape[0]:
        raise FastMetricsError(f"{name}: outer and inner differ in length")
    out = []
    for o, k in zip(outer.tolist(), inner.tolist(), strict=True):
        cur = _row_list(lists, o)
        if k < 0 or k >= len(cur):
            raise FastMetricsError(f"{name}: index {k} out of range for lists[{o}]")
        out.append(cur[k])
    return out


def gather(lists: Sequence[Sequence[T]], outer: I32, inner: I32) -> list[T]:
    """``[lists[outer[i]][inner[i]] for i in range(n)]`` (each of ``lists`` a list)."""
    return _pairs("gather", lists, outer, inner)


def intern(lists: Sequence[Sequence[str]], outer: I32, inner: I32) -> tuple[I32, list[str]]:
    """Ids of ``lists[outer[i]][inner[i]]`` into the distinct values (first appearance first)."""
    seen: dict[str, int] = {}
    values: list[str] = []
    ids = np.empty(outer.shape[0], np.int32)
    for i, item in enumerate(_pairs("intern", lists, outer, inner)):
        k = seen.get(item)
        if k is None:
            k = seen[item] = len(values)
            values.append(item)
        ids[i] = k
    return ids, values


def _check_offsets(off: I64, size: int, what: str) -> None:
    if off.shape[0] < 1 or off[0] != 0 or off[-1] > size or bool(np.any(np.diff(off) < 0)):
        raise FastMetricsError(f"pod table: {what} offsets are not within their buffer")


def sort_pods(ns_rank: I32, name_buf: bytes, name_off: I64) -> I32:
    """The order of pods by (namespace rank, name's UTF-8 bytes), stable, as int32."""
    n = ns_rank.shape[0]
    if name_off.shape[0] != n + 1:
        raise FastMetricsError("sort_pods: name offsets must number pods + 1")
    _check_offsets(name_off, len(name_buf), "name")
    off = name_off.tolist()
    ranks = ns_rank.tolist()
    keys = [(ranks[i], name_buf[off[i]:off[i + 1]]) for i in range(n)]
    return np.array(sorted(range(n), key=keys.__getitem__), np.int32).reshape(n)


# ---------------------------------------------------------------------------- the join


class NameIndex:
    """The position of each pod of a table by (namespace id, name) (see ``_render``)."""

    def __init__(self, ns_id: I32, name_buf: bytes, name_off: I64) -> None:
        n = ns_id.shape[0]
        if name_off.shape[0] != n + 1:
            raise FastMetricsError("name index: name offsets must number pods + 1")
        _check_offsets(name_off, len(name_buf), "name")
        off = name_off.tolist()
        self._pos: dict[tuple[int, bytes], int] = {}
        for j, ns in enumerate(ns_id.tolist()):
            key = (ns, name_buf[off[j]:off[j + 1]])
            if key in self._pos:
                raise FastMetricsError(f"name index: pod {j} appears twice")
            self._pos[key] = j

    def __len__(self) -> int:
        return len(self._pos)

    def position(self, namespace_id: int, name: str) -> int:
        """The position of (``namespace_id``, ``name``), or -1."""
        try:
            encoded = name.encode()
        except UnicodeEncodeError:
            return -1  # not UTF-8, so not in the table
        return self._pos.get((namespace_id, encoded), -1)


def join(
    candidates: Sequence[Any],
    ns_index: dict[str, int],
    index: NameIndex,
    n: int,
    blob_of: Callable[[Mapping[str, str]], bytes],
) -> tuple[list[bytes | None], U8]:
    """Place the candidate pods in the table: ``(blobs, mask)`` (see ``_render.join``)."""
    if len(index) != n:
        raise FastMetricsError(f"join: the index has {len(index)} pods, not {n}")
    blobs: list[bytes | None] = [None] * n
    mask = np.zeros(n, np.uint8)
    cache: dict[int, tuple[Mapping[str, str], bytes]] = {}
    for i, pod in enumerate(candidates):
        ns_id = ns_index.get(pod.namespace)
        if ns_id is None:
            continue
        name = pod.name
        if type(name) is not str:
            raise FastMetricsError(f"join: candidate {i}'s name is not a str")
        j = index.position(ns_id, name)
        if j < 0:
            continue
        labels = pod.labels
        hit = cache.get(id(labels))
        if hit is None:
            blob = blob_of(labels)
            if type(blob) is not bytes:
                raise FastMetricsError(f"join: blob_of returned {type(blob).__name__}, not bytes")
            cache[id(labels)] = (labels, blob)  # the labels stay alive: their id stays theirs
        else:
            blob = hit[1]
        blobs[j] = blob
        mask[j] = 1
    return blobs, mask


def take_packed(buf: bytes, off: I64, order: I32) -> tuple[bytes, I64]:
    """Packed strings ``buf``/``off`` in the order ``order``: a new ``(bytes, offsets)``."""
    k = off.shape[0] - 1
    if k < 0:
        raise FastMetricsError("take_packed: offsets must number strings + 1")
    _check_offsets(off, len(buf), "packed")
    o = off.tolist()
    parts = []
    for j in order.tolist():
        if j < 0 or j >= k:
            raise FastMetricsError(f"take_packed: index {j} out of range for {k} strings")
        parts.append(buf[o[j]:o[j + 1]])
    out_off = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=out_off[1:])
    return b"".join(parts), out_off


# ---------------------------------------------------------------------------- the columns


class _Cols:
    """A PodTable's columns as Python lists and bytes slices, checked like ``_render``."""

    def __init__(self, table: PodTable, blobs: list[bytes | None]) -> None:
        n = table.ns_id.shape[0]
        rows = table.cname_id.shape[0]
        k = table.ns_off.shape[0] - 1
        m = table.cname_off.shape[0] - 1
        if (table.timestamp_ns.shape[0] != n or table.window_ns.shape[0] != n
                or table.name_off.shape[0] != n + 1 or table.ts_off.shape[0] != n + 1
                or table.win_off.shape[0] != n + 1 or table.container_off.shape[0] != n + 1
                or table.cpu_off.shape[0] != rows + 1 or table.mem_off.shape[0] != rows + 1
                or k < 0 or m < 0):
            raise FastMetricsError("pod table: column lengths disagree")
        for what, off, buf in (("ns", table.ns_off, table.ns_buf),
                               ("name", table.name_off, table.name_buf),
                               ("ts", table.ts_off, table.ts_buf),
                               ("win", table.win_off, table.win_buf),
                               ("cname", table.cname_off, table.cname_buf),
                               ("cpu", table.cpu_off, table.cpu_buf),
                               ("mem", table.mem_off, table.mem_buf)):
            _check_offsets(off, len(buf), what)
        _check_offsets(table.container_off, rows, "container")
        bad = np.flatnonzero((table.ns_id < 0) | (table.ns_id >= k))
        if bad.shape[0]:
            raise FastMetricsError(f"pod table: namespace id out of range at pod {bad[0]}")
        bad = np.flatnonzero((table.cname_id < 0) | (table.cname_id >= m))
        if bad.shape[0]:
            raise FastMetricsError(
                f"pod table: container name id out of range at row {bad[0]}")
        if len(blobs) != n:
            raise FastMetricsError(f"label entries: {len(blobs)} for {n} pods")
        for j, b in enumerate(blobs):
            if b is not None and type(b) is not bytes:
                raise FastMetricsError(f"label entries of pod {j}: bytes or None expected, "
                                       f"not {type(b).__name__}")
        self.n = n
        self.ns = _split(table.ns_buf, table.ns_off)
        self.name = _split(table.name_buf, table.name_off)
        self.ns_id = table.ns_id.tolist()
        self.timestamp_ns = table.timestamp_ns.tolist()
        self.window_ns = table.window_ns.tolist()
        self.ts = _split(table.ts_buf, table.ts_off)
        self.win = _split(table.win_buf, table.win_off)
        self.container_off = table.container_off.tolist()
        self.cname_id = table.cname_id.tolist()
        self.cname = _split(table.cname_buf, table.cname_off)
        self.cpu = _split(table.cpu_buf, table.cpu_off)
        self.mem = _split(table.mem_buf, table.mem_off)
        self.blobs = blobs


def _split(buf: bytes, off: I64) -> list[bytes]:
    o = off.tolist()
    return [buf[o[i]:o[i + 1]] for i in range(len(o) - 1)]


def _read_varint(b: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while pos < len(b) and shift < 64:
        c = b[pos]
        pos += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, pos
        shift += 7
    raise ValueError


def _read_field(b: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    if pos >= len(b) or b[pos] != tag:
        raise ValueError
    ln, pos = _read_varint(b, pos + 1)
    if ln > len(b) - pos:
        raise ValueError
    return b[pos:pos + ln], pos + ln


def _labels_json(blob: bytes, j: int) -> bytes:
    """``,"labels":{...}`` from ObjectMeta label entries, b"" for none."""
    if not blob:
        return b""
    out = []
    pos = 0
    try:
        while pos < len(blob):
            entry, pos = _read_field(blob, pos, 0x5A)
            k, epos = _read_field(entry, 0, 0x0A)
            v, epos = _read_field(entry, epos, 0x12)
            if epos != len(entry):
                raise ValueError
            out.append(_json_str(k) + b":" + _json_str(v))
    except ValueError:
        raise FastMetricsError(f"label entries of pod {j} are malformed") from None
    return b',"labels":{' + b",".join(out) + b"}"


# ---------------------------------------------------------------------------- JSON


def pod_list_json(table: PodTable, blobs: list[bytes | None], created: bytes) -> bytes:
    """A ``PodMetricsList`` JSON body (see ``_render.pod_list_json``)."""
    c = _Cols(table, blobs)
    ns_q = [_json_str(s) for s in c.ns]
    cname_q = [_json_str(s) for s in c.cname]
    items = []
    for j in range(c.n):
        blob = c.blobs[j]
        if blob is None:
            continue
        a, b = c.container_off[j], c.container_off[j + 1]
        ts = b'"' + c.ts[j] + b'"' if b > a else b"null"
        containers = b",".join([
            b'{"name":' + cname_q[c.cname_id[r]] + b',"usage":{"cpu":"' + c.cpu[r]
            + b'","memory":"' + c.mem[r] + b'"}}'
            for r in range(a, b)
        ])
        items.append(
            b'{"metadata":{"name":' + _json_str(c.name[j]) + b',"namespace":'
            + ns_q[c.ns_id[j]] + b',"creationTimestamp":' + created + _labels_json(blob, j)
            + b'},"timestamp":' + ts + b',"window":"' + c.win[j] + b'","containers":['
            + containers + b"]}"
        )
    return _J_HEAD + b",".join(items) + b"]}\n"


# ---------------------------------------------------------------------------- protobuf


def _usage_entry(key: bytes, q: bytes) -> bytes:
    return _ld(b"\x12", key + _ld(b"\x12", _ld(b"\x0a", q)))


def pod_list_protobuf(table: PodTable, blobs: list[bytes | None], created: bytes) -> bytes:
    """A ``PodMetricsList`` Kubernetes protobuf body (see ``_render.pod_list_protobuf``)."""
    c = _Cols(table, blobs)
    for j, blob in enumerate(c.blobs):
        if blob:
            _labels_json(blob, j)  # the entries are checked before they are copied
    ns_fields = [b"\x12\x00" + _ld(b"\x1a", s) + _P_OBJECT_FIELDS + created for s in c.ns]
    parts = [_P_LIST_META]
    for j in range(c.n):
        blob = c.blobs[j]
        if blob is None:
            continue
        a, b = c.container_off[j], c.container_off[j + 1]
        meta = _ld(b"\x0a", c.name[j]) + ns_fields[c.ns_id[j]] + blob
        if b > a:
            sec, nanos = divmod(c.timestamp_ns[j], 1_000_000_000)
            ts = _ld(b"\x12", b"\x08" + _varint(sec) + b"\x10" + _varint(nanos))
        else:
            ts = b"\x12\x00"
        body = (_ld(b"\x0a", meta) + ts + _ld(b"\x1a", b"\x08" + _varint(c.window_ns[j]))
                + b"".join([
                    _ld(b"\x22", _ld(b"\x0a", c.cname[c.cname_id[r]])
                        + _usage_entry(b"\x0a\x03cpu", c.cpu[r])
                        + _usage_entry(b"\x0a\x06memory", c.mem[r]))
                    for r in range(a, b)
                ]))
        parts.append(_ld(b"\x12", body))
    raw = b"".join(parts)
    return b"k8s\x00" + _ld(b"\x0a", _P_TYPE_META) + _ld(b"\x12", raw) + b"\x1a\x00\x22\x00"
