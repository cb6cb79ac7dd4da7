"""The columnar pod lists equal the object-by-object ones on random clusters (SPEC §5.2, §5.4).

A cluster is drawn as two ticks of a few nodes: pods with names, namespaces and container
names needing JSON escaping (quotes, backslashes, ``<>&``, control characters, U+2028/U+2029),
non-ASCII; pods new in the second tick (no baseline: no usage), pods whose every container
reports a lower cumulative CPU (served with no containers and a null timestamp), pods reported
by two nodes, huge and zero usages. The informer's Running pods are drawn around it: some of
the snapshot's pods, pods it does not have, labels (``Labels`` or plain dicts) empty or not,
shared or not, in any order. Then, for JSON and protobuf, the compiled kernels and the twin
must write exactly the bytes of ``objects.pod_metrics_list`` / ``protobuf.pod_metrics_list``
over ``Snapshot.pod`` of the visible pods sorted by namespace and name; and the selectors'
fast path must select what the selectors select.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmetrics._batch import DecodedBatch, KeyTable, NodePoint
from fastmetrics.api import _render_py, objects, protobuf, render
from fastmetrics.api.handlers import _select_pods
from fastmetrics.cluster import Labels
from fastmetrics.selectors import parse_field_selector, parse_label_selector
from fastmetrics.store import Snapshot, Store

S = 1_000_000_000
T0 = 1_767_225_600 * S
NOW = T0 + 40 * S + 987_654_321

CHARS = [*"abz-.09", '"', "\\", "<", ">", "&", "\n", "\x00", "\x1f", "\x7f", "\u2028", "\u2029",
         "é", "😀", "\u00b5", "/"]
text = st.text(alphabet=st.sampled_from(CHARS), max_size=5)
name = st.text(alphabet=st.sampled_from(CHARS), min_size=1, max_size=5)
NODES = ("n1", "n2", "n3")

PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Snapshot, list[Any]]:
    namespaces = draw(st.lists(name, min_size=1, max_size=4, unique=True))
    idents = draw(st.lists(st.tuples(st.sampled_from(namespaces), name), max_size=25,
                           unique=True))
    rows: dict[str, list[list[tuple[str, str, str, int, int, int, int]]]] = {
        n: [[], []] for n in NODES}  # per node, per tick: ns, pod, ctr, start, ts, cpu, mem
    for ns, pod in idents:
        containers = draw(st.lists(name, min_size=1, max_size=3, unique=True))
        nodes = [draw(st.sampled_from(NODES))]
        if draw(st.integers(0, 6)) == 0:
            nodes.append(draw(st.sampled_from(NODES)))  # also reported by another node
        kind = draw(st.sampled_from(["ok"] * 5 + ["new", "cpu_down", "one_down"]))
        for node in dict.fromkeys(nodes):
            for i, ctr in enumerate(containers):
                start = T0 - draw(st.integers(60, 10**5)) * S
                ts1 = T0 + 15 * S + draw(st.integers(-10**9, 10**9))
                ts2 = ts1 + draw(st.sampled_from([15 * S, 14_977_000_000, 60 * S, 1, 999]))
                cpu1 = draw(st.integers(0, 2**62))
                delta = draw(st.sampled_from([0, 1, 10**9, 10**12, 2**62]))
                cpu2 = cpu1 + delta
                if kind == "cpu_down" or (kind == "one_down" and i == 0):
                    cpu2 = max(cpu1 - 1, 0) if cpu1 else 0
                    cpu1 = max(cpu1, 1)
                mem = draw(st.sampled_from([0, 1, 1023, 1024, 5 << 20, 2**63 + 7]))
                if kind != "new":
                    rows[node][0].append((ns, pod, ctr, start, ts1, cpu1, mem))
                rows[node][1].append((ns, pod, ctr, start, ts2, cpu2, mem))
    keys = {n: KeyTable() for n in NODES}
    store = Store(15 * S)
    for tick in (0, 1):
        batches = []
        for node in NODES:
            r = rows[node][tick]
            ids = [keys[node].intern(ns, pod, ctr) for ns, pod, ctr, *_ in r]
            batches.append((node, DecodedBatch(
                NodePoint(T0 + tick * 15 * S, 10**12, 1 << 30),
                np.array([a for a, _ in ids], np.int32), np.array([b for _, b in ids], np.int32),
                np.array([x[4] for x in r], np.int64), np.array([x[3] for x in r], np.int64),
                np.array([x[5] for x in r], np.uint64), np.array([x[6] for x in r], np.uint64),
                keys[node])))
        snap = store.store(batches)
    # the informer's Running pods: some of the snapshot's, and others
    label_sets = draw(st.lists(st.dictionaries(text, text, max_size=3), min_size=1, max_size=4))
    shared = [Labels(d) if draw(st.booleans()) else d for d in label_sets]
    extra = draw(st.lists(st.tuples(st.sampled_from([*namespaces, "other"]), name), max_size=5))
    visible = [i for i in idents if draw(st.integers(0, 4))] + extra
    pods: dict[tuple[str, str], Any] = {}
    for ns, pod in visible:
        labels = (draw(st.sampled_from(shared)) if draw(st.booleans())
                  else draw(st.dictionaries(text, text, max_size=3)))
        pods[(ns, pod)] = SimpleNamespace(namespace=ns, name=pod, labels=labels)
    return snap, draw(st.permutations(list(pods.values())))


def reference(snap: Snapshot, pods: list[Any], kind: str) -> tuple[bytes, list[int]]:
    items = []
    for p in pods:
        u = snap.pod(p.namespace, p.name)
        if u is not None:
            items.append((p.namespace, p.name, p.labels, u))
    items.sort(key=lambda i: (i[0], i[1]))
    ts = [u.timestamp_ns for *_, u in items if u.timestamp_ns is not None]
    if kind == "json":
        return objects.pod_metrics_list(items, NOW), ts
    return protobuf.pod_metrics_list(items, NOW), ts


@pytest.fixture(scope="module")
def both() -> list[Any]:
    """The twin and the compiled kernels (skipped on a pure-Python install, unless CI)."""
    if render.KERNELS_C is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fastmetrics._render is not built, but CI=true requires it")
        pytest.skip("fastmetrics._render is not built (pure-Python install)")
    return [_render_py, render.KERNELS_C]


@PROPS
@given(clusters())
def test_columnar_lists_equal_object_lists(both: list[Any], cluster: tuple[Snapshot, list[Any]]
                                           ) -> None:
    snap, pods = cluster
    for kind in ("json", "protobuf"):
        expected, ts = reference(snap, pods, kind)
        for kernels in both:
            table = render.build_pod_table(snap, kernels)
            body, timestamps = render.pod_list(table, pods, NOW, kind, kernels)
            assert body == expected, (kernels.__name__, kind)
            assert sorted(timestamps.tolist()) == sorted(ts)


@PROPS
@given(clusters())
def test_served_pods_are_what_pod_answers(cluster: tuple[Snapshot, list[Any]]) -> None:
    snap, _ = cluster
    served = snap.served_pods()
    got = [snap.node_keys[int(snap.pod_node[p])].pod_tuple[int(snap.pod_local[p])]
           for p in served.tolist()]
    assert len(got) == len(set(got))
    every = {keys.pod_tuple[local] for keys in snap.node_keys
             for local in range(keys.pod_count)}
    assert set(got) == {i for i in every if snap.pod(*i) is not None}


LABEL_SELECTORS = ["", "app", "!app", "app=x", "app!=x", "app in (x,y)", "app notin (x)",
                   "app,tier=web", "a=b,!c"]
FIELD_SELECTORS = ["", "metadata.name=p", "metadata.name!=p", "metadata.namespace=ns",
                   "metadata.namespace!=ns,metadata.name!=q"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["ns", "other"]), st.sampled_from(["p", "q", "r"]),
                       st.dictionaries(st.sampled_from(["app", "tier", "a", "c"]),
                                       st.sampled_from(["x", "y", "web", "b"]), max_size=3)),
             max_size=12),
    st.sampled_from(LABEL_SELECTORS), st.sampled_from(FIELD_SELECTORS), st.booleans(),
)
def test_select_pods_is_the_selectors(pods: list[tuple[str, str, dict[str, str]]], ls: str,
                                      fs: str, share: bool) -> None:
    shared: dict[str, Any] = {}
    objs = []
    for ns, n, labels in pods:
        lab: Any = Labels(labels)
        if share:  # equal label sets as one object, as the informer keeps them
            lab = shared.setdefault(repr(sorted(labels.items())), lab)
        objs.append(SimpleNamespace(namespace=ns, name=n, labels=lab))
    label, fields = parse_label_selector(ls), parse_field_selector(fs)
    expected = [p for p in objs if label.matches(p.labels) and fields.matches(
        {"metadata.name": p.name, "metadata.namespace": p.namespace})]
    assert list(_select_pods(objs, label, fields)) == expected
