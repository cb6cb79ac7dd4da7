"""The list renderers' kernels (``_render`` and its twin ``api._render_py``), one by one.

Every test runs on both implementations (``kernels`` fixture); the bodies they write are held
equal to the object-by-object renderers (``objects``, ``protobuf``) here on hand-made cases and
in test_render_props.py on random clusters.
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fastmetrics import FastMetricsError
from fastmetrics._batch import DecodedBatch, KeyTable, NodePoint
from fastmetrics.api import _render_py, objects, protobuf, render
from fastmetrics.cluster import EMPTY_LABELS, Labels, label_pb_entries
from fastmetrics.store import ContainerUsage, PodUsage, Store

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
NOW = T0 + 20 * S + 123_456_789


def compiled_kernels() -> Any:
    """``fastmetrics._render``; skips on a pure-Python install, but fails when ``CI=true``."""
    if render.KERNELS_C is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fastmetrics._render is not built, but CI=true requires it")
        pytest.skip("fastmetrics._render is not built (pure-Python install)")
    return render.KERNELS_C


@pytest.fixture(params=["py", "c"])
def kernels(request: pytest.FixtureRequest) -> Any:
    return _render_py if request.param == "py" else compiled_kernels()


def i32(*v: int) -> np.ndarray:
    return np.array(v, np.int32)


# ---------------------------------------------------------------------------- small kernels


def test_pack(kernels: Any) -> None:
    buf, off = kernels.pack(["a", "", "é😀", "<&>"])
    assert buf == "aé😀<&>".encode()
    assert off.dtype == np.int64 and off.tolist() == [0, 1, 1, 7, 10]
    buf, off = kernels.pack([])
    assert buf == b"" and off.tolist() == [0]
    with pytest.raises(UnicodeEncodeError):
        kernels.pack(["ok", "\ud800"])
    with pytest.raises(FastMetricsError, match="item 1 is int"):
        kernels.pack(["a", 3])


def test_gather_and_intern(kernels: Any) -> None:
    a, b = ["x", "y", "z"], ["y", "w"]
    assert kernels.gather([a, b], i32(0, 1, 1, 0), i32(2, 0, 1, 1)) == ["z", "y", "w", "y"]
    ids, values = kernels.intern([a, b], i32(0, 1, 1, 0, 0), i32(2, 0, 1, 1, 2))
    assert values == ["z", "y", "w"] and ids.dtype == np.int32
    assert ids.tolist() == [0, 1, 2, 1, 0]
    # equal strings that are different objects get one id
    c = ["".join(["z"])]
    ids, values = kernels.intern([a, c], i32(0, 1), i32(2, 0))
    assert ids.tolist() == [0, 0] and values == ["z"]
    for fn in (kernels.gather, kernels.intern):
        with pytest.raises(FastMetricsError, match="out of range"):
            fn([a], i32(0), i32(3))
        with pytest.raises(FastMetricsError, match="out of range"):
            fn([a], i32(1), i32(0))
        with pytest.raises(FastMetricsError, match="not list"):
            fn([("x",)], i32(0), i32(0))
        with pytest.raises(FastMetricsError, match="differ in length"):
            fn([a], i32(0, 0), i32(0))


def test_intern_many_objects(kernels: Any) -> None:
    """More distinct objects than the compiled kernel's address cache holds."""
    lists = [[f"c{i % 300}" for i in range(600)] for _ in range(3)]
    outer = np.repeat(np.arange(3, dtype=np.int32), 600)
    inner = np.tile(np.arange(600, dtype=np.int32), 3)
    ids, values = kernels.intern(lists, outer, inner)
    assert values == [f"c{i}" for i in range(300)]
    assert ids.tolist() == [i % 300 for i in range(600)] * 3


def test_sort_pods_byte_order(kernels: Any) -> None:
    names = ["b", "a", "ab", "", "é", "z", "\u2028", "😀", "a"]
    ranks = i32(1, 1, 1, 1, 1, 0, 1, 1, 2)
    buf, off = kernels.pack(names)
    order = kernels.sort_pods(ranks, buf, off).tolist()
    expected = sorted(range(len(names)), key=lambda i: (int(ranks[i]), names[i].encode()))
    assert order == expected
    # Python's str order (code points) is the UTF-8 byte order
    assert [names[i] for i in order] == [*sorted(names[:8], key=lambda s: (s != "z", s)), "a"]
    with pytest.raises(FastMetricsError, match="offsets"):
        kernels.sort_pods(ranks, buf, off[:-1])


