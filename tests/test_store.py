"""The store, as narratives: ticks of batches in, served usages out (SPEC §4, §5.3, §7, §10.3).

Every test runs against both store kernels (the ``kernels`` fixture: the compiled ``c`` kernels
of ``fastmetrics._core`` and their numpy twins ``py`` in ``fastmetrics._store_py``), patched
into ``fastmetrics.store``. Batches are built directly as ``DecodedBatch`` columns with a
``KeyTable`` per node decoder (the ``Node`` helper), except for the worked example of SPEC §5.3,
which decodes the kubelet bodies of SPEC §1.4 with a real ``Decoder``.

Points are written as in metrics-server's storage tests: ``(start, ts, cpu, memory)``, with S a
realistic epoch (2026-01-01T00:00:00Z), CS a core-second of CPU (1e9 ns) and MiB = 2**20.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from fastmetrics import _store_py
from fastmetrics import store as store_mod
from fastmetrics._batch import DecodedBatch, KeyTable, NodePoint
from fastmetrics.api.format import (
    FORMAT_CPU,
    FORMAT_MEMORY,
    FORMAT_TIMESTAMP,
    FORMAT_WINDOW,
    format_column,
    format_cpu,
    format_memory,
    format_timestamp,
    format_window,
)
from fastmetrics.decode import Decoder
from fastmetrics.store import (
    ContainerUsage,
    NodeUsage,
    PodUsage,
    Snapshot,
    Store,
)

DATA = Path(__file__).parent / "data" / "kubelet"

SEC = 1_000_000_000
MS = 1_000_000
S = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z
CS = SEC  # one core-second of CPU, in ns of CPU time
MiB = 1 << 20
R60 = 60 * SEC  # NewStorage(60s) of metrics-server's storage tests
R15 = 15 * SEC  # the manifests' --metric-resolution


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["c", "py"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Patch ``fastmetrics.store`` to use the compiled (``c``) or numpy (``py``) kernels."""
    if request.param == "c":
        try:
            from fastmetrics import _core
        except ImportError:
            if os.environ.get("CI") == "true":
                pytest.fail("fastmetrics._core is not built, but CI=true requires it")
            pytest.skip("fastmetrics._core is not built (pure-Python install)")
        store_containers, group_pods = _core.store_containers, _core.group_pods
    else:
        store_containers, group_pods = _store_py.store_containers, _store_py.group_pods
    monkeypatch.setattr(store_mod, "store_containers", store_containers)
    monkeypatch.setattr(store_mod, "group_pods", group_pods)
    return str(request.param)


# ------------------------------------------------------------------------------------ helpers


class C(NamedTuple):
    """One container point of a batch."""

    ns: str
    pod: str
    container: str
    start: int
    ts: int
    cpu: int
    mem: int


def batch(
    keys: KeyTable, node: tuple[int, int, int] | None, rows: Iterable[C] = ()
) -> DecodedBatch:
    """A ``DecodedBatch`` whose ids are interned in ``keys`` (the node's decoder's table)."""
    rows = list(rows)
    ids = [keys.intern(r.ns, r.pod, r.container) for r in rows]

    def col(values: Sequence[int], dtype: type) -> np.ndarray:
        return np.array(values, dtype=dtype)

    return DecodedBatch(
        NodePoint(*node) if node is not None else None,
        col([k for k, _ in ids], np.int32),
        col([p for _, p in ids], np.int32),
        col([r.ts for r in rows], np.int64),
        col([r.start for r in rows], np.int64),
        col([r.cpu for r in rows], np.uint64),
        col([r.mem for r in rows], np.uint64),
        keys,
    )


class Node:
    """A node and its decoder's key table; ``replace_decoder`` starts a new table."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys = KeyTable()

    def __call__(
        self, node: tuple[int, int, int] | None = None, *rows: C
    ) -> tuple[str, DecodedBatch]:
        return self.name, batch(self.keys, node, list(rows))

    def replace_decoder(self) -> None:
        self.keys = KeyTable()


def pod_point(start: int, ts: int, cpu: int, mem: int, container: str = "container1") -> C:
    """A point of ``ns1/pod1`` (metrics-server's pod tests)."""
    return C("ns1", "pod1", container, start, ts, cpu, mem)


_POD_TEST_KEYS: weakref.WeakKeyDictionary[Store, KeyTable] = weakref.WeakKeyDictionary()


def only_pod(st: Store, *points: C) -> Snapshot:
    """Store a tick whose only content is ``points`` on node ``n`` (the pod tests' batches).

    The node has no node point; its decoder (key table) is the same for every tick of ``st``.
    """
    keys = _POD_TEST_KEYS.setdefault(st, KeyTable())
    return st.store([("n", batch(keys, None, points))])


def usage(p: PodUsage | None) -> tuple[int | None, int, dict[str, tuple[int, int]]] | None:
    """A pod usage as (timestamp, window, {container: (cpu, memory)}); order is not defined."""
    if p is None:
        return None
    return (
        p.timestamp_ns,
        p.window_ns,
        {c.name: (c.cpu_nanocores, c.memory_bytes) for c in p.containers},
    )


def rate(dcpu: int, window_ns: int) -> int:
    """Go's ``uint64(float64(dcpu) / window.Seconds())``."""
    seconds = float(window_ns // SEC) + float(window_ns % SEC) / 1e9
    return int(float(dcpu) / seconds)


# --------------------------------------------------------------- SPEC §10.3: the node cases


def test_node_case_1_second_point_gives_the_rate(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    snap = st.store([node1((S + 10 * SEC, 10 * CS, 2 * MiB))])
    assert snap.node("node1") is None
    assert snap.nodes_with_baseline == 0  # not NodeReady
    snap = st.store([node1((S + 20 * SEC, 20 * CS, 3 * MiB))])
    assert snap.nodes_with_baseline == 1  # NodeReady
    got = snap.node("node1")
    assert got == NodeUsage(1_000_000_000, 3 * MiB, S + 20 * SEC, 10 * SEC)
    assert (format_cpu(got.cpu_nanocores), format_memory(got.memory_bytes)) == ("1", "3Mi")
    assert format_window(got.window_ns) == "10s"
    assert snap.node("node2") is None
    snap = st.store([])
    assert snap.node("node1") is None
    assert snap.nodes_with_baseline == 0


def test_node_case_2_same_batch_twice(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    for _ in range(3):
        snap = st.store([node1((S + 10 * SEC, 10 * CS, 2 * MiB))])
        assert snap.node("node1") is None
        assert snap.nodes_with_baseline == 0


def test_node_case_3_storage_points_gauge(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    # before any store: metrics-server has no series; the empty snapshot counts nothing
    assert (st.snapshot.nodes_with_baseline, st.snapshot.containers_with_baseline) == (0, 0)
    snap = st.store([node1((S + 10 * SEC, 10 * CS, 2 * MiB))])
    assert (snap.nodes_with_baseline, snap.containers_with_baseline) == (0, 0)
    snap = st.store([node1((S + 20 * SEC, 21 * CS, 3 * MiB))])
    assert (snap.nodes_with_baseline, snap.containers_with_baseline) == (1, 0)


def test_node_case_4_cpu_decrease_on_the_second_point(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S + 10 * SEC, 10 * CS, 2 * MiB))])
    # (the Go test gives this point start S+15s: a node point carries no start time)
    snap = st.store([node1((S + 20 * SEC, 5 * CS, 3 * MiB))])
    assert snap.node("node1") is None
    assert snap.nodes_with_baseline == 1  # the baseline is stored, the read fails


def test_node_case_5_cpu_decrease(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S + 15 * SEC, 50 * CS, 2 * MiB))])
    snap = st.store([node1((S + 25 * SEC, 10 * CS, 3 * MiB))])
    assert snap.node("node1") is None


