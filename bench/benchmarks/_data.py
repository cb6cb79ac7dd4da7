"""Deterministic benchmark data: kubelet payloads rendered in the exact kubelet format."""

from __future__ import annotations

import functools

from fastmetrics.sim.exposition import realistic_node, render_resource_metrics

SEED = 20261125
NOW_MS = 1_767_225_600_000
RESOLUTION_MS = 15_000

# pods per node, for the decode benchmarks (2 containers per pod, as SPEC's 110 x 2 payload)
PODS_PER_NODE = [10, 30, 110]


@functools.cache
def node_payloads(pods: int, containers_per_pod: int = 2, node_index: int = 0,
                  ticks: int = 2) -> tuple[bytes, ...]:
    """Successive scrapes of one node, ``RESOLUTION_MS`` apart: same label bytes, new values."""
    out = []
    for t in range(ticks):
        node, pod_samples, containers = realistic_node(
            node_index, pods, containers_per_pod, NOW_MS + t * RESOLUTION_MS, SEED
        )
        out.append(render_resource_metrics(node, pod_samples, containers))
    return tuple(out)