def test_sort_pods_large(kernels: Any) -> None:
    rng = np.random.default_rng(3)
    n = 5000 if kernels is _render_py else 100_000
    names = [f"pod-{v}" for v in rng.integers(0, n // 2, n).tolist()]  # with ties
    ranks = rng.integers(0, 7, n).astype(np.int32)
    buf, off = kernels.pack(names)
    order = kernels.sort_pods(ranks, buf, off).tolist()
    assert order == sorted(range(n), key=lambda i: (int(ranks[i]), names[i]))  # stable


def test_take_packed(kernels: Any) -> None:
    buf, off = kernels.pack(["aa", "b", "", "cccc"])
    out, out_off = kernels.take_packed(buf, off, i32(3, 0, 2, 0))
    assert out == b"ccccaaaa" and out_off.tolist() == [0, 4, 6, 6, 8]
    with pytest.raises(FastMetricsError, match="out of range"):
        kernels.take_packed(buf, off, i32(4))


def test_name_index(kernels: Any) -> None:
    names = ["a", "b", "a", "é", ""]
    ns = i32(0, 0, 1, 1, 1)
    buf, off = kernels.pack(names)
    index = kernels.NameIndex(ns, buf, off)
    assert len(index) == 5
    for j, (n, name) in enumerate(zip(ns.tolist(), names, strict=True)):
        assert index.position(n, name) == j
    assert index.position(0, "é") == -1
    assert index.position(2, "a") == -1
    assert index.position(0, "\ud800") == -1
    buf, off = kernels.pack(["a", "a"])
    with pytest.raises(FastMetricsError, match="appears twice"):
        kernels.NameIndex(i32(0, 0), buf, off)


def test_join(kernels: Any) -> None:
    buf, off = kernels.pack(["p1", "p2", "p1"])
    index = kernels.NameIndex(i32(0, 0, 1), buf, off)
    shared = Labels({"app": "x"})
    pods = [
        SimpleNamespace(namespace="b", name="p1", labels=shared),
        SimpleNamespace(namespace="a", name="p1", labels=shared),
        SimpleNamespace(namespace="a", name="gone", labels={}),
        SimpleNamespace(namespace="c", name="p1", labels={}),
        SimpleNamespace(namespace="b", name="\ud800", labels={}),
    ]
    calls: list[object] = []

    def blob_of(labels: Any) -> bytes:
        calls.append(labels)
        return label_pb_entries(labels)

    blobs, mask = kernels.join(pods, {"a": 0, "b": 1}, index, 3, blob_of)
    assert blobs == [shared.pb_entries(), None, shared.pb_entries()]
    assert mask.dtype == np.uint8 and mask.tolist() == [1, 0, 1]
    assert calls == [shared]  # once per labels object
    with pytest.raises(FastMetricsError, match="not bytes"):
        kernels.join(pods, {"a": 0, "b": 1}, index, 3, lambda labels: "text")
    with pytest.raises(FastMetricsError, match="not a str"):
        kernels.join([SimpleNamespace(namespace="a", name=1, labels={})], {"a": 0}, index, 3,
                     blob_of)
    with pytest.raises(FastMetricsError, match="index has 3 pods"):
        kernels.join([], {}, index, 4, blob_of)


# ---------------------------------------------------------------------------- label entries


def test_label_pb_entries_match_protobuf_object_meta() -> None:
    labels = {"b": "2", "a": "é", "": "", "k" * 200: "v" * 300}
    meta = protobuf._object_meta("n", "ns", labels, b"")
    assert meta.endswith(label_pb_entries(labels))
    frozen = Labels(labels)
    assert frozen.pb_entries() == label_pb_entries(labels)
    assert frozen.pb_entries() is frozen.pb_entries()  # kept with the set
    assert EMPTY_LABELS.pb_entries() == b"" == label_pb_entries({})
    with pytest.raises(TypeError):
        frozen["c"] = "3"


# ---------------------------------------------------------------------------- whole bodies


def _snapshot(pods: list[tuple[str, str, list[tuple[str, int, int]]]]) -> Any:
    """A snapshot from two ticks of one node: (namespace, name, [(container, cpu s, mem)])."""
    keys = KeyTable()
    rows = [(ns, name, c, cpu, mem) for ns, name, cs in pods for c, cpu, mem in cs]
    ids = [keys.intern(ns, name, c) for ns, name, c, _, _ in rows]

    def batch(k: int) -> DecodedBatch:
        n = len(rows)
        return DecodedBatch(
            NodePoint(T0 + k * 15 * S, 10**12 + k * 10**10, 1 << 30),
            np.array([a for a, _ in ids], np.int32), np.array([b for _, b in ids], np.int32),
            np.full(n, T0 + k * 15 * S + 7, np.int64), np.full(n, T0 - 3600 * S, np.int64),
            np.array([cpu * k for *_, cpu, _ in rows], np.uint64),
            np.array([mem for *_, mem in rows], np.uint64), keys)

    store = Store(15 * S)
    store.store([("node-1", batch(1))])
    return store.store([("node-1", batch(2))])


WEIRD = ['"q"', "back\\slash", "<a&b>", "nl\n\t\b\f\r", "\x00\x01\x1f\x7f", "\u2028\u2029",
         "é😀", "\xe2", ""]


def _reference(snap: Any, pods: list[Any], kind: str) -> bytes:
    items = []
    for p in pods:
        u = snap.pod(p.namespace, p.name)
        if u is not None:
            items.append((p.namespace, p.name, p.labels, u))
    items.sort(key=lambda i: (i[0], i[1]))
    if kind == "json":
        return objects.pod_metrics_list(items, NOW)
    return protobuf.pod_metrics_list(items, NOW)


@pytest.mark.parametrize("kind", ["json", "protobuf"])
def test_bodies_equal_object_path_with_escaping(kernels: Any, kind: str) -> None:
    names = [w or "x" for w in WEIRD]
    snap = _snapshot(
        [(f"ns{i % 3}{w}", f"pod{w}", [(f"c{w}", 10**6 * (i + 1), (i + 1) << 20)])
         for i, w in enumerate(names)]
        + [("ns", "big", [("a", 2**62, 2**60), ("b", 0, 0), ("c", 1, 1023)])]
    )
    pods = [SimpleNamespace(namespace=f"ns{i % 3}{w}", name=f"pod{w}",
                            labels=Labels({w: w, "k": w}) if i % 2 else {w: w})
            for i, w in enumerate(names)]
    pods.append(SimpleNamespace(namespace="ns", name="big", labels=EMPTY_LABELS))
    pods.append(SimpleNamespace(namespace="ns", name="not-scraped", labels={}))
    table = render.build_pod_table(snap, kernels)
    assert table.n == len(names) + 1
    body, timestamps = render.pod_list(table, pods, NOW, kind, kernels)
    assert body == _reference(snap, pods, kind)
    assert timestamps.tolist() == [T0 + 30 * S + 7] * (len(names) + 1)
    # half the pods, in another order
    half = pods[::2][::-1]
    assert render.pod_list(table, half, NOW, kind, kernels)[0] == _reference(snap, half, kind)
    assert render.pod_list(table, [], NOW, kind, kernels)[0] == _reference(snap, [], kind)


def test_empty_snapshot(kernels: Any) -> None:
    snap = _snapshot([])
    table = render.build_pod_table(snap, kernels)
    assert table.n == 0
    pod = SimpleNamespace(namespace="a", name="b", labels={})
    for kind in ("json", "protobuf"):
        body, ts = render.pod_list(table, [pod], NOW, kind, kernels)
        assert body == _reference(snap, [], kind) and ts.shape == (0,)


def test_null_timestamp_when_every_container_was_dropped(kernels: Any) -> None:
    """A pod whose containers were all dropped (cumulative CPU went down) is served with no
    containers and a null timestamp."""
    keys = KeyTable()
    ids = [keys.intern("ns", "p", "c"), keys.intern("ns", "q", "c")]

    def batch(k: int, cpu: list[int]) -> DecodedBatch:
        return DecodedBatch(
            NodePoint(T0 + k * 15 * S, 10**12 + k, 1), i32(*[a for a, _ in ids]),
            i32(*[b for _, b in ids]), np.full(2, T0 + k * 15 * S, np.int64),
            np.full(2, T0 - 3600 * S, np.int64), np.array(cpu, np.uint64),
            np.full(2, 4096, np.uint64), keys)

    store = Store(15 * S)
    store.store([("n", batch(1, [10**12, 10**12]))])
    snap = store.store([("n", batch(2, [10**9, 2 * 10**12]))])
    assert snap.pod("ns", "p") == PodUsage("ns", "p", None, 0, [])
    assert snap.pod("ns", "q") is not None
    pods = [SimpleNamespace(namespace="ns", name=n, labels={}) for n in ("q", "p")]
    table = render.build_pod_table(snap, kernels)
    for kind in ("json", "protobuf"):
        body, ts = render.pod_list(table, pods, NOW, kind, kernels)
        assert body == _reference(snap, pods, kind)
        assert ts.tolist() == [T0 + 30 * S]  # only q has a timestamp
    assert b'"timestamp":null' in render.pod_list(table, pods, NOW, "json", kernels)[0]


def _table_with(table: Any, **changes: Any) -> Any:
    return render.PodTable(**{f: changes.get(f, getattr(table, f))
                              for f in render.PodTable.__dataclass_fields__})


def test_inconsistent_tables_are_refused(kernels: Any) -> None:
    snap = _snapshot([("ns", "p", [("c", 1, 1)]), ("ns", "q", [("c", 2, 2)])])
    table = render.build_pod_table(snap, kernels)
    blobs: list[bytes | None] = [b"", b""]
    for fn in (kernels.pod_list_json, kernels.pod_list_protobuf):
        assert fn(table, blobs, b'"t"')
        with pytest.raises(FastMetricsError, match="column lengths"):
            fn(_table_with(table, window_ns=table.window_ns[:1]), blobs, b'"t"')
        with pytest.raises(FastMetricsError, match="name offsets"):
            fn(_table_with(table, name_off=table.name_off[::-1].copy()), blobs, b'"t"')
        with pytest.raises(FastMetricsError, match="cpu offsets"):
            bad = table.cpu_off.copy()
            bad[-1] = len(table.cpu_buf) + 1
            fn(_table_with(table, cpu_off=bad), blobs, b'"t"')
        with pytest.raises(FastMetricsError, match="namespace id out of range at pod 1"):
            fn(_table_with(table, ns_id=i32(0, 5)), blobs, b'"t"')
        with pytest.raises(FastMetricsError, match="container name id out of range"):
            fn(_table_with(table, cname_id=i32(0, -1)), blobs, b'"t"')
        with pytest.raises(FastMetricsError, match="2 pods"):
            fn(table, [b""], b'"t"')
        with pytest.raises(FastMetricsError, match="bytes or None expected"):
            fn(table, [b"", "x"], b'"t"')
        with pytest.raises(FastMetricsError, match="label entries of pod 1 are malformed"):
            fn(table, [b"", b"\x5a\x05\x0a\x01k"], b'"t"')
        with pytest.raises(FastMetricsError, match="label entries of pod 0 are malformed"):
            fn(table, [b"\x5a\x02\x0a\x00", None], b'"t"')


def test_table_memoized_once_across_threads() -> None:
    snap = _snapshot([("ns", f"p{i}", [("c", i, i)]) for i in range(50)])
    built: list[int] = []
    real = render.build_pod_table

    def counting(s: Any, impl: Any = None) -> Any:
        built.append(1)
        return real(s, impl)

    barrier = threading.Barrier(4)
    out: list[Any] = []

    def worker() -> None:
        barrier.wait(5)
        out.append(snap.memo(render.MEMO_KEY, lambda: counting(snap)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(out) == 4 and all(t is out[0] for t in out)
    assert built == [1]
    assert render.pod_table(snap) is out[0]


def test_served_pods_are_the_pods_with_usage() -> None:
    """A pod reported by two nodes is served once: from the node the locator names."""
    def batch(keys: KeyTable, k: int, pods: list[str]) -> DecodedBatch:
        ids = [keys.intern("ns", p, "c") for p in pods]
        n = len(pods)
        return DecodedBatch(
            NodePoint(T0 + k * 15 * S, 10**12 + k, 1), i32(*[a for a, _ in ids]),
            i32(*[b for _, b in ids]), np.full(n, T0 + k * 15 * S, np.int64),
            np.full(n, T0 - 3600 * S, np.int64), np.full(n, 10**9 * k, np.uint64),
            np.full(n, 4096, np.uint64), keys)

    ka, kb = KeyTable(), KeyTable()
    store = Store(15 * S)
    store.store([("a", batch(ka, 1, ["x", "y"])), ("b", batch(kb, 1, ["y", "z"]))])
    snap = store.store([("a", batch(ka, 2, ["x", "y"])), ("b", batch(kb, 2, ["y", "z"]))])
    served = snap.served_pods()
    assert served.dtype == np.int32 and served.tolist() == sorted(served.tolist())
    idents = {snap.node_keys[int(snap.pod_node[p])].pod_tuple[int(snap.pod_local[p])]
              for p in served.tolist()}
    assert idents == {("ns", "x"), ("ns", "y"), ("ns", "z")} and len(served) == 3
    assert {u.name for u in snap.pods()} == {"x", "y", "z"}
    assert snap.served_pods() is served  # memoized
    usage = snap.pod("ns", "y")
    assert usage is not None and usage.containers == [ContainerUsage("c", 66666666, 4096)]


def test_offsets_are_checked(kernels: Any) -> None:
    for bad in (np.zeros(0, np.int64), np.array([1, 2], np.int64), np.array([0, 3, 2], np.int64),
                np.array([0, 5], np.int64)):
        with pytest.raises(FastMetricsError, match="not within their buffer"):
            kernels._check_offsets(bad, 4, "test")
    kernels._check_offsets(np.array([0, 0, 4], np.int64), 4, "test")


def test_a_replaced_snapshot_derives_its_own() -> None:
    import dataclasses

    snap = _snapshot([("ns", "p", [("c", 1, 1)])])
    table = render.pod_table(snap)
    assert render.pod_table(snap) is table
    copy = dataclasses.replace(snap)
    assert render.pod_table(copy) is not table
