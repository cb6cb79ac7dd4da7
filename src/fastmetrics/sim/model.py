"""The simulated cluster's state: nodes, pods, containers and their usage models.

Every container has a constant CPU rate (nanocores) and a memory level, and its cumulative CPU
counter advances with wall time from its start, so the rate a correct metrics server computes
from two scrapes is known exactly: ``cpu_nanocores``. The kubelet farm renders this state; the
apiserver stand-in serves it as Node and Pod objects and streams its changes to watchers.

All times are int ns since the Unix epoch; the clock is injectable for tests.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "FAULTS",
    "Cluster",
    "ClusterShape",
    "ContainerModel",
    "Event",
    "NodeModel",
    "PodModel",
]

NS_PER_S = 1_000_000_000

# Faults a node's kubelet can be told to show (SPEC §3.4's failure classes and more):
#   slow        the request hangs (past any scrape timeout) and is never answered
#   garbage     200 with a body that is not Prometheus text
#   http500     500 Internal Server Error
#   tls         the TLS handshake fails (a certificate from a CA nobody trusts)
#   unauthorized  401 for every request
FAULTS = frozenset({"slow", "garbage", "http500", "tls", "unauthorized"})

K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class ContainerModel:
    """One running container and its usage."""

    name: str
    cpu_nanocores: int
    """Constant CPU usage: the rate a metrics server must report."""
    memory_bytes: int
    """Working set (reported as is)."""
    start_time_ns: int
    zero: bool = False
    """Fault: the runtime reports no stats (kubelet substitutes cpu 0 and memory 0)."""

    def cpu_seconds_at(self, t_ns: int) -> float:
        """The cumulative CPU (core-seconds) the kubelet reports at ``t_ns``."""
        if self.zero:
            return 0.0
        used_ns = max(0, t_ns - self.start_time_ns) * self.cpu_nanocores // NS_PER_S
        return used_ns / NS_PER_S


@dataclass
class PodModel:
    namespace: str
    name: str
    node: str
    labels: dict[str, str]
    containers: list[ContainerModel]
    phase: str = "Running"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    creation_ns: int = 0
    resource_version: int = 0

    @property
    def cpu_nanocores(self) -> int:
        return sum(c.cpu_nanocores for c in self.containers if not c.zero)

    @property
    def memory_bytes(self) -> int:
        return sum(c.memory_bytes for c in self.containers if not c.zero)


@dataclass
class NodeModel:
    name: str
    index: int
    address: str
    """Its InternalIP: a loopback address 127.x.y.z where its kubelet listens."""
    labels: dict[str, str]
    allocatable_cpu: str = "8"
    allocatable_memory: str = "32Gi"
    ready: bool = True
    pods: list[PodModel] = field(default_factory=list)
    faults: set[str] = field(default_factory=set)
    system_cpu_nanocores: int = 150_000_000
    system_memory_bytes: int = 600 * 1024 * 1024
    boot_ns: int = 0
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    creation_ns: int = 0
    resource_version: int = 0

    @property
    def cpu_nanocores(self) -> int:
        """The node's own usage: system plus its running pods."""
        return self.system_cpu_nanocores + sum(p.cpu_nanocores for p in self.pods)

    @property
    def memory_bytes(self) -> int:
        return self.system_memory_bytes + sum(p.memory_bytes for p in self.pods)

    def cpu_seconds_at(self, t_ns: int) -> float:
        used_ns = max(0, t_ns - self.boot_ns) * self.cpu_nanocores // NS_PER_S
        return used_ns / NS_PER_S


@dataclass(frozen=True)
class Event:
    """One change, as a watch stream delivers it."""

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    kind: Literal["Node", "Pod"]
    obj: NodeModel | PodModel
    resource_version: int


