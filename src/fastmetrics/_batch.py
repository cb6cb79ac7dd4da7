"""The decoder's output types, shared by the compiled decoder and its Python twin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["DecodedBatch", "KeyTable", "NodePoint"]


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
    the same id. One table belongs to one decoder (one node); strings are shared between ids.
    """

    __slots__ = (
        "_key_index",
        "_pod_index",
        "_strings",
        "container",
        "namespace",
        "pod",
        "pod_name",
        "pod_namespace",
        "pod_of_key",
        "pod_tuple",
    )

    def __init__(self) -> None:
        self.namespace: list[str] = []
        """Per key id: the namespace."""
        self.pod: list[str] = []
        """Per key id: the pod name."""
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
        self._key_index: dict[tuple[str, str, str], int] = {}
        self._pod_index: dict[tuple[str, str], int] = {}
        self._strings: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.container)

    @property
    def pod_count(self) -> int:
        return len(self.pod_name)

    def key(self, key_id: int) -> tuple[str, str, str]:
        """``(namespace, pod, container)`` of ``key_id``."""
        return self.namespace[key_id], self.pod[key_id], self.container[key_id]

    def pod_key(self, pod_id: int) -> tuple[str, str]:
        """``(namespace, pod)`` of ``pod_id``."""
        return self.pod_namespace[pod_id], self.pod_name[pod_id]

    def find_pod(self, pod: tuple[str, str]) -> int:
        """The pod id of ``(namespace, name)``, or -1."""
        return self._pod_index.get(pod, -1)

    def _str(self, s: str) -> str:
        return self._strings.setdefault(s, s)

    def intern(self, namespace: str, pod: str, container: str) -> tuple[int, int]:
        """Return ``(key_id, pod_id)`` for this identity, adding it if it is new."""
        ident = (namespace, pod, container)
        key_id = self._key_index.get(ident)
        if key_id is not None:
            return key_id, self.pod_of_key[key_id]
        pod_id = self._pod_index.get((namespace, pod))
        if pod_id is None:
            pod_ident = (self._str(namespace), self._str(pod))
            pod_id = len(self.pod_name)
            self._pod_index[pod_ident] = pod_id
            self.pod_tuple.append(pod_ident)
            self.pod_namespace.append(pod_ident[0])
            self.pod_name.append(pod_ident[1])
        key_id = len(self.container)
        self._key_index[ident] = key_id
        self.namespace.append(self.pod_namespace[pod_id])
        self.pod.append(self.pod_name[pod_id])
        self.container.append(self._str(container))
        self.pod_of_key.append(pod_id)
        return key_id, pod_id


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