def test_node_case_6_point_older_than_prev(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S + 15 * SEC, 10 * CS, MiB))])
    snap = st.store([node1((S + 35 * SEC, 50 * CS, MiB))])
    assert snap.node("node1") == NodeUsage(2 * SEC, MiB, S + 35 * SEC, 20 * SEC)
    snap = st.store([node1((S + 5 * SEC, 6 * CS, MiB))])
    assert snap.node("node1") is None
    assert snap.nodes_with_baseline == 0


def test_node_case_7_out_of_order_point_keeps_the_older_baseline(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S + 15 * SEC, 10 * CS, 1 * MiB))])
    st.store([node1((S + 35 * SEC, 50 * CS, 4 * MiB))])
    snap = st.store([node1((S + 25 * SEC, 35 * CS, 2 * MiB))])
    got = snap.node("node1")
    assert got == NodeUsage(2_500_000_000, 2 * MiB, S + 25 * SEC, 10 * SEC)
    assert (format_cpu(got.cpu_nanocores), format_memory(got.memory_bytes)) == ("2500m", "2Mi")
    # the 35 s point is discarded: the next point at 45 s measures from 25 s
    snap = st.store([node1((S + 45 * SEC, 55 * CS, 2 * MiB))])
    assert snap.node("node1") == NodeUsage(1_000_000_000, 2 * MiB, S + 45 * SEC, 20 * SEC)


def test_node_case_8_containers_without_start_time_do_not_matter(kernels: str) -> None:
    # node points carry no start time at all (decode never sets one); the Go test's "zero
    # start time" variant is case 1 again, here with a container lacking a start time beside
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S + 10 * SEC, 10 * CS, 2 * MiB), pod_point(0, S + 10 * SEC, CS, MiB))])
    snap = st.store(
        [node1((S + 20 * SEC, 20 * CS, 3 * MiB), pod_point(0, S + 20 * SEC, 2 * CS, MiB))]
    )
    assert snap.node("node1") == NodeUsage(1_000_000_000, 3 * MiB, S + 20 * SEC, 10 * SEC)


def test_node_duplicate_point_keeps_serving_the_older_baseline(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S, 0 + 100 * CS, MiB))])
    want = NodeUsage(3 * SEC, 2 * MiB, S + 15 * SEC, 15 * SEC)
    for _ in range(4):  # the same sample again and again: prev stays the first point
        snap = st.store([node1((S + 15 * SEC, 145 * CS, 2 * MiB))])
        assert snap.node("node1") == want
        assert snap.nodes_with_baseline == 1


def test_node_without_a_node_point_in_its_batch(kernels: str) -> None:
    # a payload lacking node cpu/memory decodes to node=None: the node has no point this tick
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S, 10 * CS, MiB))])
    st.store([node1((S + 15 * SEC, 25 * CS, MiB))])
    snap = st.store([node1(None)])
    assert snap.node("node1") is None
    assert snap.nodes_with_baseline == 0
    snap = st.store([node1((S + 45 * SEC, 40 * CS, MiB))])
    assert snap.node("node1") is None  # no last point from the tick before: a new baseline
    snap = st.store([node1((S + 60 * SEC, 55 * CS, MiB))])
    assert snap.node("node1") == NodeUsage(SEC, MiB, S + 60 * SEC, 15 * SEC)


# ---------------------------------------------------------------- SPEC §10.3: the pod cases


def test_pod_case_1_second_point_gives_the_rate(kernels: str) -> None:
    st = Store(R60)
    snap = only_pod(st, pod_point(S, S + 120 * SEC, 1 * CS, 4 * MiB))
    assert snap.pod("ns1", "pod1") is None
    assert snap.containers_with_baseline == 0  # not PodReady
    snap = only_pod(st, pod_point(S, S + 125 * SEC, 6 * CS, 5 * MiB))
    assert snap.containers_with_baseline == 1  # PodReady
    got = snap.pod("ns1", "pod1")
    assert got == PodUsage(
        "ns1", "pod1", S + 125 * SEC, 5 * SEC, [ContainerUsage("container1", SEC, 5 * MiB)]
    )
    assert (format_cpu(SEC), format_memory(5 * MiB), format_window(5 * SEC)) == ("1", "5Mi", "5s")
    assert snap.pod("ns1", "pod2") is None
    assert snap.pods() == [got]
    snap = st.store([])
    assert snap.pod("ns1", "pod1") is None
    assert snap.pods() == []


def test_pod_case_2_pod_time_info_is_the_earliest_containers(kernels: str) -> None:
    st = Store(R60)
    only_pod(
        st,
        C("ns1", "pod1", "container1", S, S + 110 * SEC, 1 * CS, MiB),
        C("ns1", "pod1", "container2", S, S + 115 * SEC, 2 * CS, MiB),
    )
    snap = only_pod(
        st,
        C("ns1", "pod1", "container1", S, S + 120 * SEC, 6 * CS, MiB),
        C("ns1", "pod1", "container2", S, S + 125 * SEC, 7 * CS, MiB),
    )
    assert usage(snap.pod("ns1", "pod1")) == (
        S + 120 * SEC,
        10 * SEC,
        {"container1": (500_000_000, MiB), "container2": (500_000_000, MiB)},
    )


def test_pod_case_2_earliest_container_may_come_last(kernels: str) -> None:
    st = Store(R60)
    only_pod(
        st,
        C("ns1", "pod1", "late", S, S + 115 * SEC, 2 * CS, MiB),
        C("ns1", "pod1", "early", S, S + 100 * SEC, 1 * CS, MiB),
    )
    snap = only_pod(
        st,
        C("ns1", "pod1", "late", S, S + 130 * SEC, 5 * CS, MiB),
        C("ns1", "pod1", "early", S, S + 120 * SEC, 5 * CS, MiB),
    )
    got = snap.pod("ns1", "pod1")
    assert got is not None
    assert (got.timestamp_ns, got.window_ns) == (S + 120 * SEC, 20 * SEC)


def test_pod_case_3_same_batch_twice(kernels: str) -> None:
    st = Store(R60)
    for _ in range(3):
        snap = only_pod(st, pod_point(S, S + 120 * SEC, 1 * CS, 4 * MiB))
        assert snap.pod("ns1", "pod1") is None
        assert snap.containers_with_baseline == 0


def test_pod_case_4_storage_points_gauge(kernels: str) -> None:
    st = Store(R60)
    snap = only_pod(
        st,
        C("ns1", "pod1", "container1", S, S + 110 * SEC, 1 * CS, MiB),
        C("ns1", "pod1", "container2", S, S + 115 * SEC, 2 * CS, MiB),
    )
    assert (snap.nodes_with_baseline, snap.containers_with_baseline) == (0, 0)
    snap = only_pod(
        st,
        C("ns1", "pod1", "container1", S, S + 120 * SEC, 6 * CS, MiB),
        C("ns1", "pod1", "container2", S, S + 125 * SEC, 7 * CS, MiB),
    )
    assert (snap.nodes_with_baseline, snap.containers_with_baseline) == (0, 2)


def test_pod_case_5_restart_with_fresh_container(kernels: str) -> None:
    st = Store(R60)
    only_pod(st, pod_point(S, S + 10 * SEC, 1 * CS, 4 * MiB))
    snap = only_pod(st, pod_point(S + 15 * SEC, S + 25 * SEC, 5 * CS, 5 * MiB))
    got = snap.pod("ns1", "pod1")
    assert usage(got) == (S + 25 * SEC, 10 * SEC, {"container1": (500_000_000, 5 * MiB)})
    assert format_cpu(500_000_000) == "500m"


def test_pod_case_6_cpu_decrease_returns_the_pod_without_containers(kernels: str) -> None:
    st = Store(R60)
    only_pod(st, pod_point(S, S + 110 * SEC, 20 * CS, 5 * MiB))
    snap = only_pod(st, pod_point(S, S + 120 * SEC, 10 * CS, 5 * MiB))
    got = snap.pod("ns1", "pod1")
    assert got == PodUsage("ns1", "pod1", None, 0, [])
    assert format_window(got.window_ns) == "0s"  # served as "timestamp": null, "window": "0s"
    assert snap.pods() == [got]
    assert st.dropped_cpu_decreased == 1
    assert st.dropped_start_decreased == 0


