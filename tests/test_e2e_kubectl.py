"""End to end: real kubectl -> simulated kube-apiserver (aggregation) -> fastmetrics process.

The simulated cluster runs in this process on a background thread's event loop (so the test
can register the APIService); fastmetrics runs as a subprocess with the stock manifest flags.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from _e2e import running_stack

from fastmetrics.sim.run import SimulatedCluster

KUBECTL = shutil.which("kubectl")
MI = 1024 * 1024

pytestmark = pytest.mark.skipif(
    KUBECTL is None and os.environ.get("CI") != "true", reason="kubectl is not on PATH"
)


@dataclass
class Env:
    sim: SimulatedCluster
    url: str
    tmp: Path

    def kubectl(self, *args: str) -> str:
        assert KUBECTL is not None
        r = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.sim.admin_kubeconfig),
             "--cache-dir", str(self.tmp / "kube-cache"), *args],
            capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if KUBECTL is None:
        pytest.fail("kubectl is required under CI=true")
    tmp = tmp_path_factory.mktemp("e2e")
    with running_stack(tmp) as stack:
        yield Env(stack.sim, stack.url, tmp)


def _millicores(text: str) -> float:
    return float(text.removesuffix("m")) if text.endswith("m") else float(text) * 1000


def _mib(text: str) -> float:
    assert text.endswith("Mi"), text
    return float(text.removesuffix("Mi"))


def _close(actual: float, expected: float, slack: float) -> bool:
    return abs(actual - expected) <= max(0.2 * expected, slack)


def _rows(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    return [line.split() for line in lines[1:]]


def test_kubectl_top_node(env: Env) -> None:
    rows = {r[0]: r for r in _rows(env.kubectl("top", "node"))}
    assert set(rows) == {n.name for n in env.sim.cluster.nodes}
    for node in env.sim.cluster.nodes:
        row = rows[node.name]
        assert _close(_millicores(row[1]), node.cpu_nanocores / 1e6, 1), (row, node)
        assert _close(_mib(row[3]), node.memory_bytes / MI, 1), (row, node)


def test_kubectl_top_pod_all_namespaces(env: Env) -> None:
    rows = {(r[0], r[1]): r for r in _rows(env.kubectl("top", "pod", "-A"))}
    pods = env.sim.cluster.pods
    assert set(rows) == set(pods)
    for key, pod in pods.items():
        row = rows[key]
        assert _close(_millicores(row[2]), pod.cpu_nanocores / 1e6, 1), (row, pod)
        assert _close(_mib(row[3]), pod.memory_bytes / MI, 1), (row, pod)


def test_kubectl_top_pod_containers(env: Env) -> None:
    rows = {(r[0], r[1], r[2]): r for r in _rows(env.kubectl("top", "pod", "-A", "--containers"))}
    expected = {(ns, name, c.name): c for (ns, name), p in env.sim.cluster.pods.items()
                for c in p.containers}
    assert set(rows) == set(expected)
    for key, c in expected.items():
        row = rows[key]
        assert _close(_millicores(row[3]), c.cpu_nanocores / 1e6, 1), (row, c)
        assert _close(_mib(row[4]), c.memory_bytes / MI, 1), (row, c)


def test_kubectl_top_pod_label_selector(env: Env) -> None:
    pods = env.sim.cluster.pods
    namespace = next(ns for (ns, _), p in pods.items() if p.labels.get("app") == "web")
    rows = _rows(env.kubectl("top", "pod", "-n", namespace, "-l", "app=web"))
    expected = {name for (ns, name), p in pods.items()
                if ns == namespace and p.labels.get("app") == "web"}
    assert {r[0] for r in rows} == expected


def test_kubectl_get_nodemetrics_and_podmetrics(env: Env) -> None:
    rows = _rows(env.kubectl("get", "nodemetrics"))
    assert sorted(r[0] for r in rows) == sorted(n.name for n in env.sim.cluster.nodes)
    assert all(len(r) == 4 for r in rows)  # NAME CPU MEMORY WINDOW
    rows = _rows(env.kubectl("get", "podmetrics", "-A"))
    assert {(r[0], r[1]) for r in rows} == set(env.sim.cluster.pods)


def test_kubectl_get_raw_single_pod(env: Env) -> None:
    (ns, name), pod = next(iter(env.sim.cluster.pods.items()))
    doc = orjson.loads(env.kubectl(
        "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}"))
    assert doc["kind"] == "PodMetrics"
    assert doc["metadata"]["labels"] == pod.labels
    assert sorted(c["name"] for c in doc["containers"]) == sorted(c.name for c in pod.containers)


def test_direct_request_with_forged_user_is_anonymous(env: Env) -> None:
    # without a front-proxy client certificate the X-Remote-* headers are ignored: the
    # request is system:anonymous, which RBAC does not allow (more: test_e2e_security.py)
    base = env.url
    for path, message, details in (
            ("/apis/metrics.k8s.io/v1beta1/pods",
             'pods.metrics.k8s.io is forbidden: User \\"system:anonymous\\" cannot list '
             'resource \\"pods\\" in API group \\"metrics.k8s.io\\" at the cluster scope',
             '{"group":"metrics.k8s.io","kind":"pods"}'),
            ("/apis/metrics.k8s.io/v1beta1",
             'forbidden: User \\"system:anonymous\\" cannot get path '
             '\\"/apis/metrics.k8s.io/v1beta1\\"', "{}")):
        status, body = _get(base + path, {"X-Remote-User": "system:admin",
                                          "X-Remote-Group": "system:masters"})
        assert (status, body) == (403, (
            '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
            f'"message":"{message}","reason":"Forbidden","details":{details},"code":403}}\n'
        ).encode())
    status, body = _get(base + "/readyz")
    assert (status, body) == (200, b"ok")
