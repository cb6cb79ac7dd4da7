"""The store: last/prev points per node and container, rates, and immutable snapshots (SPEC §4).

``Store.store`` takes one tick's decoded batches (every node scraped successfully) and publishes
a new :class:`Snapshot` with one reference assignment. Everything lives in numpy columns: the
container rule and the rates run in one pass of a compiled kernel (``_core.store_containers``,
or its numpy twin ``_store_py`` with ``FASTMETRICS_NO_EXTENSIONS=1``).

Rules (metrics-server's, SPEC §4), per tick:

* Both ``last`` and ``prev`` are rebuilt: a node or pod missing from the tick vanishes at once.
* Node: ``prev`` = old ``last`` when the new point is newer, else the old ``prev`` when it is
  older than the new point (out-of-order and duplicate points keep the older baseline).
* Container: the fresh-container rule first (age at the sample in [10 s, resolution): a synthetic
  baseline at the start time with zero CPU); otherwise, unless restarted since the old ``last``
  (start time at or after its timestamp), the node rule.
* Read: start time decreased or cumulative CPU decreased drops the container (the pod stays);
  a container without a baseline hides its whole pod; a pod's timestamp and window are those of
  its container with the earliest timestamp.

Two deliberate differences from the Go code (README, compatibility notes): a container missing
from the old ``prev`` of a pod has no baseline (Go reads a zero-valued point there and serves a
saturated window), and a start time of 0 (not reported) is never "fresh".
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from . import _store_py
from ._batch import DecodedBatch, KeyTable
from ._ext import NO_EXTENSIONS

__all__ = ["ContainerUsage", "NodeUsage", "PodUsage", "Snapshot", "Store"]

log = logging.getLogger("fastmetrics.store")

store_containers = _store_py.store_containers
group_pods = _store_py.group_pods
if not NO_EXTENSIONS:
    try:
        from . import _core
    except ImportError:  # pragma: no cover  (a pure-Python install)
        pass
    else:
        store_containers = _core.store_containers
        group_pods = _core.group_pods

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]

STATUS_OK = _store_py.STATUS_OK
STATUS_START_DECREASED = _store_py.STATUS_START_DECREASED
STATUS_CPU_DECREASED = _store_py.STATUS_CPU_DECREASED


class NodeUsage(NamedTuple):
    cpu_nanocores: int
    memory_bytes: int
    timestamp_ns: int
    window_ns: int


class ContainerUsage(NamedTuple):
    name: str
    cpu_nanocores: int
    memory_bytes: int


class PodUsage(NamedTuple):
    namespace: str
    name: str
    timestamp_ns: int | None
    """None when no container produced a rate (served as ``"timestamp": null``)."""
    window_ns: int
    containers: list[ContainerUsage]


def _empty_i32() -> I32:
    return np.zeros(0, np.int32)


def _empty_i64() -> I64:
    return np.zeros(0, np.int64)


def _empty_u64() -> U64:
    return np.zeros(0, np.uint64)


def _empty_u8() -> U8:
    return np.zeros(0, np.uint8)


M = TypeVar("M")
_MEMO_LOCK = threading.RLock()  # re-entrant: a build may read another memoized value


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """What the API serves after one tick; never mutated after it is published.

    Nodes are in the tick's order (``node_names``); container rows are those of the decoded
    batches, concatenated by node; pods group the rows (``order``/``pod_off``).
    """

    resolution_ns: int
    node_names: list[str]
    node_index: dict[str, int]
    node_keys: list[KeyTable]
    # per node: the node's own usage
    node_valid: U8
    node_cpu: U64
    node_mem: U64
    node_ts: I64
    node_window: I64
    # per container row
    row_off: I64
    key_id: I32
    status: U8
    cpu_rate: U64
    memory: U64
    window: I64
    # per pod
    order: I32
    pod_off: I64
    pod_node: I32
    pod_local: I32
    pod_valid: U8
    pod_ts: I64
    pod_window: I64
    pod_base: I64
    pod_of_local: I32
    """``pod_of_local[pod_base[node] + local pod id]`` = pod index, or -1."""
    locator: dict[tuple[str, str], str]
    """(namespace, name) -> node name, for the pods of this tick. Never mutated once published:
    the Store copies it before a tick that changes it (and shares it while nothing changes)."""
    # counts
    nodes_with_baseline: int
    containers_with_baseline: int
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    """What readers derive from this snapshot, built once on first use (see ``memo``); a
    copy made with ``dataclasses.replace`` starts with its own, empty."""

    @classmethod
    def empty(cls, resolution_ns: int) -> Snapshot:
        z64 = _empty_i64()
        return cls(
            resolution_ns, [], {}, [], _empty_u8(), _empty_u64(), _empty_u64(), z64, z64,
            np.zeros(1, np.int64), _empty_i32(), _empty_u8(), _empty_u64(), _empty_u64(), z64,
            _empty_i32(), np.zeros(1, np.int64), _empty_i32(), _empty_i32(), _empty_u8(), z64,
            z64, z64, _empty_i32(), {}, 0, 0,
        )

    def ready(self) -> bool:
        """metrics-server's storage readiness: a node and a container have a baseline."""
        return self.nodes_with_baseline > 0 and self.containers_with_baseline > 0

    def node(self, name: str) -> NodeUsage | None:
        """The node's usage, or None when it has none this tick."""
        i = self.node_index.get(name)
        if i is None or not self.node_valid[i]:
            return None
        return NodeUsage(
            int(self.node_cpu[i]), int(self.node_mem[i]), int(self.node_ts[i]),
            int(self.node_window[i]),
        )

    def pod_index(self, namespace: str, name: str) -> int:
        """The index of the pod's entry this tick (valid or not), or -1."""
        ident = (namespace, name)
        node = self.locator.get(ident)
        if node is None:
            return -1
        i = self.node_index.get(node)
        if i is None:
            return -1
        keys = self.node_keys[i]
        local = keys.find_pod(ident)
        if local < 0 or local >= int(self.pod_base[i + 1] - self.pod_base[i]):
            return -1
        return int(self.pod_of_local[self.pod_base[i] + local])

    def pod(self, namespace: str, name: str) -> PodUsage | None:
        """The pod's usage, or None when it has none this tick (SPEC §4.3)."""
        p = self.pod_index(namespace, name)
        if p < 0 or not self.pod_valid[p]:
            return None
        i = int(self.pod_node[p])
        containers = self.node_keys[i].container
        items = []
        for r in self.order[self.pod_off[p] : self.pod_off[p + 1]]:
            if self.status[r] == STATUS_OK:
                items.append(
                    ContainerUsage(
                        containers[self.key_id[r]], int(self.cpu_rate[r]), int(self.memory[r])
                    )
                )
        # no container with a rate: no time info (pod_ts is then -1; a real timestamp may be
        # any int64, so the test is on the containers, not on the sign)
        ts = int(self.pod_ts[p]) if items else None
        return PodUsage(namespace, name, ts, int(self.pod_window[p]), items)

    def pods_bulk(self, idents: Sequence[tuple[str, str]]) -> list[PodUsage | None]:
        """``[self.pod(ns, name) for ns, name in idents]``, in O(len(idents)): the requested
        pods' container rows are gathered with a few vectorized reads and turned into objects
        from Python lists (an HPA's 50-pod list no longer pays numpy scalar reads per
        container, nor a 300-pod one a copy of every column of the snapshot)."""
        k = len(idents)
        if k == 0:
            return []
        # pod_index() for every ident: the dict lookups per pod, the bounds and the gather
        # vectorized
        locate, node_index, node_keys = self.locator.get, self.node_index.get, self.node_keys
        nodes: list[int] = []
        locals_: list[int] = []
        for ident in idents:
            node = locate(ident)
            i = -1 if node is None else node_index(node, -1)
            nodes.append(i)
            locals_.append(-1 if i < 0 else node_keys[i].find_pod(ident))
        i_, local = np.array(nodes, np.int64), np.array(locals_, np.int64)
        found = (i_ >= 0) & (local >= 0)
        base = self.pod_base
        found[found] = local[found] < base[i_[found] + 1] - base[i_[found]]
        ps = np.full(k, -1, np.int64)
        ps[found] = self.pod_of_local[base[i_[found]] + local[found]]
        found[found] = (ps[found] >= 0) & self.pod_valid[ps[found]]
        sel = ps[found]
        starts = self.pod_off[sel]
        counts = self.pod_off[sel + 1] - starts
        ends = np.cumsum(counts)
        total = int(ends[-1]) if ends.shape[0] else 0
        rows = self.order[np.repeat(starts - (ends - counts), counts)
                          + np.arange(total, dtype=np.int64)]
        ok = (self.status[rows] == STATUS_OK).tolist()
        key, cpu, mem = (self.key_id[rows].tolist(), self.cpu_rate[rows].tolist(),
                         self.memory[rows].tolist())
        node, ts, window = (self.pod_node[sel].tolist(), self.pod_ts[sel].tolist(),
                            self.pod_window[sel].tolist())
        out: list[PodUsage | None] = [None] * k
        r = j = 0
        for i, hit in enumerate(found.tolist()):
            if not hit:
                continue
            containers = node_keys[node[j]].container
            end = int(ends[j])
            items = [ContainerUsage(containers[key[x]], cpu[x], mem[x])
                     for x in range(r, end) if ok[x]]
            ns, name = idents[i]
            out[i] = PodUsage(ns, name, ts[j] if items else None, window[j], items)
            r, j = end, j + 1
        return out

    def memo(self, key: str, build: Callable[[], M]) -> M:
        """``build()``, called once per snapshot and key; later calls return the same object.

        For data derived from the (immutable) snapshot that many requests read, such as the
        API's formatted usage strings. Safe to call from several threads: one builds, the
        others wait for it. ``build`` must not depend on anything but the snapshot.
        """
        try:
            found: M = self._memo[key]
            return found
        except KeyError:
            pass
        with _MEMO_LOCK:
            if key not in self._memo:
                self._memo[key] = build()
            value: M = self._memo[key]
            return value

    def served_pods(self) -> I32:
        """The pods with usage this tick, as pod indices (ascending): exactly the entries
        ``pod(namespace, name)`` answers from, so a pod reported by two nodes in one tick is
        here once. Built once per snapshot."""
        return self.memo("store.served_pods", self._served_pods)

    def _served_pods(self) -> I32:
        # pod_index(ns, name) resolves through the locator: an entry is the one served when
        # the locator names its node (the key tables map the identity back to the entry).
        # Per node, the lookups run as map() over its pods (C iteration, no bytecode per pod).
        valid = np.flatnonzero(self.pod_valid)
        node = self.pod_node[valid]
        if node.shape[0] > 1 and bool(np.any(node[1:] < node[:-1])):  # not grouped by node
            by_node = np.argsort(node, kind="stable")
            valid, node = valid[by_node], node[by_node]
        bounds = np.searchsorted(node, np.arange(len(self.node_names) + 1)).tolist()
        local = self.pod_local[valid].tolist()
        keep = np.zeros(valid.shape[0], np.bool_)
        where = self.locator.get
        for i, name in enumerate(self.node_names):
            a, b = bounds[i], bounds[i + 1]
            if a < b:
                idents = map(self.node_keys[i].pod_tuple.__getitem__, local[a:b])
                keep[a:b] = np.fromiter(map(operator.eq, map(where, idents), repeat(name)),
                                        np.bool_, b - a)
        return np.sort(valid[keep]).astype(np.int32)

    def pods(self) -> list[PodUsage]:
        """Every pod with usage this tick, sorted by namespace then name (for tests and tools).

        A pod reported by two nodes in one tick is listed once: the entry ``pod`` resolves.
        """
        out = []
        for p in np.flatnonzero(self.pod_valid).tolist():
            keys = self.node_keys[int(self.pod_node[p])]
            ns, name = keys.pod_tuple[int(self.pod_local[p])]
            if self.pod_index(ns, name) != p:
                continue  # another node's entry for the same pod is the one served
            usage = self.pod(ns, name)
            if usage is not None:
                out.append(usage)
        out.sort(key=lambda u: (u.namespace, u.name))
        return out