def test_pod_case_7_point_older_than_prev(kernels: str) -> None:
    st = Store(R60)
    only_pod(st, pod_point(S, S + 1115 * SEC, 20 * CS, MiB))
    snap = only_pod(st, pod_point(S, S + 1125 * SEC, 40 * CS, MiB))
    assert usage(snap.pod("ns1", "pod1")) == (
        S + 1125 * SEC,
        10 * SEC,
        {"container1": (2 * SEC, MiB)},
    )
    snap = only_pod(st, pod_point(S, S + 115 * SEC, 10 * CS, MiB))
    assert snap.pod("ns1", "pod1") is None
    assert snap.containers_with_baseline == 0


def test_pod_case_8_out_of_order_point_keeps_the_older_baseline(kernels: str) -> None:
    st = Store(R60)
    only_pod(st, pod_point(S, S + 115 * SEC, 10 * CS, 5 * MiB))
    only_pod(st, pod_point(S, S + 125 * SEC, 50 * CS, 5 * MiB))
    snap = only_pod(st, pod_point(S, S + 120 * SEC, 35 * CS, 5 * MiB))
    got = snap.pod("ns1", "pod1")
    assert usage(got) == (S + 120 * SEC, 5 * SEC, {"container1": (5 * SEC, 5 * MiB)})
    assert format_cpu(5 * SEC) == "5"


def test_pod_case_9_single_point_older_than_resolution(kernels: str) -> None:
    st = Store(R60)
    snap = only_pod(st, pod_point(S, S + 120 * SEC, 10 * CS, 4 * MiB))
    assert snap.pod("ns1", "pod1") is None
    assert not snap.ready()


def test_pod_case_10_fresh_container_served_at_once(kernels: str) -> None:
    st = Store(R60)
    snap = only_pod(st, pod_point(S, S + 10 * SEC, 10 * CS, 4 * MiB))
    got = snap.pod("ns1", "pod1")
    assert usage(got) == (S + 10 * SEC, 10 * SEC, {"container1": (SEC, 4 * MiB)})
    assert (format_cpu(SEC), format_memory(4 * MiB)) == ("1", "4Mi")
    assert snap.containers_with_baseline == 1  # PodReady


def test_pod_case_11_timestamp_before_start(kernels: str) -> None:
    st = Store(R60)
    snap = only_pod(st, pod_point(S, S - 10 * SEC, 10 * CS, 4 * MiB))
    assert snap.pod("ns1", "pod1") is None
    assert snap.containers_with_baseline == 0


def test_pod_case_12_too_young_to_be_fresh(kernels: str) -> None:
    st = Store(R60)
    snap = only_pod(st, pod_point(S, S + 9 * SEC, 10 * CS, 4 * MiB))
    assert snap.pod("ns1", "pod1") is None
    assert snap.containers_with_baseline == 0


def test_pod_case_13_zero_start_time(kernels: str) -> None:
    st = Store(R60)
    snap = only_pod(st, pod_point(0, S + 120 * SEC, 1 * CS, 4 * MiB))
    assert snap.pod("ns1", "pod1") is None
    snap = only_pod(st, pod_point(0, S + 125 * SEC, 6 * CS, 5 * MiB))
    assert usage(snap.pod("ns1", "pod1")) == (
        S + 125 * SEC,
        5 * SEC,
        {"container1": (SEC, 5 * MiB)},
    )
    assert only_pod(st).pod("ns1", "pod1") is None


def test_pod_case_14_container_without_baseline_hides_the_pod(kernels: str) -> None:
    st = Store(R60)
    only_pod(st, C("ns1", "pod1", "container1", S, S + 110 * SEC, 1 * CS, MiB))
    snap = only_pod(
        st,
        C("ns1", "pod1", "container1", S, S + 120 * SEC, 6 * CS, MiB),
        C("ns1", "pod1", "container2", S, S + 120 * SEC, 7 * CS, MiB),  # age 120 s: not fresh
    )
    assert snap.pod("ns1", "pod1") is None
    assert snap.pods() == []
    assert snap.containers_with_baseline == 1  # container1 keeps its baseline
    snap = only_pod(
        st,
        C("ns1", "pod1", "container1", S, S + 130 * SEC, 11 * CS, MiB),
        C("ns1", "pod1", "container2", S, S + 130 * SEC, 17 * CS, MiB),
    )
    assert usage(snap.pod("ns1", "pod1")) == (
        S + 130 * SEC,
        10 * SEC,
        {"container1": (500_000_000, MiB), "container2": (SEC, MiB)},
    )


# ------------------------------------------------------------ SPEC §10.3: readiness, "Types"


def test_readiness_two_node_only_batches(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S + 10 * SEC, 10 * CS, MiB))])
    st.store([node1((S + 20 * SEC, 20 * CS, MiB))])
    assert st.snapshot.node("node1") is not None
    assert not st.ready()


def test_readiness_two_pod_only_batches(kernels: str) -> None:
    st = Store(R60)
    only_pod(st, pod_point(S, S + 120 * SEC, 1 * CS, MiB))
    only_pod(st, pod_point(S, S + 125 * SEC, 2 * CS, MiB))
    assert st.snapshot.pod("ns1", "pod1") is not None
    assert not st.ready()


def test_readiness_two_combined_batches(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S + 10 * SEC, 10 * CS, MiB), pod_point(S, S + 120 * SEC, 1 * CS, MiB))])
    assert not st.ready()
    snap = st.store([node1((S + 20 * SEC, 20 * CS, MiB), pod_point(S, S + 125 * SEC, 2 * CS, MiB))])
    assert st.ready() and snap.ready()
    assert (snap.nodes_with_baseline, snap.containers_with_baseline) == (1, 1)
    # an empty tick flips it back
    snap = st.store([])
    assert not st.ready() and not snap.ready()


def test_readiness_needs_a_container_baseline_not_a_served_pod(kernels: str) -> None:
    # case 14's shape: container1 has a baseline, the pod is hidden; metrics-server counts prev
    st = Store(R60)
    node1 = Node("node1")
    st.store([node1((S, CS, MiB), C("ns1", "pod1", "container1", S, S + 110 * SEC, CS, MiB))])
    snap = st.store(
        [
            node1(
                (S + 15 * SEC, 2 * CS, MiB),
                C("ns1", "pod1", "container1", S, S + 120 * SEC, 6 * CS, MiB),
                C("ns1", "pod1", "container2", S, S + 120 * SEC, 7 * CS, MiB),
            )
        ]
    )
    assert snap.pods() == []
    assert snap.ready()


def test_resource_usage_types_case(kernels: str) -> None:
    # resourceUsage(last=(S, S+20ms, 500, 600), prev=(S, S+10ms, 300, 400))
    st = Store(R60)
    only_pod(st, pod_point(S, S + 10 * MS, 300, 400))
    snap = only_pod(st, pod_point(S, S + 20 * MS, 500, 600))
    got = snap.pod("ns1", "pod1")
    assert usage(got) == (S + 20 * MS, 10 * MS, {"container1": (20_000, 600)})
    assert (format_cpu(20_000), format_memory(600), format_window(10 * MS)) == (
        "20u",
        "600",
        "10ms",
    )


