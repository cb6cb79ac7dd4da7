"""The decoder's output types, shared by the compiled decoder and its Python twin."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["DecodedBatch", "KeyRemap", "KeyTable", "NodePoint"]


class NodePoint(NamedTuple):
    """The node's own usage in one payload."""

    timestamp_ns: int
    """Sample time, ns since the Unix epoch (the last node cpu/memory sample's time)."""
    cpu_nanocore_seconds: int
    """Cumulative node CPU, in ns of CPU time (core-seconds x 1e9, truncated)."""
    memory_bytes: int
    """Node working set, bytes."""


class KeyTable:
    """Interned container identities ``(namespace, pod, container)`` and pods ``(namespace, pod)``.

    Ids are dense ints from 0, stable for the life of the table: the same identity always gets
    the same id. One table belongs to one decoder (one node). A decoder whose node churns pods
    replaces its table by a compacted copy now and then (:meth:`compacted`); a published table
    is never changed except by appending.

    Memory is what a 5,000-node cluster pays per container, so the table keeps no Python object
    per container of its own: per key a slot in ``container`` (the name string is shared by
    every pod that has that container name) and one in ``pod_of_key``; per pod its name, one
    ``(namespace, name)`` tuple and an index entry. Identities are found through the pod (a
    pod's keys are chained), not through a per-key dict.
    """

    __slots__ = (
        "_key_next",
        "_pod_first_key",
        "_pod_index",
        "_strings",
        "container",
        "pod_name",
        "pod_namespace",
        "pod_of_key",
        "pod_tuple",
    )

    def __init__(self) -> None:
        self.container: list[str] = []
        """Per key id: the container name."""
        self.pod_of_key: list[int] = []
        """Per key id: its pod id."""
        self.pod_namespace: list[str] = []
        """Per pod id: the namespace."""
        self.pod_name: list[str] = []
        """Per pod id: the pod name."""
        self.pod_tuple: list[tuple[str, str]] = []
        """Per pod id: ``(namespace, name)``, the same tuple object as the pod index's key."""
        self._pod_index: dict[tuple[str, str], int] = {}
        self._pod_first_key: array[int] = array("i")
        self._key_next: array[int] = array("i")
        self._strings: dict[str, str] = {}
        """Namespaces and container names, shared (they repeat across pods)."""

    def __len__(self) -> int:
        return len(self.container)

    @property
    def pod_count(self) -> int:
        return len(self.pod_name)

    @property
    def namespace(self) -> list[str]:
        """Per key id: the namespace (built on demand; for tests and tools)."""
        ns = self.pod_namespace
        return [ns[p] for p in self.pod_of_key]

    @property
    def pod(self) -> list[str]:
        """Per key id: the pod name (built on demand; for tests and tools)."""
        names = self.pod_name
        return [names[p] for p in self.pod_of_key]

    def key(self, key_id: int) -> tuple[str, str, str]:
        """``(namespace, pod, container)`` of ``key_id``."""
        p = self.pod_of_key[key_id]
        return self.pod_namespace[p], self.pod_name[p], self.container[key_id]

    def pod_key(self, pod_id: int) -> tuple[str, str]:
        """``(namespace, pod)`` of ``pod_id``."""
        return self.pod_namespace[pod_id], self.pod_name[pod_id]

    def find_pod(self, pod: tuple[str, str]) -> int:
        """The pod id of ``(namespace, name)``, or -1."""
        return self._pod_index.get(pod, -1)

    def find(self, namespace: str, pod: str, container: str) -> int:
        """The key id of this identity, or -1."""
        pod_id = self._pod_index.get((namespace, pod), -1)
        if pod_id < 0:
            return -1
        k = self._pod_first_key[pod_id]
        while k >= 0:
            if self.container[k] == container:
                return k
            k = self._key_next[k]
        return -1

    def _str(self, s: str) -> str:
        return self._strings.setdefault(s, s)

    def intern(self, namespace: str, pod: str, container: str) -> tuple[int, int]:
        """Return ``(key_id, pod_id)`` for this identity, adding it if it is new."""
        pod_id = self._pod_index.get((namespace, pod), -1)
        if pod_id >= 0:
            k = self._pod_first_key[pod_id]
            last = -1
            while k >= 0:
                if self.container[k] == container:
                    return k, pod_id
                last = k
                k = self._key_next[k]
        else:
            pod_ident = (self._str(namespace), pod)
            pod_id = len(self.pod_name)
            self._pod_index[pod_ident] = pod_id
            self.pod_tuple.append(pod_ident)
            self.pod_namespace.append(pod_ident[0])
            self.pod_name.append(pod)
            self._pod_first_key.append(-1)
            last = -1
        key_id = len(self.container)
        self.container.append(self._str(container))
        self.pod_of_key.append(pod_id)
        self._key_next.append(-1)
        if last >= 0:
            self._key_next[last] = key_id
        else:
            self._pod_first_key[pod_id] = key_id
        return key_id, pod_id

    def compacted(self, live: Iterable[int]) -> tuple[KeyTable, npt.NDArray[np.int32]]:
        """A new table holding only the keys ``live`` (and their pods), in id order, and the
        remap: ``remap[old key id]`` is the new id, or -1 for a key left out. This table is
        not changed (a published snapshot may still read it)."""
        keep = sorted(set(live))
        remap = np.full(len(self.container), -1, np.int32)
        out = KeyTable()
        ns, names, containers, pod_of_key = (self.pod_namespace, self.pod_name,
                                             self.container, self.pod_of_key)
        for k in keep:
            p = pod_of_key[k]
            new_k, _ = out.intern(ns[p], names[p], containers[k])
            remap[k] = new_k
        return out, remap


