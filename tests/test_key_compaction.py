"""The compact key table and its compaction under pod churn (issue 8).

A node that replaces pods forever must not grow its decoder's key table forever: when the ids of
pods gone from the node outnumber the live ones, the decoder switches to a compacted copy and
the next batch carries the remap, which the store applies, so that no pod loses its baseline.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fastmetrics._batch import KeyTable
from fastmetrics._grammar import key_compaction_threshold
from fastmetrics.decode import DecodedBatch, DecoderPy
from fastmetrics.store import Store

NS = 1_000_000_000
T0_S = 1_767_225_600
RATE = 0.25  # cores per container


def test_key_table_interns_through_the_pod() -> None:
    t = KeyTable()
    assert t.intern("ns", "a", "app") == (0, 0)
    assert t.intern("ns", "a", "side") == (1, 0)
    assert t.intern("ns", "b", "app") == (2, 1)
    assert t.intern("ns", "a", "side") == (1, 0)  # same identity, same id
    assert t.intern("other", "a", "app") == (3, 2)  # the namespace is part of the pod
    assert len(t) == 4 and t.pod_count == 3
    assert t.find("ns", "b", "app") == 2 and t.find("ns", "b", "side") == -1
    assert t.find("nope", "b", "app") == -1
    assert t.key(3) == ("other", "a", "app") and t.pod_key(1) == ("ns", "b")
    assert t.namespace == ["ns", "ns", "ns", "other"]
    assert t.pod == ["a", "a", "b", "a"]
    assert t.pod_of_key == [0, 0, 1, 2]
    assert t.find_pod(("ns", "b")) == 1 and t.find_pod(("ns", "c")) == -1
    assert t.pod_tuple[1] is t.pod_tuple[t.find_pod(("ns", "b"))]
    # container names and namespaces are shared between pods, not copied per key
    app = "".join(["ap", "p"])  # a distinct str object with the same value
    t.intern("ns", "c", app)
    assert t.container[-1] is t.container[0]
    assert t.pod_namespace[3] is t.pod_namespace[0]


def test_key_table_compacted_keeps_live_keys_in_order() -> None:
    t = KeyTable()
    for pod in ("a", "b", "c"):
        for c in ("app", "side"):
            t.intern("ns", pod, c)
    new, key_map = t.compacted([5, 1, 4, 1])
    assert key_map.dtype == np.int32
    assert key_map.tolist() == [-1, 0, -1, -1, 1, 2]
    assert [new.key(k) for k in range(len(new))] == [
        ("ns", "a", "side"), ("ns", "c", "app"), ("ns", "c", "side")]
    assert new.pod_tuple == [("ns", "a"), ("ns", "c")]
    assert len(t) == 6  # the original is untouched: a published snapshot may read it
    assert new.intern("ns", "c", "side") == (2, 1)
    assert new.intern("ns", "b", "app") == (3, 2)


def test_key_table_memory_per_container() -> None:
    """The table keeps no Python object per container: a 110-pod node's table (pods with
    2 containers, realistic names) costs well under the ~175 KB the tuple/dict table did."""
    t = KeyTable()
    for p in range(110):
        pod = f"checkout-7f9c{p:06d}-x{p % 97:04d}z"
        for c in ("checkout", "istio-proxy"):
            t.intern("payments", pod, c)
    size = sys.getsizeof(t.container) + sys.getsizeof(t.pod_of_key)
    size += sys.getsizeof(t.pod_name) + sys.getsizeof(t.pod_namespace)
    size += sys.getsizeof(t.pod_tuple) + sys.getsizeof(t._pod_index)
    size += sum(sys.getsizeof(s) + sys.getsizeof(tp) for s, tp in zip(t.pod_name, t.pod_tuple,
                                                                     strict=True))
    size += t._pod_first_key.itemsize * len(t._pod_first_key)
    size += t._key_next.itemsize * len(t._key_next)
    assert size < 40_000, size


def body(pods: list[tuple[str, int]], t_s: int) -> bytes:
    """A kubelet payload: each pod (name, start second) with two containers."""
    lines = [f"node_cpu_usage_seconds_total {t_s * 2.5} {t_s * 1000}",
             f"node_memory_working_set_bytes 2e+09 {t_s * 1000}"]
    for name, start in pods:
        for c in ("app", "sidecar"):
            lbl = f'{{container="{c}",namespace="ns",pod="{name}"}}'
            lines.append(f"container_cpu_usage_seconds_total{lbl} {(t_s - start) * RATE} "
                         f"{t_s * 1000}")
            lines.append(f"container_memory_working_set_bytes{lbl} 1.048576e+06 {t_s * 1000}")
            lines.append(f"container_start_time_seconds{lbl} {start} {t_s * 1000}")
    return ("\n".join(lines) + "\n").encode()


def test_churning_node_compacts_and_the_store_keeps_every_baseline(
        decoder_cls: type[DecoderPy]) -> None:
    decoder = decoder_cls()
    store = Store(15 * NS)
    stable = [("stable-0", T0_S - 7200), ("stable-1", T0_S - 7200)]
    churning = [(f"churn-{i}", T0_S - 3600) for i in range(8)]
    serial = 8
    remaps = 0
    prev: DecodedBatch | None = None
    for tick in range(60):
        t_s = T0_S + 15 * tick
        if tick:
            # three pods replaced every tick (started an hour before: no fresh-container rule)
            churning = churning[3:] + [(f"churn-{serial + i}", t_s - 3600) for i in range(3)]
            serial += 3
        batch = decoder.decode(body(stable + churning, t_s), t_s * NS)
        assert batch.dropped_pods == 0 and len(batch) == 20
        if batch.key_remap is not None:
            remaps += 1
            assert prev is not None and batch.key_remap.old is prev.keys
            assert batch.keys is not prev.keys
            # every identity of the previous batch still on the node maps to its new id
            for k in prev.key_id.tolist():
                ident = prev.keys.key(k)
                new_k = int(batch.key_remap.key_map[k])
                assert new_k >= 0 and batch.keys.key(new_k) == ident
        elif prev is not None:
            assert batch.keys is prev.keys
        # the table stays bounded: one payload's new keys over the compaction threshold
        assert len(batch.keys) <= key_compaction_threshold(20) + 6
        snap = store.store([("node-1", batch)])
        if tick >= 1:
            for name, _ in stable:  # never loses its baseline, compaction or not
                pod = snap.pod("ns", name)
                assert pod is not None, (tick, name)
                assert [c.cpu_nanocores for c in pod.containers] == [int(RATE * NS)] * 2
            # pods that were there last tick too have usage; new ones not yet
            names = {name for name, _ in churning}
            for name in names:
                pod = snap.pod("ns", name)
                was_there = prev is not None and prev.keys.find("ns", name, "app") >= 0 and (
                    prev.keys.find("ns", name, "app") in prev.key_id.tolist())
                assert (pod is not None) == was_there, (tick, name)
            assert snap.node("node-1") is not None
        prev = batch
    assert remaps >= 3  # 60 ticks x 6 new keys over a threshold of 104


def test_compiled_and_python_decoders_compact_alike(decoder_c: type[DecoderPy]) -> None:
    c_dec, py_dec = decoder_c(), DecoderPy()
    pods = [(f"p-{i}", T0_S - 3600) for i in range(5)]
    for tick in range(40):
        pods = [*pods[2:], (f"p-{5 + 2 * tick}", T0_S), (f"p-{6 + 2 * tick}", T0_S)]
        b = body(pods, T0_S + 15 * tick)
        got_c, got_py = c_dec.decode(b, 0), py_dec.decode(b, 0)
        assert (got_c.key_remap is None) == (got_py.key_remap is None), tick
        if got_c.key_remap is not None and got_py.key_remap is not None:
            assert got_c.key_remap.key_map.tolist() == got_py.key_remap.key_map.tolist()
        assert got_c.key_id.tolist() == got_py.key_id.tolist()
        assert got_c.containers() == got_py.containers()
        assert c_dec.keys.container == py_dec.keys.container
        assert c_dec.keys.pod_tuple == py_dec.keys.pod_tuple


@pytest.mark.parametrize("fail_after_compaction", [True, False])
def test_remap_survives_a_failed_decode(decoder_cls: type[DecoderPy],
                                        fail_after_compaction: bool) -> None:
    """The remap goes with the next batch the decoder returns, even if a body in between
    was malformed."""
    decoder = decoder_cls()
    pods = [(f"p-{i}", T0_S - 3600) for i in range(4)]
    batch = None
    for tick in range(200):
        pods = [*pods[1:], (f"q-{tick}", T0_S - 3600)]
        if fail_after_compaction and batch is not None and batch.key_remap is None and (
                len(decoder.keys) < len(batch.keys)):
            with pytest.raises(ValueError):
                decoder.decode(b"garbage{\n", 0)
        new = decoder.decode(body(pods, T0_S + 15 * tick), 0)
        if batch is not None and new.keys is not batch.keys:
            assert new.key_remap is not None and new.key_remap.old is batch.keys
            return
        batch = new
    pytest.fail("no compaction in 200 ticks")