class _NodeHistory(NamedTuple):
    """What the store keeps of a node between ticks (its slot in the published snapshot)."""

    keys: KeyTable
    slot: int


class Store:
    """Keeps the last two points per node and container and publishes :class:`Snapshot` s."""

    def __init__(self, resolution_ns: int) -> None:
        if resolution_ns <= 0:
            raise ValueError("resolution_ns must be positive")
        self.resolution_ns = int(resolution_ns)
        self.snapshot: Snapshot = Snapshot.empty(self.resolution_ns)
        """The current snapshot; replaced (never mutated) by ``store``."""
        self._locator: dict[tuple[str, str], str] = {}
        # old columns (aligned with self.snapshot's rows / nodes)
        self._last: tuple[I32, I64, I64, U64, U64] = (
            _empty_i32(), _empty_i64(), _empty_i64(), _empty_u64(), _empty_u64()
        )
        self._prev: tuple[U8, I64, I64, U64, U64] = (
            _empty_u8(), _empty_i64(), _empty_i64(), _empty_u64(), _empty_u64()
        )
        self._node_last: tuple[U8, I64, U64, U64] = (
            _empty_u8(), _empty_i64(), _empty_u64(), _empty_u64()
        )
        self._node_prev: tuple[U8, I64, U64, U64] = (
            _empty_u8(), _empty_i64(), _empty_u64(), _empty_u64()
        )
        self._ready = False
        self.dropped_start_decreased = 0
        """Containers dropped in the last tick because their start time decreased."""
        self.dropped_cpu_decreased = 0
        """Containers dropped in the last tick because their cumulative CPU decreased."""

    def ready(self) -> bool:
        return self.snapshot.ready()

    def store(self, batches: Sequence[tuple[str, DecodedBatch]]) -> Snapshot:
        """Store one tick (``(node name, batch)`` per node scraped) and publish its snapshot."""
        old = self.snapshot
        n = len(batches)
        names = [name for name, _ in batches]
        node_index = {name: i for i, name in enumerate(names)}
        if len(node_index) != n:
            raise ValueError("a node appears twice in one tick")
        old_node_slot = np.fromiter(
            (old.node_index.get(name, -1) for name in names), dtype=np.int32, count=n
        )
        # container history is usable only if the node's key ids mean the same as last tick:
        # the same key table, or the table the decoder compacted it into (ids remapped)
        old_keys = old.node_keys
        old_slot = np.full(n, -1, np.int32)
        last = self._last
        remapped_key_id: I32 | None = None
        for i, (s, (_, batch)) in enumerate(zip(old_node_slot.tolist(), batches, strict=True)):
            if s < 0:
                continue
            if old_keys[s] is batch.keys:
                old_slot[i] = s
                continue
            remap = batch.key_remap
            if remap is None or remap.old is not old_keys[s]:
                continue
            a, b = int(old.row_off[s]), int(old.row_off[s + 1])
            moved = remap.key_map[last[0][a:b]]
            if moved.shape[0] and int(moved.min()) < 0:
                continue  # a key of last tick was dropped: no usable history (never expected)
            if remapped_key_id is None:
                remapped_key_id = last[0].copy()  # the published snapshot shares last[0]
            remapped_key_id[a:b] = moved
            old_slot[i] = s
        if remapped_key_id is not None:
            last = (remapped_key_id, *last[1:])
        counts = np.fromiter((len(b) for _, b in batches), dtype=np.int64, count=n)
        row_off = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=row_off[1:])
        cols = [b for _, b in batches]
        new: tuple[I32, I64, I64, U64, U64] = (
            _concat([b.key_id for b in cols], np.int32),
            _concat([b.timestamp_ns for b in cols], np.int64),
            _concat([b.start_time_ns for b in cols], np.int64),
            _concat([b.cpu_nanocore_seconds for b in cols], np.uint64),
            _concat([b.memory_bytes for b in cols], np.uint64),
        )
        pod_id = _concat([b.pod_id for b in cols], np.int32)
        max_keys = max((len(b.keys) for b in cols), default=0)
        prev, status, rate, window = store_containers(
            new, row_off, old_slot, last, old.row_off, self._prev, self.resolution_ns,
            max_keys,
        )
        pod_counts = np.fromiter((b.keys.pod_count for b in cols), dtype=np.int64, count=n)
        pod_base = np.zeros(n + 1, np.int64)
        np.cumsum(pod_counts, out=pod_base[1:])
        order, pod_off, pod_node, pod_local, pod_valid, pod_ts, pod_window = group_pods(
            pod_id, row_off, pod_base, prev[0], status, new[1], window
        )
        pod_of_local = np.full(int(pod_base[-1]), -1, np.int32)
        pod_of_local[pod_base[pod_node] + pod_local] = np.arange(pod_node.shape[0], dtype=np.int32)

        node_last, node_prev, node_cols = self._store_nodes(cols, old_node_slot)
        self._update_locator(old, names, cols, old_slot, row_off, new[0])

        n_start = int(np.count_nonzero(status == STATUS_START_DECREASED))
        n_cpu = int(np.count_nonzero(status == STATUS_CPU_DECREASED))
        snap = Snapshot(
            self.resolution_ns, names, node_index, [b.keys for b in cols],
            *node_cols,
            row_off, new[0], status, rate, new[4], window,
            order, pod_off, pod_node, pod_local, pod_valid, pod_ts, pod_window, pod_base,
            pod_of_local, self._locator,
            int(np.count_nonzero(node_prev[0])), int(np.count_nonzero(prev[0])),
        )
        self._last, self._prev = new, prev
        self._node_last, self._node_prev = node_last, node_prev
        self.dropped_start_decreased, self.dropped_cpu_decreased = n_start, n_cpu
        self.snapshot = snap  # publish: one reference assignment
        if snap.ready() != self._ready:
            self._ready = snap.ready()
            log.info("Storage readiness changed", extra={"ready": self._ready})
        return snap

    def _store_nodes(
        self, cols: list[DecodedBatch], old_node_slot: I32
    ) -> tuple[
        tuple[U8, I64, U64, U64], tuple[U8, I64, U64, U64], tuple[U8, U64, U64, I64, I64]
    ]:
        """The node rule (SPEC §4.1) and the node rates, vectorized over the tick's nodes."""
        n = len(cols)
        has = np.fromiter((b.node is not None for b in cols), dtype=np.uint8, count=n)
        points = [b.node if b.node is not None else (0, 0, 0) for b in cols]
        ts = np.fromiter((p[0] for p in points), dtype=np.int64, count=n)
        cpu = np.fromiter((p[1] for p in points), dtype=np.uint64, count=n)
        mem = np.fromiter((p[2] for p in points), dtype=np.uint64, count=n)
        pad = _store_py.pad
        o_has, o_ts, o_cpu, o_mem = self._node_last
        o_has, o_ts, o_cpu, o_mem = pad(o_has), pad(o_ts), pad(o_cpu), pad(o_mem)
        p_has, p_ts, p_cpu, p_mem = self._node_prev
        p_has, p_ts, p_cpu, p_mem = pad(p_has), pad(p_ts), pad(p_cpu), pad(p_mem)
        r = np.where(old_node_slot >= 0, old_node_slot, o_has.shape[0] - 1)
        has_l = (o_has[r] != 0) & (has != 0)
        use_l = has_l & (ts > o_ts[r])
        use_p = has_l & ~use_l & (p_has[r] != 0) & (p_ts[r] < ts)
        prev_has = (use_l | use_p).astype(np.uint8)
        prev_ts = np.where(use_l, o_ts[r], np.where(use_p, p_ts[r], 0))
        prev_cpu = np.where(use_l, o_cpu[r], np.where(use_p, p_cpu[r], 0)).astype(np.uint64)
        prev_mem = np.where(use_l, o_mem[r], np.where(use_p, p_mem[r], 0)).astype(np.uint64)
        valid = (prev_has != 0) & (cpu >= prev_cpu)
        rate = np.zeros(n, np.uint64)
        window = np.zeros(n, np.int64)
        if valid.any():
            rate[valid], window[valid] = _store_py.cpu_rate(
                ts[valid], cpu[valid], prev_ts[valid], prev_cpu[valid]
            )
        return (
            (has, ts, cpu, mem),
            (prev_has, prev_ts, prev_cpu, prev_mem),
            (valid.astype(np.uint8), rate, mem, ts, window),
        )

    def _update_locator(
        self,
        old: Snapshot,
        names: list[str],
        cols: list[DecodedBatch],
        old_slot: I32,
        row_off: I64,
        key_id: I32,
    ) -> None:
        """Keep (namespace, name) -> node current, touching only nodes whose pods changed.

        Copy-on-write: the dict of the published snapshot is never mutated (a reader may hold
        that snapshot while this tick is stored); a tick that changes nothing keeps sharing it.
        """
        old_off = old.row_off
        old_keys_col = old.key_id
        changed_old: set[int] = set(range(len(old.node_names)))
        changed_new: list[int] = []
        for i in range(len(cols)):
            s = int(old_slot[i])
            if s >= 0:
                new_k = key_id[row_off[i] : row_off[i + 1]]
                old_k = old_keys_col[old_off[s] : old_off[s + 1]]
                if old_k.shape == new_k.shape and np.array_equal(old_k, new_k):
                    changed_old.discard(s)
                    continue
            changed_new.append(i)
        if not changed_new and not changed_old:
            return
        locator = dict(self._locator)
        for i in changed_new:
            node = names[i]
            tuples = cols[i].keys.pod_tuple
            for p in np.unique(cols[i].pod_id).tolist():
                locator[tuples[p]] = node
        # pods of nodes that changed or vanished: drop entries that still point at them
        if changed_old:
            gone = {old.node_names[s] for s in changed_old}
            current = {
                tuple_
                for i, batch in enumerate(cols)
                if names[i] in gone
                for tuple_ in (batch.keys.pod_tuple[p] for p in np.unique(batch.pod_id).tolist())
            }
            for s in changed_old:
                node = old.node_names[s]
                keys = old.node_keys[s]
                ids = np.unique(old.key_id[old_off[s] : old_off[s + 1]])
                for k in ids.tolist():
                    ident = keys.pod_tuple[keys.pod_of_key[k]]
                    if locator.get(ident) == node and ident not in current:
                        del locator[ident]
        self._locator = locator


T = TypeVar("T", bound=np.generic)


def _concat(arrays: list[npt.NDArray[T]], dtype: type[T]) -> npt.NDArray[T]:
    if not arrays:
        return np.zeros(0, dtype)
    out: npt.NDArray[T] = np.concatenate(arrays)
    return out