class KeyRemap(NamedTuple):
    """How a decoder's new (compacted) key table relates to the one before it."""

    old: KeyTable
    """The table the previous batch of this decoder referred to."""
    key_map: npt.NDArray[np.int32]
    """``key_map[old key id]`` = id in the new table, -1 for a key that was dropped."""


@dataclass(frozen=True, slots=True, eq=False)
class DecodedBatch:
    """One node's decoded ``/metrics/resource`` payload, as columns.

    Container rows are the containers of every pod kept by SPEC §3.3 (a pod with any container
    whose cpu or memory is 0 is dropped whole), in order of first appearance in the payload.
    """

    node: NodePoint | None
    """The node point, or None when the payload lacks node cpu or memory or either is 0."""
    key_id: npt.NDArray[np.int32]
    """Per container row: id into ``keys`` (namespace, pod, container)."""
    pod_id: npt.NDArray[np.int32]
    """Per container row: pod id into ``keys`` (namespace, pod)."""
    timestamp_ns: npt.NDArray[np.int64]
    """Per container row: sample time, ns since the epoch (last cpu/memory line wins)."""
    start_time_ns: npt.NDArray[np.int64]
    """Per container row: container start time, ns since the epoch; 0 when not reported."""
    cpu_nanocore_seconds: npt.NDArray[np.uint64]
    """Per container row: cumulative CPU, ns of CPU time."""
    memory_bytes: npt.NDArray[np.uint64]
    """Per container row: working set, bytes."""
    keys: KeyTable
    """The decoder's key table the ids point into."""
    dropped_pods: int = 0
    """Pods dropped because a container had cpu or memory 0 (or missing)."""
    skipped_samples: int = 0
    """Container samples ignored because a namespace, pod or container label was missing."""
    key_remap: KeyRemap | None = None
    """Set on the first batch after the decoder compacted its key table (ids of pods gone from
    the node are dropped): how the previous batch's key ids map to ``keys``."""

    def __len__(self) -> int:
        return int(self.key_id.shape[0])

    def containers(self) -> list[tuple[str, str, str, int, int, int, int]]:
        """Rows as ``(namespace, pod, container, timestamp_ns, start_time_ns, cpu, memory)``.

        For tests and debugging; the server never builds these objects.
        """
        keys = self.keys
        return [
            (*keys.key(int(k)), int(t), int(s), int(c), int(m))
            for k, t, s, c, m in zip(
                self.key_id,
                self.timestamp_ns,
                self.start_time_ns,
                self.cpu_nanocore_seconds,
                self.memory_bytes,
                strict=True,
            )
        ]