def test_resource_usage_start_time_decrease_is_an_error(kernels: str) -> None:
    # prev.start later than last.start; the pod is still returned, without the container
    st = Store(R60)
    only_pod(
        st,
        C("ns1", "pod1", "app", S, S + 100 * SEC, 10 * CS, MiB),
        C("ns1", "pod1", "sidecar", S + 50 * SEC, S + 100 * SEC, 1 * CS, MiB),
    )
    snap = only_pod(
        st,
        C("ns1", "pod1", "app", S, S + 115 * SEC, 25 * CS, 2 * MiB),
        C("ns1", "pod1", "sidecar", S + 40 * SEC, S + 115 * SEC, 2 * CS, MiB),
    )
    assert usage(snap.pod("ns1", "pod1")) == (S + 115 * SEC, 15 * SEC, {"app": (SEC, 2 * MiB)})
    assert st.dropped_start_decreased == 1
    assert st.dropped_cpu_decreased == 0
    assert snap.containers_with_baseline == 2  # both have a prev; the read rejects one


def test_resource_usage_cpu_decrease_is_an_error(kernels: str) -> None:
    st = Store(R60)
    only_pod(
        st,
        C("ns1", "pod1", "app", S, S + 100 * SEC, 10 * CS, MiB),
        C("ns1", "pod1", "sidecar", S, S + 100 * SEC, 300, MiB),
    )
    snap = only_pod(
        st,
        C("ns1", "pod1", "app", S, S + 115 * SEC, 25 * CS, 2 * MiB),
        C("ns1", "pod1", "sidecar", S, S + 115 * SEC, 100, MiB),
    )
    assert usage(snap.pod("ns1", "pod1")) == (S + 115 * SEC, 15 * SEC, {"app": (SEC, 2 * MiB)})
    assert (st.dropped_start_decreased, st.dropped_cpu_decreased) == (0, 1)


# ---------------------------------------------------------------------- multi-tick narratives


def test_restart_hides_the_pod_for_one_tick(kernels: str) -> None:
    st = Store(R15)
    web = Node("node1")
    boot = S - 3600 * SEC

    def tick(t: int, app: tuple[int, int], side_cpu: int) -> Snapshot:
        return st.store(
            [
                web(
                    (S + t * SEC, 1000 * CS + t * CS, 1024 * MiB),
                    C("default", "web", "app", app[0], S + t * SEC, app[1], 100 * MiB),
                    C("default", "web", "sidecar", boot, S + t * SEC, side_cpu, 10 * MiB),
                    C("default", "other", "main", boot, S + t * SEC, 5 * t * CS, 10 * MiB),
                )
            ]
        )

    tick(0, (boot, 100 * CS), 1 * CS)
    snap = tick(15, (boot, 130 * CS), 4 * CS)
    assert usage(snap.pod("default", "web")) == (
        S + 15 * SEC,
        15 * SEC,
        {"app": (2 * SEC, 100 * MiB), "sidecar": (200_000_000, 10 * MiB)},
    )
    # app restarted 4 s before its sample (after the last timestamp, too young to be fresh):
    # no baseline for app => the whole pod is hidden this tick; the other pod is unaffected
    restart = S + 26 * SEC
    snap = tick(30, (restart, 2 * CS), 7 * CS)
    assert snap.pod("default", "web") is None
    assert snap.containers_with_baseline == 2  # sidecar and other/main
    assert usage(snap.pod("default", "other")) == (
        S + 30 * SEC,
        15 * SEC,
        {"main": (5 * SEC, 10 * MiB)},
    )
    # next tick: the restarted container measures from its first point after the restart
    snap = tick(45, (restart, 5 * CS), 10 * CS)
    assert usage(snap.pod("default", "web")) == (
        S + 45 * SEC,
        15 * SEC,
        {"app": (200_000_000, 100 * MiB), "sidecar": (200_000_000, 10 * MiB)},
    )


def test_restart_is_detected_against_the_last_timestamp_not_the_last_start(kernels: str) -> None:
    # a start time that moved forward but is still before the last timestamp is "not restarted":
    # the old point is the baseline, and the lower counter then drops the container
    st = Store(R60)
    only_pod(st, pod_point(S, S + 100 * SEC, 50 * CS, MiB))
    # restarted at 90 s (age 70 s at the sample: not fresh), before the last timestamp 100 s
    snap = only_pod(st, pod_point(S + 90 * SEC, S + 160 * SEC, 3 * CS, MiB))
    assert snap.pod("ns1", "pod1") == PodUsage("ns1", "pod1", None, 0, [])
    assert st.dropped_cpu_decreased == 1
    # start exactly at the last timestamp counts as a restart: no baseline, pod hidden
    st = Store(R60)
    only_pod(st, pod_point(S, S + 100 * SEC, 50 * CS, MiB))
    snap = only_pod(st, pod_point(S + 100 * SEC, S + 165 * SEC, 3 * CS, MiB))
    assert snap.pod("ns1", "pod1") is None
    assert snap.containers_with_baseline == 0


@pytest.mark.parametrize(
    ("resolution", "age", "fresh"),
    [
        (R15, 10 * SEC - 1, False),
        (R15, 9_999 * MS, False),
        (R15, 10 * SEC, True),
        (R15, 12_400 * MS, True),
        (R15, 15 * SEC - 1, True),
        (R15, 15 * SEC, False),
        (R15, 20 * SEC, False),
        (R60, 9_999 * MS, False),
        (R60, 10 * SEC, True),
        (R60, 15 * SEC, True),
        (R60, 59_999 * MS, True),
        (R60, 60 * SEC, False),
        (R60, 0, False),
        (R60, -5 * SEC, False),
    ],
)
def test_fresh_container_rule(kernels: str, resolution: int, age: int, fresh: bool) -> None:
    st = Store(resolution)
    ts = S + 120 * SEC
    cpu = 7 * CS
    snap = only_pod(st, pod_point(ts - age, ts, cpu, 3 * MiB))
    got = snap.pod("ns1", "pod1")
    if fresh:
        # a synthetic baseline at the start time with zero CPU
        assert usage(got) == (ts, age, {"container1": (rate(cpu, age), 3 * MiB)})
        assert snap.containers_with_baseline == 1
    else:
        assert got is None
        assert snap.containers_with_baseline == 0


def test_fresh_container_window_formats(kernels: str) -> None:
    st = Store(R15)
    snap = only_pod(st, pod_point(S, S + 12_400 * MS, 11_562_004_000, 105_369_600))
    got = snap.pod("ns1", "pod1")
    assert got is not None
    assert format_window(got.window_ns) == "12.4s"
    assert format_cpu(got.containers[0].cpu_nanocores) == "932419677n"


def test_zero_start_time_is_never_fresh(kernels: str) -> None:
    # start 0 = "not reported" (Go's zero time, year 1): the fresh rule never applies, even for
    # a timestamp 10-12 s after the Unix epoch, where 0 read as 1970 would look fresh
    for resolution in (R15, R60):
        for ts in (10 * SEC, 12 * SEC, S + 10 * SEC, S):
            st = Store(resolution)
            snap = only_pod(st, pod_point(0, ts, CS, MiB))
            assert snap.pod("ns1", "pod1") is None
            assert snap.containers_with_baseline == 0


def test_fresh_branch_wins_over_an_older_genuine_point(kernels: str) -> None:
    st = Store(R60)
    # first seen 5 s after start: too young to be fresh, no baseline
    snap = only_pod(st, pod_point(S, S + 5 * SEC, 1 * CS, MiB))
    assert snap.pod("ns1", "pod1") is None
    # 20 s after start: fresh (20 s < 60 s), so the baseline is (start, 0), not the 5 s point
    snap = only_pod(st, pod_point(S, S + 20 * SEC, 6 * CS, MiB))
    assert usage(snap.pod("ns1", "pod1")) == (
        S + 20 * SEC,
        20 * SEC,
        {"container1": (300_000_000, MiB)},
    )
    # at 65 s it is too old to be fresh: the genuine 20 s point is the baseline again
    snap = only_pod(st, pod_point(S, S + 65 * SEC, 15 * CS, MiB))
    assert usage(snap.pod("ns1", "pod1")) == (
        S + 65 * SEC,
        45 * SEC,
        {"container1": (200_000_000, MiB)},
    )


