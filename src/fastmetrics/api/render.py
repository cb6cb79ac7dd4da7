"""Long pod lists from columns (the ``PodMetricsList`` fast path; SPEC §5.2, §5.4).

Two stages, after DESIGN.md principle 4 (render once per tick, serve many times):

* once per snapshot, :func:`pod_table` lays out the pods the snapshot serves, sorted by
  namespace then name, with everything a body needs except the request's own pieces: names
  as UTF-8, the usage strings of every container (``format_column``), timestamps and windows,
  and an index namespace -> name -> position. It is kept on the snapshot (``Snapshot.memo``).
* per request, :func:`pod_list` places the request's candidate pods (the informer's Running
  pods after the selectors) in the table, each with its labels' encoded entries (built once
  per label set, ``cluster.Labels.pb_entries``), and writes the whole body in one compiled
  pass (``_render``, which runs without the GIL) with the request time as
  ``creationTimestamp``.

The bytes are those of ``objects.pod_metrics_list`` and ``protobuf.pod_metrics_list`` over the
same items (the tests hold them equal). ``FASTMETRICS_NO_EXTENSIONS=1`` (or no compiled
extension) uses the pure-Python twin ``_render_py``, with the same results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from .._ext import NO_EXTENSIONS
from ..cluster import Labels, label_pb_entries
from ..store import STATUS_OK, Snapshot
from . import _render_py
from .format import (
    FORMAT_CPU,
    FORMAT_MEMORY,
    FORMAT_TIMESTAMP,
    FORMAT_WINDOW,
    format_column,
    format_timestamp,
)
from .protobuf import creation_timestamp_field

__all__ = [
    "COMPILED",
    "KERNELS_C",
    "KERNELS_PY",
    "PodTable",
    "build_pod_table",
    "pod_list",
    "pod_table",
]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

KERNELS_PY: Final[Any] = _render_py
"""The pure-Python kernels."""
KERNELS_C: Any = None
"""The compiled kernels (``fastmetrics._render``), None when not built."""
try:
    from .. import _render
except ImportError:  # pragma: no cover  (a pure-Python install)
    pass
else:
    KERNELS_C = _render
_impl: Any = KERNELS_PY if NO_EXTENSIONS or KERNELS_C is None else KERNELS_C
COMPILED: Final = _impl is not KERNELS_PY
"""Whether the compiled kernels are in use (not with ``FASTMETRICS_NO_EXTENSIONS=1``)."""

MEMO_KEY: Final = "api.render.pod_table"


class _PodLike(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True, eq=False)
class PodTable:
    """The pods a snapshot serves, in (namespace, name) byte order, ready to render.

    Strings are UTF-8 buffers with ``n + 1`` int64 offsets (``buf[off[i]:off[i + 1]]``).
    Per pod ``j``: ``ns_id`` (into the sorted namespaces ``ns_buf``/``ns_off``), the name,
    ``timestamp_ns`` and ``window_ns`` with their strings (``ts_*``: RFC 3339, ``win_*``:
    Go duration), and its containers with a rate, rows ``container_off[j]`` to
    ``container_off[j + 1]``. Per container row: ``cname_id`` (into the distinct names
    ``cname_buf``/``cname_off``) and the cpu and memory Quantity strings (``cpu_*``,
    ``mem_*``). A pod without containers has no timestamp (``null``).
    """

    ns_index: dict[str, int]
    """namespace -> ``ns_id``."""
    index: Any
    """(``ns_id``, name) -> position ``j``: a ``NameIndex`` of the implementation that built
    the table (``_render`` or ``_render_py``)."""
    ns_id: I32
    ns_buf: bytes
    ns_off: I64
    name_buf: bytes
    name_off: I64
    timestamp_ns: I64
    window_ns: I64
    ts_buf: bytes
    ts_off: I64
    win_buf: bytes
    win_off: I64
    container_off: I64
    cname_id: I32
    cname_buf: bytes
    cname_off: I64
    cpu_buf: bytes
    cpu_off: I64
    mem_buf: bytes
    mem_off: I64

    @property
    def n(self) -> int:
        """The number of pods."""
        return int(self.ns_id.shape[0])


def build_pod_table(snap: Snapshot, impl: Any = None) -> PodTable:
    """Lay out ``snap``'s served pods (``Snapshot.served_pods``); see :class:`PodTable`.

    ``impl`` is the kernel module (default: the compiled one, unless disabled)."""
    k = _impl if impl is None else impl
    served = snap.served_pods()
    n = int(served.shape[0])
    keys = snap.node_keys
    node = snap.pod_node[served]
    local = snap.pod_local[served]
    # namespaces: distinct ids, ranked by their sorted order
    ns_first, namespaces = k.intern([t.pod_namespace for t in keys], node, local)
    ns_sorted = sorted(namespaces)
    ns_index = {s: r for r, s in enumerate(ns_sorted)}
    ns_rank = np.array([ns_index[s] for s in namespaces], np.int32).reshape(-1)[ns_first]
    buf, off = k.pack(k.gather([t.pod_name for t in keys], node, local))
    order = k.sort_pods(ns_rank, buf, off)
    p = served[order]
    ns_id = ns_rank[order]
    name_buf, name_off = k.take_packed(buf, off, order)
    ns_buf, ns_off = k.pack(ns_sorted)
    index = k.NameIndex(ns_id, name_buf, name_off)
    # container rows with a rate, pod by pod, in the snapshot's order within a pod
    starts = snap.pod_off[p]
    counts = snap.pod_off[p + 1] - starts
    total = int(counts.sum())
    ends = np.cumsum(counts)
    pos = np.repeat(starts - (ends - counts), counts) + np.arange(total, dtype=np.int64)
    rows = snap.order[pos]
    ok = snap.status[rows] == STATUS_OK
    rows = rows[ok]
    pod_of_row = np.repeat(np.arange(n, dtype=np.int64), counts)[ok]
    container_off = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(pod_of_row, minlength=n), out=container_off[1:])
    node_of_row = snap.pod_node[p][pod_of_row].astype(np.int32)
    cname_id, cnames = k.intern([t.container for t in keys], node_of_row, snap.key_id[rows])
    cname_buf, cname_off = k.pack(cnames)
    cpu_buf, cpu_off = format_column(snap.cpu_rate[rows], FORMAT_CPU)
    mem_buf, mem_off = format_column(snap.memory[rows], FORMAT_MEMORY)
    timestamp_ns = snap.pod_ts[p]
    window_ns = snap.pod_window[p]
    ts_buf, ts_off = format_column(timestamp_ns, FORMAT_TIMESTAMP)
    win_buf, win_off = format_column(window_ns, FORMAT_WINDOW)
    return PodTable(
        ns_index, index, ns_id, ns_buf, ns_off, name_buf, name_off, timestamp_ns, window_ns,
        ts_buf, ts_off, win_buf, win_off, container_off, cname_id, cname_buf, cname_off,
        cpu_buf, cpu_off, mem_buf, mem_off,
    )


def pod_table(snap: Snapshot) -> PodTable:
    """``snap``'s :class:`PodTable`, built on first use and kept with the snapshot.

    Building costs tens of milliseconds at 150,000 pods: call it off the event loop."""
    return snap.memo(MEMO_KEY, lambda: build_pod_table(snap))


def _label_entries(labels: Mapping[str, str]) -> bytes:
    if type(labels) is Labels:
        return labels.pb_entries()
    return label_pb_entries(labels)


def pod_list(
    table: PodTable, candidates: Sequence[_PodLike], now_ns: int, kind: str, impl: Any = None
) -> tuple[bytes, I64]:
    """The ``PodMetricsList`` body (``kind`` "json" or "protobuf") of the ``candidates`` that
    the table serves, in its order, with ``now_ns`` as ``creationTimestamp``; and the
    timestamps (ns) of the listed pods that have one (for the freshness metric).

    Each (namespace, name) must appear at most once among ``candidates`` (an informer's
    pods do); a candidate without usage is left out, as SPEC §5.4 says.
    """
    k = _impl if impl is None else impl
    blobs, mask = k.join(candidates, table.ns_index, table.index, table.n, _label_entries)
    if kind == "json":
        body: bytes = k.pod_list_json(table, blobs, f'"{format_timestamp(now_ns)}"'.encode())
    elif kind == "protobuf":
        body = k.pod_list_protobuf(table, blobs, creation_timestamp_field(now_ns))
    else:
        raise ValueError(f"pod_list: unknown kind {kind!r}")
    listed = (mask != 0) & (np.diff(table.container_off) > 0)
    return body, table.timestamp_ns[listed]
