"""Cluster state from kube-apiserver: the client configuration and the Node and Pod informers.

``NodeInfo`` and ``PodInfo`` keep only what fastmetrics uses (SPEC §2.1, §2.3, §5.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["NodeInfo", "PodInfo"]

RESOURCE_METRICS_PATH_ANNOTATION = "metrics.k8s.io/resource-metrics-path"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What fastmetrics keeps of a Node."""

    name: str
    labels: Mapping[str, str]
    addresses: tuple[tuple[str, str], ...]
    """``(type, address)`` pairs in ``status.addresses`` order, e.g. ``("InternalIP", "10.0.0.4")``."""
    kubelet_port: int
    """``status.daemonEndpoints.kubeletEndpoint.Port``; 0 when absent."""
    ready: bool
    """The ``Ready`` condition is ``True``."""
    metrics_path: str = ""
    """The ``metrics.k8s.io/resource-metrics-path`` annotation, or "" (use /metrics/resource)."""
    allocatable_cpu: str = ""
    allocatable_memory: str = ""


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What fastmetrics keeps of a Running pod (from metadata-only lists and watches)."""

    namespace: str
    name: str
    labels: Mapping[str, str]
