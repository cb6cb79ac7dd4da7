"""Properties of the store over random multi-tick, multi-node histories (SPEC §4, §7).

Three implementations see the same ticks: the Store with the compiled kernels
(``fastmetrics._core``), the Store with their numpy twins (``fastmetrics._store_py``), and
``Reference``, a plain-dict model written here from SPEC §4 line by line. The compiled and numpy
stores must publish identical snapshots (every column); both must serve exactly what the model
serves; no served rate saturates, and every served window is positive.

The histories are drawn to hit the rules' edges: containers appearing, disappearing and
restarting (at ages around the 10 s and resolution bounds of the fresh rule), cumulative CPU
going down, timestamps repeating or going backwards, start times of 0 or moving back, nodes
failing a scrape, pods moving between nodes, rows shuffled between ticks, and a node's decoder
(its KeyTable) being replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmetrics import _store_py
from fastmetrics import store as store_mod
from fastmetrics._batch import DecodedBatch, KeyTable, NodePoint
from fastmetrics.store import NodeUsage, PodUsage, Snapshot, Store

try:
    from fastmetrics import _core
except ImportError:  # pragma: no cover  (a pure-Python install)
    _core = None  # type: ignore[assignment]

SEC = 1_000_000_000
MS = 1_000_000
S = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z
CS = SEC
TICK = 15 * SEC
UINT64_MAX = 2**64 - 1
FRESH_MIN_AGE = 10 * SEC

NODES = ("node-a", "node-b", "node-c")
PODS = (
    ("default", "web"),
    ("default", "db-0"),
    ("kube-system", "coredns"),
    ("kube-system", "proxy"),
    ("jobs", "batch"),
    ("jobs", "web"),
)
CONTAINERS = ("app", "sidecar", "init")
AGES = (
    5 * SEC,
    9_999 * MS,
    10 * SEC - 1,
    10 * SEC,
    12_400 * MS,
    15 * SEC - 1,
    15 * SEC,
    30 * SEC,
    59_999 * MS,
    60 * SEC,
    3600 * SEC,
)
JITTER_MS = (0, 0, 0, 1, 13, 250, 999, -1, -2000)

Row = tuple[str, str, str, int, int, int, int]  # ns, pod, container, start, ts, cpu, memory
Kernels = tuple[Callable[..., Any], Callable[..., Any]]


class Tick(NamedTuple):
    """One node's part of a tick."""

    node: str
    replace_decoder: bool
    point: tuple[int, int, int] | None  # ts, cpu, memory
    rows: list[Row]


