"""End to end: the official Python ``kubernetes`` client -> simulated kube-apiserver
(aggregation) -> fastmetrics process, listing metrics.k8s.io objects with the sim's admin
kubeconfig (``CustomObjectsApi``, as the client's own examples read metrics).

The stack is tests/_e2e.py's, shared with ``test_e2e_kubectl.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from _e2e import running_stack

from fastmetrics.sim.run import SimulatedCluster

kubernetes = pytest.importorskip("kubernetes")

pytestmark = pytest.mark.timeout(180)

GROUP, VERSION = "metrics.k8s.io", "v1beta1"


@dataclass
class Env:
    sim: SimulatedCluster

    @contextmanager
    def api(self) -> Iterator[Any]:
        """A ``CustomObjectsApi`` on a client of its own, closed on exit."""
        api_client = kubernetes.config.new_client_from_config(
            config_file=str(self.sim.admin_kubeconfig))
        try:
            yield kubernetes.client.CustomObjectsApi(api_client)
        finally:
            _close(api_client)


def _close(api_client: Any) -> None:
    """Close the client's thread pool and its kept-alive connections."""
    api_client.close()
    api_client.rest_client.pool_manager.clear()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running_stack(tmp_path_factory.mktemp("e2e-k8s-client")) as stack:
        yield Env(stack.sim)


def test_load_kube_config_lists_node_metrics(env: Env) -> None:
    # the documented entry point: load_kube_config configures the default client
    kubernetes.config.load_kube_config(config_file=str(env.sim.admin_kubeconfig))
    api_client = kubernetes.client.ApiClient()  # the default configuration just loaded
    try:
        doc = kubernetes.client.CustomObjectsApi(api_client).list_cluster_custom_object(
            GROUP, VERSION, "nodes", _request_timeout=30)
    finally:
        _close(api_client)
    assert (doc["kind"], doc["apiVersion"]) == ("NodeMetricsList", f"{GROUP}/{VERSION}")
    assert sorted(i["metadata"]["name"] for i in doc["items"]) == sorted(
        n.name for n in env.sim.cluster.nodes)
    for item in doc["items"]:
        assert set(item["usage"]) == {"cpu", "memory"}
        assert item["window"].endswith("s")


def test_list_pod_metrics_all_namespaces(env: Env) -> None:
    with env.api() as api:
        doc = api.list_cluster_custom_object(GROUP, VERSION, "pods", _request_timeout=30)
    assert doc["kind"] == "PodMetricsList"
    got = {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in doc["items"]}
    pods = env.sim.cluster.pods
    assert set(got) == set(pods)
    for key, pod in pods.items():
        item = got[key]
        assert item["metadata"].get("labels", {}) == dict(pod.labels)
        assert sorted(c["name"] for c in item["containers"]) == sorted(
            c.name for c in pod.containers)


def test_namespaced_list_with_label_selector_and_get(env: Env) -> None:
    pods = env.sim.cluster.pods
    (namespace, name), pod = next(
        (k, p) for k, p in pods.items() if p.labels.get("app") == "web")
    with env.api() as api:
        doc = api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "pods", label_selector="app=web", _request_timeout=30)
        one = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "pods", name,
                                               _request_timeout=30)
    assert {i["metadata"]["name"] for i in doc["items"]} == {
        n for (ns, n), p in pods.items() if ns == namespace and p.labels.get("app") == "web"}
    assert (one["kind"], one["metadata"]["name"]) == ("PodMetrics", name)
    assert one["metadata"]["labels"] == dict(pod.labels)
