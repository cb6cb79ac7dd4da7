"""End to end with a cluster big enough for the columnar lists: 10 simulated nodes x 110 pods
behind the simulated kube-apiserver's aggregator, fastmetrics as a subprocess with the stock
flags, and real clients (kubectl, and HTTPS requests with the admin's token asking for JSON
and for protobuf).

The all-pods list (1,100 pods, over the 1,000-pod threshold: built in the render executor from
the snapshot's columns) must agree with itself across formats, with ``kubectl top``, and with
the single-pod GETs (built object by object).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _e2e import running_stack
from test_api_protobuf import decode, ns_of, usage_of

from fastmetrics.api.format import format_timestamp, format_window
from fastmetrics.api.handlers import OFFLOAD_MIN_PODS
from fastmetrics.sim.model import ClusterShape
from fastmetrics.sim.run import SimulatedCluster

KUBECTL = shutil.which("kubectl")
P = "/apis/metrics.k8s.io/v1beta1"
PB = "application/vnd.kubernetes.protobuf"
SHAPE = ClusterShape(nodes=10, pods_per_node=110, containers_per_pod=2)
S = 1_000_000_000

pytestmark = [
    pytest.mark.skipif(KUBECTL is None and os.environ.get("CI") != "true",
                       reason="kubectl is not on PATH"),
    pytest.mark.timeout(300),
]


@dataclass
class Env:
    sim: SimulatedCluster
    tmp: Path

    def kubectl(self, *args: str) -> str:
        assert KUBECTL is not None
        r = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.sim.admin_kubeconfig),
             "--cache-dir", str(self.tmp / "kube-cache"), *args],
            capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout

    def get(self, path: str, accept: str = "application/json") -> bytes:
        """GET through the aggregator as the cluster admin."""
        ctx = ssl.create_default_context(cafile=str(self.sim.api.ca_file))
        req = urllib.request.Request(self.sim.api.url + path, headers={
            "Accept": accept, "Authorization": f"Bearer {self.sim.api.admin_token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == accept
            return bytes(r.read())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if KUBECTL is None:
        pytest.fail("kubectl is required under CI=true")
    tmp = tmp_path_factory.mktemp("e2e-render")
    with running_stack(tmp, SHAPE) as stack:
        e = Env(stack.sim, tmp)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until (nearly) every pod has a baseline
            if len(json.loads(e.get(f"{P}/pods"))["items"]) >= OFFLOAD_MIN_PODS:
                break
            time.sleep(1)
        yield e
        assert "Request failed" not in stack.log


def _json_items(doc: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in doc["items"]}


def _snapshot_of(items: dict[tuple[str, str], Any]) -> set[tuple[str, str, Any]]:
    return {(ns, n, i["timestamp"]) for (ns, n), i in items.items()}


def test_all_pods_json_and_protobuf_agree(env: Env) -> None:
    for _ in range(5):  # the two requests must fall between the same two ticks
        doc = json.loads(env.get(f"{P}/pods"))
        pb = decode(env.get(f"{P}/pods", PB), "PodMetricsList")
        items = _json_items(doc)
        if len(pb.items) == len(items) and all(
                (p.metadata.namespace, p.metadata.name) in items
                and items[p.metadata.namespace, p.metadata.name]["timestamp"]
                == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.timestamp.seconds))
                for p in pb.items):
            break
        time.sleep(1)
    else:
        pytest.fail("no two consecutive lists saw the same snapshot")
    assert len(items) >= OFFLOAD_MIN_PODS
    keys = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in doc["items"]]
    assert keys == sorted(keys)  # namespace, then name
    assert [(p.metadata.namespace, p.metadata.name) for p in pb.items] == keys
    for p in pb.items:
        j = items[p.metadata.namespace, p.metadata.name]
        assert dict(p.metadata.labels) == j["metadata"].get("labels", {})
        assert format_window(p.window.duration) == j["window"]
        assert format_timestamp(ns_of(p.timestamp)) == j["timestamp"]
        assert [(c.name, usage_of(c.usage)) for c in p.containers] == [
            (c["name"], c["usage"]) for c in j["containers"]]


def test_list_items_equal_single_gets(env: Env) -> None:
    rng = random.Random(7)
    for _ in range(5):
        items = _json_items(json.loads(env.get(f"{P}/pods")))
        sample = rng.sample(sorted(items), 25)
        singles = {k: json.loads(env.get(f"{P}/namespaces/{k[0]}/pods/{k[1]}")) for k in sample}
        if all(singles[k]["timestamp"] == items[k]["timestamp"] for k in sample):
            break
    else:
        pytest.fail("no list and GETs saw the same snapshot")
    for k in sample:
        one = singles[k]
        assert (one.pop("kind"), one.pop("apiVersion")) == ("PodMetrics", "metrics.k8s.io/v1beta1")
        one["metadata"].pop("creationTimestamp")
        listed = dict(items[k])
        listed["metadata"] = {f: v for f, v in listed["metadata"].items()
                              if f != "creationTimestamp"}
        assert one == listed


def test_kubectl_top_lists_every_pod(env: Env) -> None:
    for _ in range(5):
        before = _snapshot_of(_json_items(json.loads(env.get(f"{P}/pods"))))
        out = env.kubectl("top", "pod", "-A", "--no-headers")
        after = _snapshot_of(_json_items(json.loads(env.get(f"{P}/pods"))))
        if before == after:
            break
    else:
        pytest.fail("kubectl top did not see one snapshot")
    rows = [line.split() for line in out.strip().splitlines()]
    assert {(r[0], r[1]) for r in rows} == {(ns, n) for ns, n, _ in after}
    assert all(r[2].endswith("m") and r[3].endswith("Mi") for r in rows)
