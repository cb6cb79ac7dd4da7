"""End to end: the official Python ``kubernetes`` client -> simulated kube-apiserver
(aggregation) -> fastmetrics process, listing metrics.k8s.io objects with the sim's admin
kubeconfig (``CustomObjectsApi``, as the client's own examples read metrics).

The setup is that of ``test_e2e_kubectl.py`` (the simulated cluster on a background thread's
event loop, fastmetrics as a subprocess with the stock manifest flags), minus kubectl.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from fastmetrics.sim.model import ClusterShape
from fastmetrics.sim.run import SimulatedCluster

kubernetes = pytest.importorskip("kubernetes")

pytestmark = pytest.mark.timeout(180)

GROUP, VERSION = "metrics.k8s.io", "v1beta1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _readyz(url: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


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
    tmp = tmp_path_factory.mktemp("e2e-k8s-client")
    lt = _LoopThread()
    sim = SimulatedCluster(ClusterShape(nodes=3, pods_per_node=4, containers_per_pod=2),
                           tmp / "sim", stats_interval_s=1.0)
    proc: subprocess.Popen[bytes] | None = None
    try:
        lt.run(sim.start())
        port = _free_port()
        with (tmp / "fastmetrics.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fastmetrics",
                 f"--kubeconfig={sim.metrics_server_kubeconfig}", "--metric-resolution=10s",
                 "--kubelet-request-timeout=5s",
                 "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
                 "--kubelet-use-node-status-port", f"--secure-port={port}",
                 "--bind-address=127.0.0.1", f"--cert-dir={tmp / 'certs'}"],
                stdout=log, stderr=subprocess.STDOUT)

        async def register() -> None:
            sim.api.register_api_service(url=f"https://127.0.0.1:{port}",
                                         insecure_skip_tls_verify=True)

        lt.run(register())
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "fastmetrics.log").read_text()
            try:
                status = _readyz(f"https://127.0.0.1:{port}/readyz")
            except OSError:
                status = 0
            if status == 200:
                break
            assert time.monotonic() < deadline, (
                "fastmetrics not ready in 60 s:\n" + (tmp / "fastmetrics.log").read_text())
            time.sleep(0.5)
        yield Env(sim)
    finally:
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # let the simulated apiserver see the client's connections close (TLS shutdown needs a
        # few loop turns) before it stops
        lt.run(asyncio.sleep(0.5))
        lt.run(sim.stop())
        lt.close()


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
