"""Selector filtering and snapshot look-ups as the API does them, by cluster size (asv-style).

An HPA lists one namespace's pods with a label selector (``app=X``); a VPA or ``kubectl top
-A -l ...`` filters every pod of the cluster. The label sets are shared per ReplicaSet, as the
pod informer shares them.
"""

from __future__ import annotations

from fastmetrics.cluster import Labels, PodInfo
from fastmetrics.selectors import parse_label_selector
from fastmetrics.store import Snapshot, Store

from ._data import RESOLUTION_MS, SyntheticCluster

SIZES = [3_000, 30_000, 150_000]  # pods: 100 x 30, 1,000 x 30, 5,000 x 30
PODS_PER_NODE = 30
NAMESPACES = 50  # SyntheticCluster's
GROUP = 20  # pods per ReplicaSet (one label set)
SELECTOR = "app=app-3,tier in (backend,frontend),!canary"


def informer_pods(pods: int) -> dict[str, list[PodInfo]]:
    """Running pods by namespace, as ``PodInformer.pods_in`` gives them."""
    nodes = max(1, pods // PODS_PER_NODE)
    sets: dict[int, Labels] = {}
    by_ns: dict[str, list[PodInfo]] = {}
    for i in range(nodes):
        for p in range(PODS_PER_NODE):
            g = i * PODS_PER_NODE + p
            ns = g % NAMESPACES
            group = (g // NAMESPACES) // GROUP
            labels = sets.get(group)
            if labels is None:
                labels = sets[group] = Labels({
                    "app": f"app-{group % 40}", "tier": "backend" if group % 2 else "frontend",
                    "pod-template-hash": f"{group:010x}"})
            by_ns.setdefault(f"ns-{ns}", []).append(PodInfo(f"ns-{ns}", f"pod-{i}-{p}", labels))
    return by_ns


def snapshot(pods: int) -> Snapshot:
    nodes = max(1, pods // PODS_PER_NODE)
    sc = SyntheticCluster(nodes, PODS_PER_NODE, 2)
    store = Store(RESOLUTION_MS * 1_000_000)
    store.store(sc.tick(0))
    return store.store(sc.tick(1))


class TimeSelect:
    """Label-selector filtering of informer pods."""

    params = [SIZES]
    param_names = ["pods"]

    def setup(self, pods: int) -> None:
        self.by_ns = informer_pods(pods)
        self.all = [p for ns in sorted(self.by_ns) for p in self.by_ns[ns]]
        self.selector = parse_label_selector(SELECTOR)
        self.ns = self.by_ns["ns-3"]

    def time_parse(self, pods: int) -> None:
        """Parse an HPA-style selector (set-based, with a negation)."""
        parse_label_selector(SELECTOR)

    def time_filter_namespace(self, pods: int) -> None:
        """One namespace's pods through the selector (an HPA list)."""
        m = self.selector.matches
        [p for p in self.ns if m(p.labels)]

    def time_filter_all(self, pods: int) -> None:
        """Every pod through the selector (a cluster-wide list with a selector)."""
        m = self.selector.matches
        [p for p in self.all if m(p.labels)]

    def time_filter_all_naive(self, pods: int) -> None:
        """Baseline: the same test written inline with dict look-ups, per pod."""
        [p for p in self.all
         if p.labels.get("app") == "app-3" and p.labels.get("tier") in ("backend", "frontend")
         and "canary" not in p.labels]


class TimeSnapshotRead:
    """Reading usage out of a snapshot for the pods a request selected."""

    params = [SIZES]
    param_names = ["pods"]

    def setup(self, pods: int) -> None:
        self.snap = snapshot(pods)
        tuples = [t for keys in self.snap.node_keys for t in keys.pod_tuple]
        self.hpa = tuples[:: max(1, len(tuples) // 20)][:20]  # 20 pods across the cluster
        self.all = tuples

    def time_pod_20(self, pods: int) -> None:
        """20 pods one by one (``Snapshot.pod``: an HPA-sized list)."""
        pod = self.snap.pod
        for ns, name in self.hpa:
            pod(ns, name)

    def time_pods_bulk_all(self, pods: int) -> None:
        """Every pod (``Snapshot.pods_bulk``: the object path of an all-pods list)."""
        self.snap.pods_bulk(self.all)
