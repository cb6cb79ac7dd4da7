"""Rendering a PodMetricsList of every pod (asv-style): the columnar path compiled and as the
pure-Python twin, the object-by-object path, and dicts + ``json.dumps``."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fastmetrics.api import _render_py, objects, protobuf, render
from fastmetrics.api.format import format_cpu, format_memory, format_timestamp, format_window
from fastmetrics.cluster import Labels, PodInfo
from fastmetrics.store import Snapshot, Store

from ._data import RESOLUTION_MS, SyntheticCluster

NOW_NS = 1_767_225_640 * 10**9
PODS_PER_NODE = 100
GROUP = 25  # pods sharing one label set (a ReplicaSet's)


def cluster(pods: int) -> tuple[Snapshot, list[PodInfo]]:
    """A snapshot where every pod has usage (two ticks, 2 containers per pod) and the
    informer's Running pods for it, grouped by namespace as ``PodInformer.pods_in`` gives them.
    """
    nodes = max(1, pods // PODS_PER_NODE)
    sc = SyntheticCluster(nodes, PODS_PER_NODE, 2)
    store = Store(RESOLUTION_MS * 1_000_000)
    store.store(sc.tick(0))
    snap = store.store(sc.tick(1))
    sets: dict[int, Labels] = {}
    by_ns: dict[str, list[PodInfo]] = {}
    for i in range(nodes):
        for p in range(PODS_PER_NODE):
            g = i * PODS_PER_NODE + p
            labels = sets.get(g // GROUP)
            if labels is None:
                labels = sets[g // GROUP] = Labels(
                    {"app": f"app-{g // GROUP}", "pod-template-hash": f"{g // GROUP:010x}"})
            ns = f"ns-{g % 50}"  # SyntheticCluster's namespaces
            by_ns.setdefault(ns, []).append(PodInfo(ns, f"pod-{i}-{p}", labels))
    return snap, [p for ns in sorted(by_ns) for p in by_ns[ns]]


def fresh(snap: Snapshot) -> Snapshot:
    """The snapshot with nothing derived from it yet (as a new tick publishes it)."""
    return dataclasses.replace(snap)


def naive_list(items: list[tuple[str, str, Any, Any]], now_ns: int) -> bytes:
    """The list as dicts, then ``json.dumps`` (what a straightforward server would do)."""
    created = format_timestamp(now_ns)
    out = []
    for ns, name, labels, u in items:
        meta: dict[str, Any] = {"name": name, "namespace": ns, "creationTimestamp": created}
        if labels:
            meta["labels"] = dict(sorted(labels.items()))
        out.append({
            "metadata": meta,
            "timestamp": None if u.timestamp_ns is None else format_timestamp(u.timestamp_ns),
            "window": format_window(u.window_ns),
            "containers": [{"name": c.name, "usage": {"cpu": format_cpu(c.cpu_nanocores),
                                                      "memory": format_memory(c.memory_bytes)}}
                           for c in u.containers],
        })
    doc = {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
           "items": out}
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


class TimeRenderPodList:
    """A list of every pod (JSON and protobuf), per request, by cluster size."""

    params = [[1_500, 15_000, 150_000]]
    param_names = ["pods"]
    timeout = 300

    def setup(self, pods: int) -> None:
        self.snap, self.pods = cluster(pods)
        self.table_c = render.build_pod_table(self.snap, render.KERNELS_C or _render_py)
        self.table_py = render.build_pod_table(self.snap, _render_py)
        usages = [self.snap.pod(p.namespace, p.name) for p in self.pods]
        self.items = sorted(((p.namespace, p.name, p.labels, u)
                             for p, u in zip(self.pods, usages, strict=True) if u is not None),
                            key=lambda i: (i[0], i[1]))

    def time_json_c(self, pods: int) -> None:
        """Columnar, compiled: join with the informer's pods, then one-pass JSON."""
        render.pod_list(self.table_c, self.pods, NOW_NS, "json", render.KERNELS_C)

    def time_protobuf_c(self, pods: int) -> None:
        """Columnar, compiled: join, then one-pass protobuf."""
        render.pod_list(self.table_c, self.pods, NOW_NS, "protobuf", render.KERNELS_C)

    def time_json_py(self, pods: int) -> None:
        """Columnar, pure-Python twin: join, then JSON."""
        render.pod_list(self.table_py, self.pods, NOW_NS, "json", _render_py)

    def time_protobuf_py(self, pods: int) -> None:
        """Columnar, pure-Python twin: join, then protobuf."""
        render.pod_list(self.table_py, self.pods, NOW_NS, "protobuf", _render_py)

    def time_json_objects(self, pods: int) -> None:
        """Object by object (PodUsage per pod, sort, objects.pod_metrics_list)."""
        usages = self.snap.pods_bulk([(p.namespace, p.name) for p in self.pods])
        items = sorted(((p.namespace, p.name, p.labels, u)
                        for p, u in zip(self.pods, usages, strict=True) if u is not None),
                       key=lambda i: (i[0], i[1]))
        objects.pod_metrics_list(items, NOW_NS)

    def time_protobuf_objects(self, pods: int) -> None:
        """Object by object, protobuf (protobuf.pod_metrics_list)."""
        usages = self.snap.pods_bulk([(p.namespace, p.name) for p in self.pods])
        items = sorted(((p.namespace, p.name, p.labels, u)
                        for p, u in zip(self.pods, usages, strict=True) if u is not None),
                       key=lambda i: (i[0], i[1]))
        protobuf.pod_metrics_list(items, NOW_NS)

    def time_json_naive(self, pods: int) -> None:
        """Dicts + json.dumps over the same items (the items' PodUsage objects given)."""
        naive_list(self.items, NOW_NS)


class TimeRenderTable:
    """The per-snapshot table a columnar list is written from, by cluster size."""

    params = [[1_500, 15_000, 150_000]]
    param_names = ["pods"]
    timeout = 300

    def setup(self, pods: int) -> None:
        self.snap, _ = cluster(pods)

    def time_table_c(self, pods: int) -> None:
        """Served pods, sort, names, usage strings, index: compiled kernels."""
        render.build_pod_table(fresh(self.snap), render.KERNELS_C or _render_py)

    def time_table_py(self, pods: int) -> None:
        """The same with the pure-Python twin."""
        render.build_pod_table(fresh(self.snap), _render_py)