@dataclass
class ClusterShape:
    """What to simulate; from flags or a YAML file (``ClusterShape.from_yaml``)."""

    nodes: int = 3
    pods_per_node: int = 10
    containers_per_pod: int = 2
    namespaces: tuple[str, ...] = ("default", "kube-system", "monitoring", "shop", "payments")
    seed: int = 1
    node_labels: dict[str, str] = field(default_factory=dict)
    cpu_millicores_median: float = 30.0
    cpu_sigma: float = 1.2
    memory_mib_median: float = 64.0
    memory_sigma: float = 1.0
    faults: dict[str, list[str]] = field(default_factory=dict)
    """Node name -> faults (see FAULTS) that node's kubelet starts with."""

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.nodes <= 60_000:
            problems.append(f"nodes must be in [1, 60000], got {self.nodes}")
        if not 0 <= self.pods_per_node <= 1000:
            problems.append(f"pods_per_node must be in [0, 1000], got {self.pods_per_node}")
        if not 1 <= self.containers_per_pod <= 50:
            problems.append(
                f"containers_per_pod must be in [1, 50], got {self.containers_per_pod}"
            )
        if not self.namespaces:
            problems.append("namespaces must not be empty")
        for node, faults in self.faults.items():
            bad = set(faults) - FAULTS
            if bad:
                problems.append(
                    f"faults of {node}: unknown {sorted(bad)} (known: {sorted(FAULTS)})"
                )
        if problems:
            raise ValueError("invalid cluster shape: " + "; ".join(problems))

    @classmethod
    def from_yaml(cls, path: Path) -> ClusterShape:
        """Read a shape from YAML: any field of this class at the top level."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        if "namespaces" in data:
            data["namespaces"] = tuple(data["namespaces"])
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"{path}: {e}") from None


def node_address(index: int) -> str:
    """The loopback address of node ``index``: 127.0.1.1, 127.0.1.2, ... (never 127.0.0.x)."""
    index += 256 + 1
    return f"127.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


class Cluster:
    """The simulated cluster's state, its resourceVersion and its change history."""

    HISTORY = 10_000
    """How many past events a watch can resume from; older resourceVersions get 410 Gone."""

    def __init__(self, shape: ClusterShape, clock: Callable[[], int] = time.time_ns) -> None:
        self.shape = shape
        self.clock = clock
        self.resource_version = 1
        self.nodes: list[NodeModel] = []
        self.node_by_name: dict[str, NodeModel] = {}
        self.pods: dict[tuple[str, str], PodModel] = {}
        self.history: deque[Event] = deque(maxlen=self.HISTORY)
        self._listeners: list[Callable[[Event], None]] = []
        self._rng = random.Random(shape.seed)
        self._build()

    # ------------------------------------------------------------------ construction

    def _rate(self) -> int:
        s = self.shape
        m = self._rng.lognormvariate(math.log(s.cpu_millicores_median), s.cpu_sigma)
        return max(100_000, min(int(m * 1_000_000), 4_000_000_000))

    def _memory(self) -> int:
        s = self.shape
        mib = self._rng.lognormvariate(math.log(s.memory_mib_median), s.memory_sigma)
        return max(1, min(int(mib * 256), 16 * 1024 * 256)) * 4096

    def _suffix(self, n: int) -> str:
        return "".join(self._rng.choice(K8S_ALPHABET) for _ in range(n))

    def _build(self) -> None:
        now = self.clock()
        s = self.shape
        deployments = ["web", "api", "worker", "cache", "frontend", "checkout", "search"]
        for i in range(s.nodes):
            name = f"sim-node-{i:05d}" if s.nodes > 1 else "sim-node"
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "sim.large",
                **s.node_labels,
            }
            node = NodeModel(
                name=name, index=i, address=node_address(i), labels=labels,
                boot_ns=now - self._rng.randint(3_600, 30 * 86_400) * NS_PER_S,
                creation_ns=now - 30 * 86_400 * NS_PER_S,
                faults=set(s.faults.get(name, ())),
            )
            self._add_node(node)
            for j in range(s.pods_per_node):
                ns = s.namespaces[(i * s.pods_per_node + j) % len(s.namespaces)]
                app = deployments[j % len(deployments)]
                pod_name = f"{app}-{self._suffix(10)}-{self._suffix(5)}"
                self.add_pod(ns, pod_name, name, {"app": app, "tier": "backend"},
                             [f"{app}" if c == 0 else f"sidecar-{c}"
                              for c in range(s.containers_per_pod)],
                             started_ago_ns=self._rng.randint(600, 7 * 86_400) * NS_PER_S)

    def _bump(self) -> int:
        self.resource_version += 1
        return self.resource_version

    def _emit(self, type_: Literal["ADDED", "MODIFIED", "DELETED"],
              obj: NodeModel | PodModel) -> None:
        ev = Event(type_, "Node" if isinstance(obj, NodeModel) else "Pod", obj,
                   obj.resource_version)
        self.history.append(ev)
        for listener in list(self._listeners):
            listener(ev)

    def _add_node(self, node: NodeModel) -> None:
        node.resource_version = self._bump()
        self.nodes.append(node)
        self.node_by_name[node.name] = node
        self._emit("ADDED", node)

    # ------------------------------------------------------------------ changes

    def add_pod(self, namespace: str, name: str, node: str, labels: dict[str, str],
                containers: Iterable[str], *, started_ago_ns: int = 0,
                phase: str = "Running") -> PodModel:
        """Create a pod whose containers started ``started_ago_ns`` ago."""
        if (namespace, name) in self.pods:
            raise ValueError(f"pod {namespace}/{name} exists")
        host = self.node_by_name[node]
        now = self.clock()
        start = now - started_ago_ns
        pod = PodModel(
            namespace, name, node, dict(labels),
            [ContainerModel(c, self._rate(), self._memory(),
                            start + self._rng.randint(0, 2 * NS_PER_S)) for c in containers],
            phase=phase, creation_ns=start - NS_PER_S,
        )
        pod.resource_version = self._bump()
        host.pods.append(pod)
        self.pods[(namespace, name)] = pod
        self._emit("ADDED", pod)
        return pod

    def delete_pod(self, namespace: str, name: str) -> None:
        pod = self.pods.pop((namespace, name))
        self.node_by_name[pod.node].pods.remove(pod)
        pod.resource_version = self._bump()
        self._emit("DELETED", pod)

    def set_phase(self, namespace: str, name: str, phase: str) -> None:
        pod = self.pods[(namespace, name)]
        pod.phase = phase
        pod.resource_version = self._bump()
        self._emit("MODIFIED", pod)

    def set_node_labels(self, node: str, labels: dict[str, str]) -> None:
        n = self.node_by_name[node]
        n.labels = dict(labels)
        n.resource_version = self._bump()
        self._emit("MODIFIED", n)

    def set_ready(self, node: str, ready: bool) -> None:
        n = self.node_by_name[node]
        n.ready = ready
        n.resource_version = self._bump()
        self._emit("MODIFIED", n)

    def restart_container(self, namespace: str, pod: str, container: str,
                          ago_ns: int = 0) -> None:
        """The container restarts (its counter starts again from 0) ``ago_ns`` ago."""
        c = self._container(namespace, pod, container)
        c.start_time_ns = self.clock() - ago_ns

    def set_zero(self, namespace: str, pod: str, container: str, zero: bool = True) -> None:
        """The runtime stops reporting stats for the container (the kubelet reports zeros)."""
        self._container(namespace, pod, container).zero = zero

    def set_faults(self, node: str, faults: Iterable[str]) -> None:
        faults = set(faults)
        bad = faults - FAULTS
        if bad:
            raise ValueError(f"unknown faults {sorted(bad)} (known: {sorted(FAULTS)})")
        self.node_by_name[node].faults = faults

    def _container(self, namespace: str, pod: str, container: str) -> ContainerModel:
        for c in self.pods[(namespace, pod)].containers:
            if c.name == container:
                return c
        raise KeyError(f"{namespace}/{pod} has no container {container!r}")

    # ------------------------------------------------------------------ watch support

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` synchronously inside every change, before the next one:
        a listener that renders ``event.obj`` right away sees every version of the object."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Event], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def events_since(self, resource_version: int) -> list[Event] | None:
        """Events after ``resource_version``, or None when it is older than the history."""
        if resource_version >= self.resource_version:
            return []
        if self.history and self.history[0].resource_version > resource_version + 1:
            return None
        if not self.history and resource_version < self.resource_version:
            return None
        return [e for e in self.history if e.resource_version > resource_version]