# ---------------------------------------------------------------------------- the histories


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[list[Tick]]]:
    resolution = draw(st.sampled_from([10 * SEC, 15 * SEC, 60 * SEC]))
    n_ticks = draw(st.integers(1, 7))
    # now and then a history just after the Unix epoch, where a start time of 0 read as 1970
    # (rather than "not reported") would make a container look fresh
    epoch = draw(st.integers(0, 9)) == 0
    origin = 12 * SEC if epoch else S
    nodes: dict[str, tuple[int, int]] = {}  # ts, cpu
    ctrs: dict[tuple[str, str, str], tuple[int, int, int, int]] = {}  # start, ts, cpu, older ts
    sets: dict[tuple[str, str], frozenset[str]] = {}
    placed: dict[tuple[str, str], str] = {}
    ticks = []
    for k in range(n_ticks):
        base = origin + k * TICK
        order = draw(st.permutations(NODES))
        present = list(order[: draw(st.integers(0, len(NODES)))])
        rows_of: dict[str, list[Row]] = {n: [] for n in present}

        def when() -> int:
            return max(base + draw(st.sampled_from(JITTER_MS)) * MS, 0)  # noqa: B023

        for ident in PODS:
            if not present:
                break
            move = draw(st.sampled_from(["stay"] * 6 + ["move", "gone"]))
            node = placed.get(ident)
            if move == "gone":
                continue
            if move == "move" or node not in rows_of:
                node = draw(st.sampled_from(present))
            placed[ident] = node
            names = sets.get(ident)
            if names is None or draw(st.integers(0, 3)) == 0:
                names = frozenset(draw(st.sets(st.sampled_from(CONTAINERS), min_size=1)))
                sets[ident] = names
            for ctr in sorted(names):
                key = (*ident, ctr)
                old = ctrs.get(key)
                ts = when()
                older = 0
                if old is None:
                    kind = "new"
                else:
                    kind = draw(
                        st.sampled_from(
                            ["adv"] * 6
                            + [
                                "rep",
                                "back",
                                "back_to_older",
                                "cpu_down",
                                "restart",
                                "start_at_last",
                                "start_back",
                                "zero_start",
                            ]
                        )
                    )
                if kind in ("new", "restart"):
                    start = draw(st.sampled_from([0, *(ts - a for a in AGES)]))
                    cpu = draw(st.integers(0, 50)) * 10**8
                else:
                    assert old is not None
                    start, old_ts, cpu, older = old
                    if kind == "adv":
                        cpu += draw(st.integers(0, 40)) * 10**8
                    elif kind == "rep":
                        ts = old_ts
                    elif kind == "back":
                        ts = max(old_ts - draw(st.sampled_from([1, 5000, 20000])) * MS, 0)
                        cpu += draw(st.integers(-5, 5)) * 10**8
                    elif kind == "back_to_older":
                        ts = older  # exactly the timestamp of the point before the last
                        cpu += draw(st.integers(-5, 5)) * 10**8
                    elif kind == "cpu_down":
                        cpu -= draw(st.integers(1, 10)) * 10**8
                    elif kind == "start_at_last":
                        start = old_ts  # a restart exactly at the last timestamp
                    elif kind == "start_back":
                        start = start - SEC if start else ts - 100 * SEC
                    else:
                        start = 0
                    older = old_ts
                    cpu = max(cpu, 0)
                start = max(start, 0)  # the decoder turns a negative start time into 0
                mem = draw(st.integers(1, 2**40))
                ctrs[key] = (start, ts, cpu, older)
                rows_of[node].append((*key, start, ts, cpu, mem))
        tick = []
        for node in present:
            old_node = nodes.get(node)
            kind = draw(st.sampled_from(["adv"] * 6 + ["none", "rep", "back", "cpu_down"]))
            point: tuple[int, int, int] | None
            if kind == "none":
                point = None
            else:
                ts, cpu = old_node if old_node is not None else (base, 10**12)
                if kind == "adv" or old_node is None:
                    ts = when()
                    cpu += draw(st.integers(0, 100)) * 10**8
                elif kind == "back":
                    ts = max(ts - draw(st.sampled_from([1, 5000, 20000])) * MS, 0)
                elif kind == "cpu_down":
                    ts = when()
                    cpu -= draw(st.integers(1, 100)) * 10**8
                nodes[node] = (ts, cpu)
                point = (ts, cpu, draw(st.integers(1, 2**40)))
            rows = draw(st.permutations(rows_of[node]))
            replace = draw(st.integers(0, 9)) == 0
            tick.append(Tick(node, replace, point, list(rows)))
        ticks.append(tick)
    return resolution, ticks


def make_batch(keys: KeyTable, point: tuple[int, int, int] | None, rows: list[Row]) -> DecodedBatch:
    ids = [keys.intern(ns, pod, ctr) for ns, pod, ctr, *_ in rows]
    return DecodedBatch(
        NodePoint(*point) if point is not None else None,
        np.array([k for k, _ in ids], np.int32),
        np.array([p for _, p in ids], np.int32),
        np.array([r[4] for r in rows], np.int64),
        np.array([r[3] for r in rows], np.int64),
        np.array([r[5] for r in rows], np.uint64),
        np.array([r[6] for r in rows], np.uint64),
        keys,
    )


# ------------------------------------------------------------------- the reference (SPEC §4)


class Point(NamedTuple):
    start: int
    ts: int
    cpu: int
    mem: int


