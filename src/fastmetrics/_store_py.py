"""The numpy twin of the compiled store kernels (``FASTMETRICS_NO_EXTENSIONS=1``).

Same signatures and results as ``_core.store_containers`` and ``_core.group_pods``; the tests
hold them equal. See ``store.py`` for the rules (SPEC §4).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["cpu_rate", "group_pods", "store_containers"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]

FRESH_MIN_AGE_NS = 10_000_000_000

# row status after the read-time checks (SPEC §4.3)
STATUS_NO_PREV = 0
STATUS_OK = 1
STATUS_START_DECREASED = 2
STATUS_CPU_DECREASED = 3

_UINT64_LIMIT = float(2**64)

T = TypeVar("T", bound=np.generic)


def pad(a: npt.NDArray[T]) -> npt.NDArray[T]:
    """``a`` with one zero element appended."""
    out = np.zeros(a.shape[0] + 1, a.dtype)
    out[:-1] = a
    return out


def cpu_rate(last_ts: I64, last_cpu: U64, prev_ts: I64, prev_cpu: U64) -> tuple[U64, I64]:
    """Nanocores and window exactly as Go: ``uint64(float64(dcpu) / window.Seconds())``.

    Requires ``last_cpu >= prev_cpu`` and ``last_ts > prev_ts``. Rates at or above 2**64
    (only for absurd inputs) saturate at 2**64-1.
    """
    window = last_ts - prev_ts
    seconds = (window // 1_000_000_000).astype(np.float64) + (
        window % 1_000_000_000
    ).astype(np.float64) / 1e9
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rate = (last_cpu - prev_cpu).astype(np.float64) / seconds
        big = ~(rate < _UINT64_LIMIT)
        rate[big] = 0.0
        cpu = rate.astype(np.uint64)
    cpu[big] = np.uint64(2**64 - 1)
    return cpu, window


def store_containers(
    new: tuple[I32, I64, I64, U64, U64],
    new_off: I64,
    old_slot: I32,
    old: tuple[I32, I64, I64, U64, U64],
    old_off: I64,
    old_prev: tuple[U8, I64, I64, U64, U64],
    resolution_ns: int,
    max_keys: int,
) -> tuple[tuple[U8, I64, I64, U64, U64], U8, U64, I64]:
    """One tick of the container store rule and the read-time rate computation.

    ``new`` and ``old`` are ``(key_id, timestamp_ns, start_time_ns, cpu, memory)`` columns, the
    rows of node ``i`` at ``new_off[i]:new_off[i+1]``; ``old_slot[i]`` is node ``i``'s index in
    the old columns (-1 when it has no usable history). ``old_prev`` is ``(has_prev, ts, start,
    cpu, memory)`` aligned with ``old``. Returns the new prev columns aligned with ``new``, each
    row's status (STATUS_*), its cpu rate in nanocores and its window in ns.
    """
    del max_keys  # the compiled kernel's scratch size; not needed here
    key, ts, start, cpu, mem = new
    o_key, o_ts, o_start, o_cpu, o_mem = old
    p_has, p_ts, p_start, p_cpu, p_mem = old_prev
    n_nodes = old_slot.shape[0]

    # align: the old row of every new row (same node history, same key id); a missing one
    # points at a dummy row appended to the old columns (no baseline, all zero)
    n_old = o_key.shape[0]
    node_of_row = np.repeat(np.arange(n_nodes, dtype=np.int64), np.diff(new_off))
    new_of_old_node = np.full(old_off.shape[0] - 1, -1, dtype=np.int64)
    kept = old_slot >= 0
    new_of_old_node[old_slot[kept]] = np.flatnonzero(kept)
    o_node_of_row = np.repeat(new_of_old_node, np.diff(old_off))
    o_rows = np.flatnonzero(o_node_of_row >= 0)
    o_gkey = (o_node_of_row[o_rows] << 32) | o_key[o_rows].astype(np.int64)
    sort = np.argsort(o_gkey, kind="stable")
    o_gkey = np.append(o_gkey[sort], -1)  # a sentinel that matches no key
    o_rows = np.append(o_rows[sort], n_old)
    gkey = (node_of_row << 32) | key.astype(np.int64)
    pos = np.searchsorted(o_gkey[:-1], gkey)
    r = np.where(o_gkey[pos] == gkey, o_rows[pos], n_old)

    o_ts, o_start, o_cpu, o_mem = pad(o_ts), pad(o_start), pad(o_cpu), pad(o_mem)
    p_has, p_ts, p_start, p_cpu, p_mem = (
        pad(p_has), pad(p_ts), pad(p_start), pad(p_cpu), pad(p_mem)
    )

    # the pod rule (SPEC §4.2), the fresh-container branch first; a start time of 0 means
    # "not reported" (Go's zero time): never fresh, never restarted
    has_l = r < n_old
    l_ts = o_ts[r]
    age = ts - start
    fresh = (start != 0) & (start < ts) & (age < resolution_ns) & (age >= FRESH_MIN_AGE_NS)
    not_restarted = has_l & ~fresh & (start < l_ts)
    use_l = not_restarted & (ts > l_ts)
    use_p = not_restarted & ~use_l & (p_has[r] != 0) & (p_ts[r] < ts)

    out_has = (fresh | use_l | use_p).astype(np.uint8)
    out_ts = np.where(use_l, l_ts, np.where(use_p, p_ts[r], np.where(fresh, start, 0)))
    out_start = np.where(use_l, o_start[r], np.where(use_p, p_start[r], np.where(fresh, start, 0)))
    out_cpu = np.where(use_l, o_cpu[r], np.where(use_p, p_cpu[r], np.uint64(0))).astype(np.uint64)
    out_mem = np.where(use_l, o_mem[r], np.where(use_p, p_mem[r], np.where(fresh, mem, 0)))
    out_mem = out_mem.astype(np.uint64)

    # read-time checks and rates (SPEC §4.3)
    has = out_has.astype(bool)
    start_decreased = has & (start < out_start)
    cpu_decreased = has & ~start_decreased & (cpu < out_cpu)
    ok = has & ~start_decreased & ~cpu_decreased
    n_rows = key.shape[0]
    status = np.zeros(n_rows, np.uint8)
    status[ok] = STATUS_OK
    status[start_decreased] = STATUS_START_DECREASED
    status[cpu_decreased] = STATUS_CPU_DECREASED
    rate = np.zeros(n_rows, np.uint64)
    window = np.zeros(n_rows, np.int64)
    if ok.any():
        rate[ok], window[ok] = cpu_rate(ts[ok], cpu[ok], out_ts[ok], out_cpu[ok])
    return (out_has, out_ts, out_start, out_cpu, out_mem), status, rate, window


def group_pods(
    pod_id: I32,
    new_off: I64,
    pod_base: I64,
    has_prev: U8,
    status: U8,
    ts: I64,
    window: I64,
) -> tuple[I32, I64, I32, I32, U8, I64, I64]:
    """Group container rows by pod and derive each pod's validity and time info.

    Pod ``p`` of node ``i`` is global pod ``pod_base[i] + pod_id``. Returns ``order`` (rows sorted
    by global pod, stable), ``pod_off`` (pod ``k``'s rows are ``order[pod_off[k]:pod_off[k+1]]``),
    ``pod_node`` and ``pod_local`` (node index and local pod id of each pod), ``pod_valid`` (every
    container has a baseline), ``pod_ts`` and ``pod_window`` (those of the container with the
    earliest timestamp among the containers with a rate; ``pod_ts`` is -1 when there is none).
    """
    n_rows = pod_id.shape[0]
    n_nodes = new_off.shape[0] - 1
    node_of_row = np.repeat(np.arange(n_nodes, dtype=np.int64), np.diff(new_off))
    gpod = pod_base[node_of_row] + pod_id.astype(np.int64) if n_rows else np.zeros(0, np.int64)
    order = np.argsort(gpod, kind="stable").astype(np.int32)
    sorted_gpod = gpod[order]
    starts = np.flatnonzero(np.diff(sorted_gpod)) + 1 if n_rows else np.zeros(0, np.int64)
    first = np.concatenate(([0], starts)).astype(np.int64) if n_rows else np.zeros(0, np.int64)
    pod_off = np.concatenate((first, [n_rows])).astype(np.int64)
    pod_node = node_of_row[order[first]].astype(np.int32)
    pod_local = pod_id[order[first]].astype(np.int32)
    if n_rows == 0:
        empty = np.zeros(0, np.int64)
        return order, pod_off, pod_node, pod_local, np.zeros(0, np.uint8), empty, empty.copy()
    pod_valid = np.minimum.reduceat(has_prev[order], first).astype(np.uint8)
    ok = status[order] == STATUS_OK
    big = np.iinfo(np.int64).max
    key = np.where(ok, ts[order], big)
    pod_min = np.minimum.reduceat(key, first)
    counts = np.diff(pod_off)
    pod_of_sorted_row = np.repeat(np.arange(first.shape[0]), counts)
    hit = ok & (key == pod_min[pod_of_sorted_row])
    hit_rows = np.flatnonzero(hit)
    _, first_hit = np.unique(pod_of_sorted_row[hit_rows], return_index=True)
    pods_with = pod_of_sorted_row[hit_rows[first_hit]]
    pod_ts = np.full(first.shape[0], -1, np.int64)
    pod_window = np.zeros(first.shape[0], np.int64)
    pod_ts[pods_with] = pod_min[pods_with]
    pod_window[pods_with] = window[order[hit_rows[first_hit]]]
    return order, pod_off, pod_node, pod_local, pod_valid, pod_ts, pod_window