def test_duplicate_pod_points_keep_the_older_baseline(kernels: str) -> None:
    st = Store(R60)
    only_pod(st, pod_point(S, S + 100 * SEC, 10 * CS, MiB))
    want = (S + 115 * SEC, 15 * SEC, {"container1": (SEC, 2 * MiB)})
    for _ in range(3):
        snap = only_pod(st, pod_point(S, S + 115 * SEC, 25 * CS, 2 * MiB))
        assert usage(snap.pod("ns1", "pod1")) == want
        assert snap.containers_with_baseline == 1
    # a point between prev and last: prev (100 s) is still older, so it stays the baseline
    snap = only_pod(st, pod_point(S, S + 110 * SEC, 20 * CS, 3 * MiB))
    assert usage(snap.pod("ns1", "pod1")) == (
        S + 110 * SEC,
        10 * SEC,
        {"container1": (SEC, 3 * MiB)},
    )


def test_cpu_and_start_decrease_drop_containers_but_keep_the_pod(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")

    def tick(t: int, a: tuple[int, int], b: tuple[int, int], c: int) -> Snapshot:
        return st.store(
            [
                node1(
                    (S + t * SEC, t * CS, MiB),
                    C("ns", "p", "a", a[0], S + t * SEC, a[1], 1 * MiB),
                    C("ns", "p", "b", b[0], S + t * SEC, b[1], 2 * MiB),
                    C("ns", "p", "c", S - 100 * SEC, S + t * SEC, c, 3 * MiB),
                )
            ]
        )

    tick(100, (S, 10 * CS), (S + 50 * SEC, 10 * CS), 10 * CS)
    snap = tick(110, (S, 5 * CS), (S + 40 * SEC, 20 * CS), 11 * CS)  # a: cpu, b: start decrease
    assert snap.pod("ns", "p") == PodUsage(
        "ns", "p", S + 110 * SEC, 10 * SEC, [ContainerUsage("c", 100_000_000, 3 * MiB)]
    )
    assert (st.dropped_cpu_decreased, st.dropped_start_decreased) == (1, 1)
    assert snap.containers_with_baseline == 3
    # the next tick measures from the points that were rejected at read time
    snap = tick(120, (S, 7 * CS), (S + 40 * SEC, 21 * CS), 12 * CS)
    assert usage(snap.pod("ns", "p")) == (
        S + 120 * SEC,
        10 * SEC,
        {"a": (200_000_000, MiB), "b": (100_000_000, 2 * MiB), "c": (100_000_000, 3 * MiB)},
    )
    assert (st.dropped_cpu_decreased, st.dropped_start_decreased) == (0, 0)


def test_pod_with_every_container_dropped(kernels: str) -> None:
    st = Store(R60)
    only_pod(
        st,
        C("ns1", "pod1", "a", S, S + 100 * SEC, 10 * CS, MiB),
        C("ns1", "pod1", "b", S, S + 100 * SEC, 10 * CS, MiB),
    )
    snap = only_pod(
        st,
        C("ns1", "pod1", "a", S, S + 115 * SEC, 9 * CS, MiB),
        C("ns1", "pod1", "b", S - SEC, S + 115 * SEC, 11 * CS, MiB),
    )
    got = snap.pod("ns1", "pod1")
    assert got == PodUsage("ns1", "pod1", None, 0, [])
    assert format_window(got.window_ns) == "0s"
    assert snap.pods() == [got]
    assert snap.pod_index("ns1", "pod1") >= 0


def test_pod_time_info_from_the_earliest_container(kernels: str) -> None:
    st = Store(R60)
    rows0 = [
        C("ns", "p", "a", S, S + 100 * SEC, 10 * CS, MiB),
        C("ns", "p", "b", S, S + 92 * SEC, 10 * CS, MiB),
        C("ns", "p", "c", S, S + 95 * SEC, 10 * CS, MiB),
    ]
    only_pod(st, *rows0)
    snap = only_pod(
        st,
        C("ns", "p", "a", S, S + 115 * SEC, 25 * CS, MiB),
        C("ns", "p", "b", S, S + 112 * SEC, 9 * CS, MiB),  # earliest, but dropped (cpu)
        C("ns", "p", "c", S, S + 113 * SEC, 28 * CS, MiB),
    )
    # b is left out, so c (113 s, window 18 s) is the earliest container with a rate
    assert usage(snap.pod("ns", "p")) == (
        S + 113 * SEC,
        18 * SEC,
        {"a": (SEC, MiB), "c": (SEC, MiB)},
    )


def test_pod_time_info_tie_takes_the_first_container(kernels: str) -> None:
    # two containers with the same timestamp and different windows: the first row wins
    # (metrics-server: map order; fastmetrics: row order, i.e. payload order)
    st = Store(R60)
    only_pod(
        st,
        C("ns", "p", "a", S, S + 100 * SEC, 10 * CS, MiB),
        C("ns", "p", "b", S, S + 90 * SEC, 10 * CS, MiB),
    )
    snap = only_pod(
        st,
        C("ns", "p", "b", S, S + 120 * SEC, 40 * CS, MiB),
        C("ns", "p", "a", S, S + 120 * SEC, 30 * CS, MiB),
    )
    got = snap.pod("ns", "p")
    assert got is not None
    assert (got.timestamp_ns, got.window_ns) == (S + 120 * SEC, 30 * SEC)


def test_disappeared_nodes_and_pods_vanish_at_once(kernels: str) -> None:
    st = Store(R60)
    n1, n2 = Node("node1"), Node("node2")

    def tick(t: int, with_n2: bool, with_b: bool) -> Snapshot:
        rows1 = [C("ns", "a", "c", S, S + t * SEC, t * CS, MiB)]
        if with_b:
            rows1.append(C("ns", "b", "c", S, S + t * SEC, 2 * t * CS, MiB))
        batches = [n1((S + t * SEC, t * CS, MiB), *rows1)]
        if with_n2:
            batches.append(
                n2((S + t * SEC, 3 * t * CS, MiB), C("ns", "z", "c", S, S + t * SEC, t * CS, MiB))
            )
        return st.store(batches)

    tick(100, True, True)
    snap = tick(115, True, True)
    assert [p.name for p in snap.pods()] == ["a", "b", "z"]
    assert snap.node("node1") is not None and snap.node("node2") is not None
    assert (snap.nodes_with_baseline, snap.containers_with_baseline) == (2, 3)
    snap = tick(130, False, False)
    assert [p.name for p in snap.pods()] == ["a"]
    assert snap.node("node2") is None
    assert snap.pod("ns", "b") is None and snap.pod("ns", "z") is None
    assert (snap.nodes_with_baseline, snap.containers_with_baseline) == (1, 1)
    assert snap.node_names == ["node1"]
    # they come back without history: one tick without usage
    snap = tick(145, True, True)
    assert [p.name for p in snap.pods()] == ["a"]
    assert snap.node("node2") is None
    snap = tick(160, True, True)
    assert [p.name for p in snap.pods()] == ["a", "b", "z"]
    assert snap.node("node2") == NodeUsage(3 * SEC, MiB, S + 160 * SEC, 15 * SEC)


def test_failed_scrape_hides_the_node_for_two_ticks(kernels: str) -> None:
    st = Store(R15)
    good, flaky = Node("good"), Node("flaky")

    def tick(t: int, flaky_ok: bool) -> Snapshot:
        batches = [
            good((S + t * SEC, t * CS, MiB), C("ns", "g", "c", S, S + t * SEC, t * CS, MiB)),
        ]
        if flaky_ok:
            batches.append(
                flaky(
                    (S + t * SEC, 2 * t * CS, MiB), C("ns", "f", "c", S, S + t * SEC, t * CS, MiB)
                )
            )
        return st.store(batches)

    tick(100, True)
    snap = tick(115, True)
    assert snap.node("flaky") is not None and snap.pod("ns", "f") is not None
    shown = []
    for t, ok in ((130, False), (145, True), (160, True), (175, True)):
        snap = tick(t, ok)
        assert snap.node("good") is not None and snap.pod("ns", "g") is not None
        shown.append((snap.node("flaky") is not None, snap.pod("ns", "f") is not None))
    assert shown == [(False, False), (False, False), (True, True), (True, True)]
    assert snap.node("flaky") == NodeUsage(2 * SEC, MiB, S + 175 * SEC, 15 * SEC)


def test_replaced_decoder_loses_container_history_not_node_history(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")

    def tick(t: int) -> Snapshot:
        return st.store(
            [
                node1(
                    (S + t * SEC, t * CS, MiB),
                    C("ns", "a", "c1", S, S + t * SEC, t * CS, MiB),
                    C("ns", "a", "c2", S, S + t * SEC, 2 * t * CS, MiB),
                    C("ns", "b", "c1", S, S + t * SEC, 3 * t * CS, MiB),
                )
            ]
        )

    tick(100)
    snap = tick(115)
    assert len(snap.pods()) == 2
    node1.replace_decoder()
    snap = tick(130)
    assert snap.node("node1") == NodeUsage(SEC, MiB, S + 130 * SEC, 15 * SEC)  # by name
    assert snap.pods() == []  # key ids of the new table mean nothing to the old rows
    assert snap.containers_with_baseline == 0
    assert snap.pod_index("ns", "a") >= 0  # the pods are known, just without usage
    snap = tick(145)
    assert [usage(p) for p in snap.pods()] == [
        (S + 145 * SEC, 15 * SEC, {"c1": (SEC, MiB), "c2": (2 * SEC, MiB)}),
        (S + 145 * SEC, 15 * SEC, {"c1": (3 * SEC, MiB)}),
    ]


def test_realignment_pods_come_and_go_while_others_keep_baselines(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    boot = S - 1000 * SEC

    def row(pod: str, ctr: str, t: int, k: int) -> C:
        return C("ns", pod, ctr, boot, S + t * SEC, k * t * CS, k * MiB)

    st.store(
        [
            node1(
                (S + 100 * SEC, 100 * CS, MiB),
                row("a", "x", 100, 1),
                row("b", "x", 100, 2),
                row("b", "y", 100, 3),
                row("c", "x", 100, 4),
            )
        ]
    )
    # b leaves, d arrives first in the payload, the survivors come in a different order
    snap = st.store(
        [
            node1(
                (S + 115 * SEC, 115 * CS, MiB),
                row("d", "x", 115, 5),
                row("c", "x", 115, 4),
                row("a", "x", 115, 1),
            )
        ]
    )
    assert {p.name: usage(p) for p in snap.pods()} == {
        "a": (S + 115 * SEC, 15 * SEC, {"x": (SEC, MiB)}),
        "c": (S + 115 * SEC, 15 * SEC, {"x": (4 * SEC, 4 * MiB)}),
    }
    assert snap.pod("ns", "b") is None and snap.pod("ns", "d") is None
    assert snap.containers_with_baseline == 2
    # b comes back (no history: it was absent last tick), d now has a baseline, a loses "x"
    # and gains "y" (a new container without baseline hides a)
    snap = st.store(
        [
            node1(
                (S + 130 * SEC, 130 * CS, MiB),
                row("b", "y", 130, 3),
                row("a", "y", 130, 6),
                row("d", "x", 130, 5),
                row("c", "x", 130, 4),
                row("b", "x", 130, 2),
            )
        ]
    )
    assert {p.name: usage(p) for p in snap.pods()} == {
        "c": (S + 130 * SEC, 15 * SEC, {"x": (4 * SEC, 4 * MiB)}),
        "d": (S + 130 * SEC, 15 * SEC, {"x": (5 * SEC, 5 * MiB)}),
    }
    # the same containers again, only reordered: everything has a baseline
    snap = st.store(
        [
            node1(
                (S + 145 * SEC, 145 * CS, MiB),
                row("c", "x", 145, 4),
                row("b", "x", 145, 2),
                row("a", "y", 145, 6),
                row("d", "x", 145, 5),
                row("b", "y", 145, 3),
            )
        ]
    )
    assert {p.name: usage(p) for p in snap.pods()} == {
        "a": (S + 145 * SEC, 15 * SEC, {"y": (6 * SEC, 6 * MiB)}),
        "b": (S + 145 * SEC, 15 * SEC, {"x": (2 * SEC, 2 * MiB), "y": (3 * SEC, 3 * MiB)}),
        "c": (S + 145 * SEC, 15 * SEC, {"x": (4 * SEC, 4 * MiB)}),
        "d": (S + 145 * SEC, 15 * SEC, {"x": (5 * SEC, 5 * MiB)}),
    }
    assert snap.containers_with_baseline == 5


def test_identical_keys_path_and_realigned_path_agree(kernels: str) -> None:
    # the same history stored with rows in the same order every tick (memcmp fast path) and
    # with the rows rotated every tick (realignment) serves the same usages
    names = [("ns", f"p{i}", f"c{j}") for i in range(6) for j in range(2)]
    results = []
    for rotate in (False, True):
        st = Store(R60)
        node1 = Node("node1")
        out = []
        for tick_no, t in enumerate((100, 115, 130, 145)):
            order = names[tick_no:] + names[:tick_no] if rotate else names
            rows = [
                C(ns, p, c, S, S + t * SEC, (1 + names.index((ns, p, c))) * t * CS, MiB)
                for ns, p, c in order
            ]
            snap = st.store([node1((S + t * SEC, t * CS, MiB), *rows)])
            out.append([usage(p) for p in snap.pods()])
        results.append(out)
    assert results[0] == results[1]
    assert len(results[0][-1]) == 6


def test_pod_moving_to_another_node(kernels: str) -> None:
    st = Store(R15)
    n1, n2 = Node("node1"), Node("node2")

    def tick(t: int, db_on: Node, db_start: int) -> Snapshot:
        db = C("default", "db-0", "postgres", db_start, S + t * SEC, (t - 90) * CS, 200 * MiB)
        web = C("default", "web", "nginx", S, S + t * SEC, t * CS, MiB)
        dns = C("kube-system", "dns", "coredns", S, S + t * SEC, 2 * t * CS, MiB)
        rows1, rows2 = [web], [dns]
        (rows1 if db_on is n1 else rows2).append(db)
        return st.store(
            [n1((S + t * SEC, t * CS, MiB), *rows1), n2((S + t * SEC, t * CS, MiB), *rows2)]
        )

    tick(100, n1, S)
    snap = tick(115, n1, S)
    assert snap.pod("default", "db-0") is not None
    old = snap
    # db-0 is recreated on node2; its container starts after the last sample on node1
    snap = tick(130, n2, S + 121 * SEC)
    assert snap.pod("default", "db-0") is None  # no baseline on the new node yet
    assert snap.pod_index("default", "db-0") >= 0
    assert snap.locator[("default", "db-0")] == "node2"
    assert usage(snap.pod("default", "web")) == (S + 130 * SEC, 15 * SEC, {"nginx": (SEC, MiB)})
    assert usage(snap.pod("kube-system", "dns")) == (
        S + 130 * SEC,
        15 * SEC,
        {"coredns": (2 * SEC, MiB)},
    )
    assert usage(old.pod("default", "db-0")) == (
        S + 115 * SEC,
        15 * SEC,
        {"postgres": (SEC, 200 * MiB)},
    )
    snap = tick(145, n2, S + 121 * SEC)
    assert usage(snap.pod("default", "db-0")) == (
        S + 145 * SEC,
        15 * SEC,
        {"postgres": (SEC, 200 * MiB)},
    )
    assert [p.name for p in snap.pods()] == ["db-0", "web", "dns"]


def test_pod_reported_by_two_nodes_in_one_tick_is_served_once(kernels: str) -> None:
    # e.g. a force-deleted pod still running on its old node while its successor runs on the
    # new one; metrics-server merges the nodes' batches into one map (one of them wins)
    st = Store(R60)
    n1, n2 = Node("node1"), Node("node2")
    for t in (100, 115):
        snap = st.store(
            [
                n1((S + t * SEC, t * CS, MiB), C("ns", "db-0", "c", S, S + t * SEC, t * CS, MiB)),
                n2(
                    (S + t * SEC, t * CS, MiB),
                    C("ns", "db-0", "c", S, S + t * SEC, 2 * t * CS, MiB),
                ),
            ]
        )
    pods = snap.pods()
    assert len(pods) == 1
    assert pods[0] == snap.pod("ns", "db-0")
    assert usage(pods[0]) in (
        (S + 115 * SEC, 15 * SEC, {"c": (SEC, MiB)}),
        (S + 115 * SEC, 15 * SEC, {"c": (2 * SEC, MiB)}),
    )


def test_many_nodes_in_one_tick(kernels: str) -> None:
    st = Store(R15)
    nodes = [Node(f"node-{i:03d}") for i in range(60)]
    boot = S - 86400 * SEC

    def rows(i: int, t: int) -> list[C]:
        out = []
        for p in range(i % 7 + 1):
            for c in range(p % 3 + 1):
                k = 1 + i * 100 + p * 10 + c  # a distinct cpu rate per container, in millicores
                out.append(
                    C(
                        f"ns{p % 4}",
                        f"pod-{i}-{p}",
                        f"c{c}",
                        boot,
                        S + t * SEC + i * MS,
                        k * t * 1_000_000,
                        (k + 1) * 4096,
                    )
                )
        return out

    def tick(t: int) -> Snapshot:
        return st.store(
            [
                n((S + t * SEC + i, 10 * i * t * CS + t, (i + 1) * MiB), *rows(i, t))
                for i, n in enumerate(nodes)
            ]
        )

    first = tick(100)
    assert first.pods() == [] and not first.ready()
    snap = tick(115)
    assert snap.ready()
    total_rows = sum(len(rows(i, 0)) for i in range(len(nodes)))
    assert snap.containers_with_baseline == total_rows
    assert snap.nodes_with_baseline == len(nodes)
    for i, n in enumerate(nodes):
        assert snap.node(n.name) == NodeUsage(
            rate(10 * i * 15 * CS + 15, 15 * SEC), (i + 1) * MiB, S + 115 * SEC + i, 15 * SEC
        )
    served = {(p.namespace, p.name): p for p in snap.pods()}
    assert len(served) == sum(i % 7 + 1 for i in range(len(nodes)))
    for i in range(len(nodes)):
        for r in rows(i, 115):
            p = served[(r.ns, r.pod)]
            assert (p.timestamp_ns, p.window_ns) == (S + 115 * SEC + i * MS, 15 * SEC)
            got = {c.name: (c.cpu_nanocores, c.memory_bytes) for c in p.containers}
            k = r.cpu // (115 * 1_000_000)
            assert got[r.container] == (rate(k * 15 * 1_000_000, 15 * SEC), r.mem)
    assert list(served) == sorted(served)


def test_a_node_twice_in_one_tick_is_rejected(kernels: str) -> None:
    st = Store(R60)
    node1 = Node("node1")
    with pytest.raises(ValueError, match="twice"):
        st.store([node1((S, CS, MiB)), node1((S, CS, MiB))])


def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Store(0)


# ------------------------------------------------------------------ snapshots are immutable


def _freeze(snap: Snapshot) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in Snapshot.__dataclass_fields__:
        value = getattr(snap, name)
        if isinstance(value, np.ndarray):
            out[name] = value.copy()
        elif isinstance(value, (list, dict)):
            out[name] = type(value)(value)
        else:
            out[name] = value
    out["pods()"] = snap.pods()
    out["nodes"] = {n: snap.node(n) for n in snap.node_names}
    return out


def _assert_same(snap: Snapshot, frozen: dict[str, object]) -> None:
    now = _freeze(snap)
    assert now.keys() == frozen.keys()
    for name, value in frozen.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(now[name], value), name
        else:
            assert now[name] == value, name


def test_store_publishes_a_new_snapshot_and_never_mutates_the_old_one(kernels: str) -> None:
    st = Store(R60)
    n1, n2 = Node("node1"), Node("node2")
    t0 = S + 100 * SEC
    st.store(
        [
            n1(
                (t0, 10 * CS, MiB),
                C("ns", "a", "c", S, t0, CS, MiB),
                C("ns", "b", "c", S, t0, CS, MiB),
            ),
            n2((t0, 10 * CS, MiB), C("ns", "z", "c", S, t0, CS, MiB)),
        ]
    )
    t1 = t0 + 15 * SEC
    old = st.store(
        [
            n1(
                (t1, 40 * CS, 2 * MiB),
                C("ns", "a", "c", S, t1, 4 * CS, MiB),
                C("ns", "b", "c", S, t1, 2 * CS, MiB),
            ),
            n2((t1, 25 * CS, MiB), C("ns", "z", "c", S, t1, 16 * CS, MiB)),
        ]
    )
    assert old is st.snapshot
    frozen = _freeze(old)
    served = {(p.namespace, p.name): p for p in old.pods()}
    assert set(served) == {("ns", "a"), ("ns", "b"), ("ns", "z")}
    # next tick: b leaves, z moves to node1 restarted, node2 disappears, a new pod appears,
    # node1's decoder keeps its table (ids grow)
    t2 = t1 + 15 * SEC
    new = st.store(
        [
            n1(
                (t2, 70 * CS, 3 * MiB),
                C("ns", "new", "c", S, t2, 9 * CS, MiB),
                C("ns", "a", "c", S, t2, 1 * CS, MiB),
                C("ns", "z", "c", t2 - SEC, t2, CS, MiB),
            ),
        ]
    )
    assert new is st.snapshot and new is not old
    _assert_same(old, frozen)
    for ident, pod in served.items():
        assert old.pod(*ident) == pod
    assert old.node("node2") is not None and new.node("node2") is None
    assert new.pod("ns", "b") is None
    # and one more tick with the decoder replaced and nothing left
    n1.replace_decoder()
    frozen_new = _freeze(new)
    st.store([n1((t2 + 15 * SEC, 80 * CS, MiB))])
    st.store([])
    _assert_same(old, frozen)
    _assert_same(new, frozen_new)
    for ident, pod in served.items():
        assert old.pod(*ident) == pod


# --------------------------------------------------- SPEC §5.3: the worked example, decoded

# SPEC §1.4: the first scrape, 15 s before Example A: (value, ts ms) per family and container;
# start times identical except proxy's; batch-job absent
FIRST_SCRAPE = {
    ("node_cpu_usage_seconds_total", None): ("48213.551234567", "1767225597931"),
    ("node_memory_working_set_bytes", None): ("1.718063104e+09", "1767225597931"),
    ("container_cpu_usage_seconds_total", "coredns"): ("182.003911482", "1767225599104"),
    ("container_memory_working_set_bytes", "coredns"): ("1.3631488e+07", "1767225599104"),
    ("container_cpu_usage_seconds_total", "log-shipper"): ("3.21557", "1767225598230"),
    ("container_memory_working_set_bytes", "log-shipper"): ("9.437184e+06", "1767225598230"),
    ("container_cpu_usage_seconds_total", "nginx"): ("40.913220001", "1767225598222"),
    ("container_memory_working_set_bytes", "nginx"): ("2.5165824e+07", "1767225598222"),
    ("container_cpu_usage_seconds_total", "postgres"): ("911.20455021", "1767225598498"),
    ("container_memory_working_set_bytes", "postgres"): ("2.68447744e+08", "1767225598498"),
    ("container_cpu_usage_seconds_total", "proxy"): ("12.00734", "1767225598501"),
    ("container_memory_working_set_bytes", "proxy"): ("2.097152e+07", "1767225598501"),
    ("container_start_time_seconds", "proxy"): ("1.76709999e+09", None),
}
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)(?: (\S+))?$")


def example_a_first_scrape(second: str) -> bytes:
    """Example A's first scrape: the second's text with the first scrape's samples (SPEC §1.4)."""
    out = []
    seen = set()
    for text in second.splitlines():
        m = SAMPLE.match(text)
        if m is None:
            out.append(text)
            continue
        if "batch-job" in text:
            continue
        family, labels = m.group(1), m.group(2) or ""
        ctr = re.search(r'container="([^"]*)"', labels)
        key = (family, ctr.group(1) if ctr else None)
        if key in FIRST_SCRAPE:
            value, ts = FIRST_SCRAPE[key]
            assert (m.group(4) is None) == (ts is None), text
            text = f"{family}{labels} {value}" + ("" if ts is None else f" {ts}")
            seen.add(key)
        out.append(text)
    assert seen == set(FIRST_SCRAPE)
    return ("\n".join(out) + "\n").encode()


def test_worked_example_spec_5_3(kernels: str) -> None:
    second = (DATA / "example_a.txt").read_text()
    first = example_a_first_scrape(second)
    decoder = Decoder()  # one decoder per node, reused: the same key table both ticks
    st = Store(R15)
    request_ts = S + 20 * SEC
    b1 = decoder.decode(first, request_ts - 15 * SEC)
    assert len(b1) == 5 and b1.node is not None
    snap = st.store([("kind-worker", b1)])
    assert snap.node("kind-worker") is None
    assert snap.pods() == []  # nothing is fresh in the first scrape
    b2 = decoder.decode(second.encode(), request_ts)
    assert b2.keys is b1.keys and len(b2) == 6
    snap = st.store([("kind-worker", b2)])

    node = snap.node("kind-worker")
    assert node == NodeUsage(1_221_459_987, 1_721_528_320, 1_767_225_612_944 * MS, 15_013 * MS)
    assert (
        format_timestamp(node.timestamp_ns),
        format_window(node.window_ns),
        format_cpu(node.cpu_nanocores),
        format_memory(node.memory_bytes),
    ) == ("2026-01-01T00:00:12Z", "15.013s", "1221459987n", "1681180Ki")

    pods = snap.pods()
    assert [(p.namespace, p.name) for p in pods] == [
        ("default", "batch-job-7kq4t"),
        ("default", "web-5d4f8c7b9-q8r2n"),
        ("kube-system", "coredns-7db6d8ff4d-x2k9p"),
    ]
    assert snap.pod("default", "db-0") is None  # proxy restarted 5 s before its sample
    assert snap.pod_index("default", "db-0") >= 0

    def formatted(p: PodUsage) -> tuple[str, str, dict[str, tuple[str, str]]]:
        assert p.timestamp_ns is not None
        return (
            format_timestamp(p.timestamp_ns),
            format_window(p.window_ns),
            {
                c.name: (format_cpu(c.cpu_nanocores), format_memory(c.memory_bytes))
                for c in p.containers
            },
        )

    batch_job, web, coredns = pods
    # batch-job: served after one scrape through the fresh-container rule (12.4 s old)
    assert usage(batch_job) == (
        1_767_225_613_800 * MS,
        12_400 * MS,
        {"worker": (932_419_677, 105_369_600)},
    )
    assert formatted(batch_job) == (
        "2026-01-01T00:00:13Z",
        "12.4s",
        {"worker": ("932419677n", "102900Ki")},
    )
    # web: nginx's earlier timestamp (00:00:13.199) and its 14.977 s window
    assert usage(web) == (
        1_767_225_613_199 * MS,
        14_977 * MS,
        {"nginx": (50_914_735, 25_427_968), "log-shipper": (3_004_005, 9_437_184)},
    )
    assert formatted(web) == (
        "2026-01-01T00:00:13Z",
        "14.977s",
        {"nginx": ("50914735n", "24832Ki"), "log-shipper": ("3004005n", "9Mi")},
    )
    assert usage(coredns) == (
        1_767_225_614_129 * MS,
        15_025 * MS,
        {"coredns": (3_815_336, 13_697_024)},
    )
    assert formatted(coredns) == (
        "2026-01-01T00:00:14Z",
        "15.025s",
        {"coredns": ("3815336n", "13376Ki")},
    )

    # the same strings from the column formatter over the snapshot's columns
    ok = snap.status == store_mod.STATUS_OK
    columns = [
        (snap.cpu_rate[ok], FORMAT_CPU, format_cpu),
        (snap.memory[ok], FORMAT_MEMORY, format_memory),
        (snap.window[ok], FORMAT_WINDOW, format_window),
        (snap.node_ts, FORMAT_TIMESTAMP, format_timestamp),
    ]
    strings = []
    for values, kind, scalar in columns:
        buf, off = format_column(np.ascontiguousarray(values), kind)
        got = [buf[off[i] : off[i + 1]].decode() for i in range(len(off) - 1)]
        assert got == [scalar(int(v)) for v in values]
        strings.append(set(got))
    assert {"932419677n", "50914735n", "3004005n", "3815336n"} <= strings[0]
    assert {"102900Ki", "24832Ki", "9Mi", "13376Ki"} <= strings[1]
    assert {"12.4s", "14.977s", "14.98s", "15.025s", "15.014s"} == strings[2]
    assert strings[3] == {"2026-01-01T00:00:12Z"}

    # storage points: the node, and coredns, log-shipper, nginx, postgres, worker (not proxy)
    assert (snap.nodes_with_baseline, snap.containers_with_baseline) == (1, 5)
    assert snap.ready()


def test_pods_bulk_equals_pod_one_by_one(kernels: str) -> None:
    """``Snapshot.pods_bulk`` (the column path of long lists) answers as ``pod`` does: pods
    with usage, pods whose containers were dropped, pods without a baseline, unknown pods."""
    st = Store(R15)
    nodes = [Node("a"), Node("b")]
    s = 1_000_000_000
    t0 = 10_000 * s

    def tick(k: int) -> Snapshot:
        out = []
        for n, node in enumerate(nodes):
            rows = []
            for p in range(40):
                for c in ("app", "side"):
                    cpu = (p + 1) * 10**9 * (k + 1)
                    if k and p % 7 == 0 and c == "side":
                        cpu = 1  # cumulative CPU decreased: the container is dropped
                    rows.append(C(f"ns{p % 3}", f"pod-{n}-{p}", c, t0 - 3_600 * s,
                                  t0 + k * 15 * s + p, cpu, (p + 1) << 20))
            if k:
                rows.append(C("ns0", f"new-{n}", "app", t0 - 3_600 * s, t0 + k * 15 * s, 5, 6))
            out.append(node((t0 + k * 15 * s, 10**12 * (k + 1), 1 << 30), *rows))
        return st.store(out)

    tick(0)
    snap = tick(1)
    idents = [(f"ns{p % 3}", f"pod-{n}-{p}") for n in range(2) for p in range(40)]
    idents += [("ns0", "new-0"), ("ns0", "new-1"), ("ns0", "nope"), ("elsewhere", "pod-0-1")]
    idents.reverse()
    one_by_one = [snap.pod(ns, name) for ns, name in idents]
    assert len(idents) >= 64  # the column path
    assert snap.pods_bulk(idents) == one_by_one
    assert snap.pods_bulk(idents[:5]) == one_by_one[:5]
    assert snap.pods_bulk([]) == []
    assert snap.pods_bulk([("ns0", "nope"), ("ns0", "nope")]) == [None, None]
    assert snap.pods_bulk(idents[-3:] * 2) == one_by_one[-3:] * 2  # repeats answered each time
    assert one_by_one.count(None) == 4
    assert any(p is not None and len(p.containers) == 1 for p in one_by_one)
