"""Storing one tick of a whole cluster and building its snapshot (asv-style)."""

from __future__ import annotations

import numpy as np

from fastmetrics import _store_py, store
from fastmetrics.store import Store

from ._data import STORE_SCENARIOS, SyntheticCluster

try:
    from fastmetrics import _core
except ImportError:  # pragma: no cover
    _core = None  # type: ignore[assignment]

RESOLUTION_NS = 15 * 10**9


def use_kernels(compiled: bool) -> None:
    """Point the store at the compiled kernels or at their numpy twins."""
    mod = _core if compiled else _store_py
    store.store_containers = mod.store_containers  # type: ignore[assignment]
    store.group_pods = mod.group_pods  # type: ignore[assignment]


def snapshot_nbytes(s: store.Store) -> int:
    """Bytes held by the store between ticks: last, prev, node points and the snapshot."""
    total = 0
    seen: set[int] = set()
    arrays = [*s._last, *s._prev, *s._node_last, *s._node_prev]
    snap = s.snapshot
    for field in snap.__dataclass_fields__:
        v = getattr(snap, field)
        if isinstance(v, np.ndarray):
            arrays.append(v)
    for a in arrays:
        if id(a) not in seen:
            seen.add(id(a))
            total += a.nbytes
    import sys

    total += sys.getsizeof(snap.locator) + sys.getsizeof(snap.node_index)
    total += sys.getsizeof(snap.node_names) + sys.getsizeof(snap.node_keys)
    return total


class TimeStore:
    """One steady-state tick: Store.store(all nodes), snapshot included, ticks 15 s apart."""

    params = [list(STORE_SCENARIOS), ["c", "py"]]
    param_names = ["scenario", "kernels"]
    number = 1
    repeat = 5
    timeout = 900

    def setup(self, scenario: str, kernels: str) -> None:
        if kernels == "c" and _core is None:
            raise NotImplementedError("compiled extension not built")
        use_kernels(kernels == "c")
        self.cluster = SyntheticCluster(*STORE_SCENARIOS[scenario])
        self.store = Store(RESOLUTION_NS)
        self.store.store(self.cluster.tick(0))
        self.store.store(self.cluster.tick(1))
        self.next = self.cluster.tick(2)

    def time_store(self, scenario: str, kernels: str) -> None:
        """Store one tick of every node and publish its snapshot."""
        self.store.store(self.next)


class MemStore:
    """Bytes held per container between ticks (last, prev and the snapshot)."""

    params = [list(STORE_SCENARIOS)]
    param_names = ["scenario"]
    timeout = 900

    def setup(self, scenario: str) -> None:
        use_kernels(_core is not None)
        self.cluster = SyntheticCluster(*STORE_SCENARIOS[scenario])

    def track_bytes_per_container(self, scenario: str) -> float:
        s = Store(RESOLUTION_NS)
        for k in range(3):
            s.store(self.cluster.tick(k))
        return snapshot_nbytes(s) / self.cluster.total
