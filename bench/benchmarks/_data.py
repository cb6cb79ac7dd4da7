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


# Store scenarios: (nodes, pods per node, containers per pod), after metrics-server's
# storage_benchmark_test.go plus the cluster sizes our users run.
STORE_SCENARIOS = {
    "100x70x1": (100, 70, 1),
    "1000x30x2": (1000, 30, 2),
    "5000x30x2": (5000, 30, 2),
    "5000x110x2": (5000, 110, 2),
}


class SyntheticCluster:
    """Decoded batches for a whole cluster, built directly as columns (no text, no decoder).

    Tick ``k`` advances every timestamp by ``k`` x 15 s and every counter accordingly, with the
    same key tables, as a steady cluster scraped by one decoder per node would.
    """

    def __init__(self, nodes: int, pods: int, containers: int, seed: int = SEED) -> None:
        import numpy as np

        from fastmetrics._batch import KeyTable

        rng = np.random.default_rng(seed)
        self.names = [f"node-{i:05d}" for i in range(nodes)]
        self.keys: list[KeyTable] = []
        self.key_id: list[np.ndarray] = []
        self.pod_id: list[np.ndarray] = []
        per_node = pods * containers
        for i in range(nodes):
            kt = KeyTable()
            ids = [kt.intern(f"ns-{(i * pods + p) % 50}", f"pod-{i}-{p}", f"c{c}")
                   for c in range(containers) for p in range(pods)]
            self.keys.append(kt)
            self.key_id.append(np.array([k for k, _ in ids], np.int32))
            self.pod_id.append(np.array([p for _, p in ids], np.int32))
        total = nodes * per_node
        now_ns = NOW_MS * 1_000_000
        self.ts0 = now_ns - rng.integers(0, 1_000_000_000, total, dtype=np.int64)
        self.start = now_ns - rng.integers(3_600 * 10**9, 96 * 3_600 * 10**9, total,
                                           dtype=np.int64)
        self.rate = rng.integers(1_000_000, 2_000_000_000, total, dtype=np.int64)  # nanocores
        self.cpu0 = ((self.ts0 - self.start) // 10**9 * self.rate).astype(np.uint64)
        self.mem = (rng.integers(256, 1 << 20, total, dtype=np.int64) * 4096).astype(np.uint64)
        self.per_node = per_node
        self.node_ts0 = now_ns - rng.integers(0, 10**9, nodes, dtype=np.int64)
        self.total = total

    def tick(self, k: int, churn: float = 0.0) -> list:
        """Tick ``k``; on a ``churn`` fraction of the nodes one pod is replaced by a new one."""
        import numpy as np

        from fastmetrics._batch import DecodedBatch, NodePoint

        churned = set(range(0, len(self.names), max(1, round(1 / churn)))) if churn else set()
        dt = k * 15 * 10**9
        ts = self.ts0 + dt
        cpu = self.cpu0 + (self.rate * (15 * k)).astype(np.uint64)
        out = []
        n = self.per_node
        for i, name in enumerate(self.names):
            sl = slice(i * n, (i + 1) * n)
            node = NodePoint(int(self.node_ts0[i]) + dt, 10**15 + k * 15 * 10**10, 8 << 30)
            key_id, pod_id = self.key_id[i], self.pod_id[i]
            if i in churned:
                # the pod at position k is replaced by a newly created one (new key ids)
                kt = self.keys[i]
                pods = int(pod_id.max()) + 1 if len(pod_id) else 0
                key_id, pod_id = key_id.copy(), pod_id.copy()
                rows = np.flatnonzero(pod_id == pod_id[k % max(1, pods)])
                for c, r in enumerate(rows):
                    kid, pid = kt.intern("churn", f"pod-{i}-{k}", f"c{c}")
                    key_id[r], pod_id[r] = kid, pid
            out.append((name, DecodedBatch(node, key_id, pod_id, ts[sl],
                                           self.start[sl], cpu[sl], self.mem[sl],
                                           self.keys[i])))
        return out