def go_rate(dcpu: int, window_ns: int) -> int:
    # uint64(float64(last.cpu - prev.cpu) / window.Seconds()); Duration.Seconds() is
    # float64(d / Second) + float64(d % Second) / 1e9
    seconds = float(window_ns // SEC) + float(window_ns % SEC) / 1e9
    return int(float(dcpu) / seconds)


def resource_usage(last: Point, prev: Point) -> tuple[int, int, int, int] | None:
    """(cpu nanocores, memory, timestamp, window) or None for the two read errors (§4.3)."""
    if last.start < prev.start:
        return None  # unexpected decrease in startTime
    if last.cpu < prev.cpu:
        return None  # unexpected decrease in cumulative CPU usage value
    window = last.ts - prev.ts
    return go_rate(last.cpu - prev.cpu, window), last.mem, last.ts, window


class Reference:
    """SPEC §4 with plain dicts: ``last`` and ``prev`` per node and per pod, rebuilt each tick.

    Two deliberate differences of fastmetrics (store.py docstring) are modelled: a container
    missing from the pod's old ``prev`` has no baseline (no Go zero-valued point), and a start
    time of 0 is never fresh. And one property of its design: a pod's history is scoped to the
    node decoder that reported it (``scope``: node name and key table); metrics-server keys
    pods by name only, so its history would follow a pod to another node and survive a decoder
    replacement.
    """

    def __init__(self, resolution_ns: int) -> None:
        self.resolution = resolution_ns
        self.node_last: dict[str, Point] = {}
        self.node_prev: dict[str, Point] = {}
        self.pod_last: dict[tuple[str, str], dict[str, Point]] = {}
        self.pod_prev: dict[tuple[str, str], dict[str, Point]] = {}
        self.scope: dict[tuple[str, str], tuple[str, int]] = {}

    def store(self, tick: list[tuple[str, int, tuple[int, int, int] | None, list[Row]]]) -> None:
        node_last: dict[str, Point] = {}
        node_prev: dict[str, Point] = {}
        pod_last: dict[tuple[str, str], dict[str, Point]] = {}
        pod_prev: dict[tuple[str, str], dict[str, Point]] = {}
        scope: dict[tuple[str, str], tuple[str, int]] = {}
        for node, decoder, point, rows in tick:
            # §4.1, the node rule
            if point is not None:
                new = Point(0, *point)
                node_last[node] = new
                last = self.node_last.get(node)
                prev = self.node_prev.get(node)
                if last is not None:
                    if new.ts > last.ts:
                        node_prev[node] = last
                    elif prev is not None and prev.ts < new.ts:
                        node_prev[node] = prev
            # §4.2, the pod rule
            pods: dict[tuple[str, str], list[tuple[str, Point]]] = {}
            for ns, pod, ctr, start, ts, cpu, mem in rows:
                pods.setdefault((ns, pod), []).append((ctr, Point(start, ts, cpu, mem)))
            for ident, containers in pods.items():
                same = self.scope.get(ident) == (node, decoder)
                old_last = self.pod_last.get(ident, {}) if same else {}
                old_prev = self.pod_prev.get(ident, {}) if same else {}
                new_last: dict[str, Point] = {}
                new_prev: dict[str, Point] = {}
                for ctr, new in containers:
                    new_last[ctr] = new
                    age = new.ts - new.start
                    last = old_last.get(ctr)
                    if (
                        new.start != 0
                        and new.start < new.ts
                        and age < self.resolution
                        and age >= FRESH_MIN_AGE
                    ):
                        new_prev[ctr] = Point(new.start, new.start, 0, new.mem)
                    elif last is not None and new.start < last.ts:
                        prev = old_prev.get(ctr)
                        if new.ts > last.ts:
                            new_prev[ctr] = last
                        elif prev is not None and prev.ts < new.ts:
                            new_prev[ctr] = prev
                pod_last[ident] = new_last
                scope[ident] = (node, decoder)
                if new_prev:
                    pod_prev[ident] = new_prev
        self.node_last, self.node_prev = node_last, node_prev
        self.pod_last, self.pod_prev, self.scope = pod_last, pod_prev, scope

    def node(self, name: str) -> NodeUsage | None:
        last, prev = self.node_last.get(name), self.node_prev.get(name)
        if last is None or prev is None:
            return None
        got = resource_usage(last, prev)
        return None if got is None else NodeUsage(*got)

    def pod(
        self, ident: tuple[str, str]
    ) -> tuple[int | None, int, dict[str, tuple[int, int]]] | None:
        last, prev = self.pod_last.get(ident), self.pod_prev.get(ident)
        if last is None or prev is None:
            return None
        containers: dict[str, tuple[int, int]] = {}
        earliest: tuple[int, int] | None = None
        for ctr, point in last.items():
            base = prev.get(ctr)
            if base is None:
                return None  # the whole pod is omitted
            got = resource_usage(point, base)
            if got is None:
                continue  # the container is left out, the pod stays
            cpu, mem, ts, window = got
            containers[ctr] = (cpu, mem)
            if earliest is None or ts < earliest[0]:
                earliest = (ts, window)
        ts_, window_ = earliest if earliest is not None else (None, 0)
        return ts_, window_, containers

    def counts(self) -> tuple[int, int]:
        return len(self.node_prev), sum(len(p) for p in self.pod_prev.values())


# -------------------------------------------------------------------------------- helpers


def implementations() -> dict[str, Kernels]:
    impls: dict[str, Kernels] = {"py": (_store_py.store_containers, _store_py.group_pods)}
    if _core is not None:
        impls["c"] = (_core.store_containers, _core.group_pods)
    elif os.environ.get("CI") == "true":
        pytest.fail("fastmetrics._core is not built, but CI=true requires it")
    return impls


def store_with(store: Store, kernels: Kernels, batches: list[tuple[str, DecodedBatch]]) -> Snapshot:
    saved = store_mod.store_containers, store_mod.group_pods
    store_mod.store_containers, store_mod.group_pods = kernels
    try:
        return store.store(batches)
    finally:
        store_mod.store_containers, store_mod.group_pods = saved


def usage(p: PodUsage | None) -> tuple[int | None, int, dict[str, tuple[int, int]]] | None:
    if p is None:
        return None
    return (
        p.timestamp_ns,
        p.window_ns,
        {c.name: (c.cpu_nanocores, c.memory_bytes) for c in p.containers},
    )


def freeze(snap: Snapshot) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Snapshot.__dataclass_fields__:
        value = getattr(snap, name)
        if isinstance(value, np.ndarray):
            out[name] = value.copy()
        elif isinstance(value, (list, dict)):
            out[name] = type(value)(value)
        else:
            out[name] = value
    out["pods()"] = snap.pods()
    out["node()"] = [snap.node(n) for n in NODES]
    out["pod()"] = [snap.pod(*ident) for ident in PODS]
    return out


def assert_frozen_equal(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        other = b[name]
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype, (what, name)
            assert np.array_equal(value, other), (what, name, value, other)
        else:
            assert value == other, (what, name)


def check_invariants(snap: Snapshot) -> None:
    ok = snap.status == store_mod.STATUS_OK
    assert np.all(snap.cpu_rate[ok] < UINT64_MAX)  # never saturated ("infinite")
    assert np.all(snap.window[ok] > 0)
    assert np.all(snap.cpu_rate[~ok] == 0) and np.all(snap.window[~ok] == 0)
    valid = snap.node_valid != 0
    assert np.all(snap.node_window[valid] > 0)
    assert np.all(snap.node_cpu[valid] < UINT64_MAX)
    for p in snap.pods():
        if p.timestamp_ns is None:
            assert p.window_ns == 0 and p.containers == []
        else:
            assert p.window_ns > 0 and p.containers
        for c in p.containers:
            assert 0 <= c.cpu_nanocores < UINT64_MAX


# ------------------------------------------------------------------------------ properties


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(histories())
def test_kernels_agree_with_each_other_and_with_the_reference(
    history: tuple[int, list[list[Tick]]],
) -> None:
    resolution, ticks = history
    impls = implementations()
    stores = {name: Store(resolution) for name in impls}
    ref = Reference(resolution)
    keys = {n: KeyTable() for n in NODES}
    generation = dict.fromkeys(NODES, 0)
    frozen_before: dict[str, dict[str, Any]] = {}
    before: dict[str, Snapshot] = {}
    for tick_no, tick in enumerate(ticks):
        batches = []
        ref_tick = []
        for part in tick:
            if part.replace_decoder:
                keys[part.node] = KeyTable()
                generation[part.node] += 1
            batches.append((part.node, make_batch(keys[part.node], part.point, part.rows)))
            ref_tick.append((part.node, generation[part.node], part.point, part.rows))
        snaps = {name: store_with(stores[name], impls[name], batches) for name in impls}
        ref.store(ref_tick)
        # the previous snapshots were not touched by this tick
        for name, snap in before.items():
            assert_frozen_equal(frozen_before[name], freeze(snap), f"tick {tick_no - 1} {name}")
        frozen = {name: freeze(snap) for name, snap in snaps.items()}
        if "c" in frozen:
            assert_frozen_equal(frozen["c"], frozen["py"], f"tick {tick_no} c vs py")
            assert (stores["c"].dropped_cpu_decreased, stores["c"].dropped_start_decreased) == (
                stores["py"].dropped_cpu_decreased,
                stores["py"].dropped_start_decreased,
            )
        for name, snap in snaps.items():
            what = f"tick {tick_no} {name}"
            check_invariants(snap)
            for node in NODES:
                assert snap.node(node) == ref.node(node), (what, node)
            for ident in PODS:
                assert usage(snap.pod(*ident)) == ref.pod(ident), (what, ident)
            served = [(p.namespace, p.name) for p in snap.pods()]
            assert served == sorted(i for i in PODS if ref.pod(i) is not None), what
            assert (snap.nodes_with_baseline, snap.containers_with_baseline) == ref.counts(), what
            assert snap.ready() == (ref.counts()[0] > 0 and ref.counts()[1] > 0)
        before, frozen_before = snaps, frozen


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-(2**62), 2**62 - 1),  # prev ts
            st.integers(1, 2**62),  # window
            st.integers(0, UINT64_MAX),  # prev cpu
            st.integers(0, UINT64_MAX),  # cpu delta (clipped)
        ),
        max_size=40,
    )
)
def test_cpu_rate_kernels_agree(points: list[tuple[int, int, int, int]]) -> None:
    prev_ts = np.array([p[0] for p in points], np.int64)
    last_ts = np.array([p[0] + p[1] for p in points], np.int64)
    prev_cpu = np.array([p[2] for p in points], np.uint64)
    last_cpu = np.array([min(p[2] + p[3], UINT64_MAX) for p in points], np.uint64)
    rate_py, window_py = _store_py.cpu_rate(last_ts, last_cpu, prev_ts, prev_cpu)
    assert window_py.tolist() == [p[1] for p in points]
    for r, (_, w, c0, d) in zip(rate_py.tolist(), points, strict=True):
        exact = float(min(c0 + d, UINT64_MAX) - c0) / (float(w // SEC) + float(w % SEC) / 1e9)
        assert r == (int(exact) if exact < 2.0**64 else UINT64_MAX)
    if _core is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fastmetrics._core is not built, but CI=true requires it")
        return
    rate_c, window_c = _core.cpu_rate(last_ts, last_cpu, prev_ts, prev_cpu)
    assert np.array_equal(rate_c, rate_py)
    assert np.array_equal(window_c, window_py)


# ------------------------------------------------- the kernels alone, on arbitrary columns

ts_values = st.one_of(
    st.integers(-(2**61), 2**61),
    st.sampled_from([0, -1, 1, 10 * SEC, S, S + 10 * SEC, S + 15 * SEC, S - 10 * SEC]),
)
cpu_values = st.one_of(st.integers(0, UINT64_MAX), st.integers(0, 100 * CS))


@st.composite
def node_columns(draw: st.DrawFn, max_keys: int, with_prev: bool) -> list[tuple[int, ...]]:
    keys = draw(st.permutations(range(max_keys)))[: draw(st.integers(0, max_keys))]
    rows = []
    for k in keys:
        row = (k, draw(ts_values), draw(ts_values), draw(cpu_values), draw(cpu_values))
        if with_prev:
            row += (
                draw(st.integers(0, 1)),
                draw(ts_values),
                draw(ts_values),
                draw(cpu_values),
                draw(cpu_values),
            )
        rows.append(row)
    return rows


def columns(rows: list[tuple[int, ...]], first: int) -> tuple[np.ndarray, ...]:
    dtypes = (np.int32, np.int64, np.int64, np.uint64, np.uint64)
    return tuple(np.array([r[first + i] for r in rows], dtype) for i, dtype in enumerate(dtypes))


def offsets(nodes: list[list[tuple[int, ...]]]) -> np.ndarray:
    off = np.zeros(len(nodes) + 1, np.int64)
    np.cumsum([len(n) for n in nodes], out=off[1:])
    return off


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_store_containers_kernels_agree_on_arbitrary_columns(data: st.DataObject) -> None:
    if _core is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fastmetrics._core is not built, but CI=true requires it")
        pytest.skip("fastmetrics._core is not built (pure-Python install)")
    max_keys = data.draw(st.integers(1, 8))
    old_nodes = data.draw(st.lists(node_columns(max_keys, True), max_size=3))
    new_nodes = data.draw(st.lists(node_columns(max_keys, False), max_size=3))
    slots = data.draw(st.permutations(range(max(len(old_nodes), len(new_nodes)))))
    old_slot = np.array(
        [
            s if s < len(old_nodes) and data.draw(st.integers(0, 3)) else -1
            for s in slots[: len(new_nodes)]
        ],
        np.int32,
    )
    old_rows = [r for n in old_nodes for r in n]
    new_rows = [r for n in new_nodes for r in n]
    prev_cols = columns(old_rows, 5)
    old_prev = (prev_cols[0].astype(np.uint8), *prev_cols[1:])
    args = (
        columns(new_rows, 0),
        offsets(new_nodes),
        old_slot,
        columns(old_rows, 0),
        offsets(old_nodes),
        old_prev,
        data.draw(st.sampled_from([10 * SEC, 15 * SEC, 60 * SEC])),
        max_keys,
    )
    prev_c, status_c, rate_c, window_c = _core.store_containers(*args)
    prev_py, status_py, rate_py, window_py = _store_py.store_containers(*args)
    for a, b in zip(
        (*prev_c, status_c, rate_c, window_c),
        (*prev_py, status_py, rate_py, window_py),
        strict=True,
    ):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b), (a, b)
    ok = status_c == store_mod.STATUS_OK
    assert np.all(window_c[ok] > 0)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_group_pods_kernels_agree_on_arbitrary_columns(data: st.DataObject) -> None:
    if _core is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fastmetrics._core is not built, but CI=true requires it")
        pytest.skip("fastmetrics._core is not built (pure-Python install)")
    pod_counts = data.draw(st.lists(st.integers(0, 5), max_size=4))
    rows = []
    for i, count in enumerate(pod_counts):
        n = data.draw(st.integers(0, 8)) if count else 0
        for _ in range(n):
            rows.append(
                (
                    i,
                    data.draw(st.integers(0, count - 1)),
                    data.draw(st.integers(0, 1)),
                    data.draw(st.integers(0, 3)),
                    data.draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 3))),
                    data.draw(st.integers(0, 2**63 - 1)),
                )
            )
    rows.sort(key=lambda r: r[0])  # rows are concatenated by node
    new_off = np.zeros(len(pod_counts) + 1, np.int64)
    for r in rows:
        new_off[r[0] + 1] += 1
    new_off = np.cumsum(new_off)
    pod_base = np.zeros(len(pod_counts) + 1, np.int64)
    np.cumsum(pod_counts, out=pod_base[1:])
    args = (
        np.array([r[1] for r in rows], np.int32),
        new_off,
        pod_base,
        np.array([r[2] for r in rows], np.uint8),
        np.array([r[3] for r in rows], np.uint8),
        np.array([r[4] for r in rows], np.int64),
        np.array([r[5] for r in rows], np.int64),
    )
    got_c = _core.group_pods(*args)
    got_py = _store_py.group_pods(*args)
    for a, b in zip(got_c, got_py, strict=True):
        assert a.dtype == b.dtype, (a, b)
        assert np.array_equal(a, b), (a, b)
