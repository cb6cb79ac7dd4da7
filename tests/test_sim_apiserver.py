"""Tests for the kube-apiserver stand-in of the cluster simulator (real kubectl and aiohttp)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from fastmetrics.sim.apiserver import (
    ADMIN_USER,
    AGGREGATED_V2,
    METRICS_SERVER_USER,
    ApiServer,
    Attributes,
    FieldSelector,
    LabelSelector,
    Policy,
    Rule,
    SelectorError,
    default_rules,
    human_duration,
    parse_request_info,
)
from fastmetrics.sim.certs import CertAuthority, KeyPair, client_context, server_context
from fastmetrics.sim.kubeconfig import write_kubeconfig
from fastmetrics.sim.model import Cluster, ClusterShape

JSON = dict[str, Any]
META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
META = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"

# ============================================================================ fixtures


@dataclass
class Env:
    api: ApiServer
    cluster: Cluster
    dir: Path
    kubeconfig: Path
    viewer_token: str = "viewer-token"
    metrics_reader_token: str = "metrics-reader-token"
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    def session(self, token: str | None = None, pair: KeyPair | None = None,
                headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        s = aiohttp.ClientSession(
            self.api.url, headers=h,
            connector=aiohttp.TCPConnector(ssl=client_context(self.api.ca_file, pair)))
        self.sessions.append(s)
        return s

    def admin(self) -> aiohttp.ClientSession:
        return self.session(self.api.admin_token)


def small_cluster(history: int | None = None) -> Cluster:
    shape = ClusterShape(nodes=3, pods_per_node=4, seed=7)
    if history is None:
        return Cluster(shape)
    size: int = history

    class Small(Cluster):
        HISTORY = size

    return Small(shape)


async def make_env(tmp_path: Path, cluster: Cluster, **kw: Any) -> Env:
    pki = tmp_path / "pki"
    api = ApiServer(cluster, tmp_path / "certs", cluster_ca=CertAuthority(pki, "cluster"),
                    front_proxy_ca=CertAuthority(pki, "front-proxy"),
                    kubelet_port=kw.pop("kubelet_port", 10250),
                    bookmark_interval=kw.pop("bookmark_interval", 0.2), **kw)
    # a user with no grants, and one allowed to read the metrics API
    api.add_token("viewer-token", "viewer", ("viewers",))
    api.add_token("metrics-reader-token", "reader", ("readers",))
    api.policy.rules.append(Rule("metrics-reader", ("get", "list"), groups=("readers",),
                                 api_groups=("metrics.k8s.io",), resources=("nodes", "pods")))
    await api.start()
    kc = write_kubeconfig(tmp_path / "admin.kubeconfig", api.url, api.ca_file,
                          token=api.admin_token)
    return Env(api, cluster, tmp_path, kc)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = await make_env(tmp_path, small_cluster())
    try:
        yield e
    finally:
        for s in e.sessions:
            await s.close()
        await e.api.stop()


async def read_lines(resp: aiohttp.ClientResponse, n: int, timeout: float = 5.0) -> list[JSON]:
    """Up to ``n`` newline-delimited JSON objects from a watch stream (bounded in time)."""
    out: list[JSON] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(n):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            line = await asyncio.wait_for(resp.content.readline(), remaining)
        except TimeoutError:
            break
        if not line:
            break
        out.append(json.loads(line))
    return out


# ============================================================================ kubectl

KUBECTL = shutil.which("kubectl")


def need_kubectl() -> str:
    if KUBECTL is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is not on PATH, but CI=true requires it")
        pytest.skip("kubectl is not on PATH")
    return KUBECTL


def kubectl_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(home)
    return env


async def kubectl(e: Env, *args: str, kubeconfig: Path | None = None,
                  timeout: float = 60.0) -> tuple[int, str, str]:
    exe = need_kubectl()
    home = e.dir / "home"
    home.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        exe, "--kubeconfig", str(kubeconfig or e.kubeconfig), "--cache-dir",
        str(home / "cache"), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=kubectl_env(home))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


@pytest.mark.parametrize("aggregated", [True, False], ids=["aggregated-discovery", "legacy"])
async def test_kubectl_get_nodes(tmp_path: Path, aggregated: bool) -> None:
    need_kubectl()
    e = await make_env(tmp_path, small_cluster(), aggregated_discovery=aggregated)
    try:
        e.cluster.set_ready("sim-node-00002", False)
        e.cluster.set_node_labels("sim-node-00001", {
            **e.cluster.node_by_name["sim-node-00001"].labels,
            "node-role.kubernetes.io/control-plane": ""})
        rc, out, err = await kubectl(e, "get", "nodes")
        assert rc == 0, err
        rows = table_rows(out)
        assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        assert rows[1:] == [
            ["sim-node-00000", "Ready", "<none>", "30d", "v1.32.0"],
            ["sim-node-00001", "Ready", "control-plane", "30d", "v1.32.0"],
            ["sim-node-00002", "NotReady", "<none>", "30d", "v1.32.0"],
        ]
        rc, out, err = await kubectl(e, "get", "nodes", "-o", "wide")
        assert rc == 0, err
        assert table_rows(out)[0][:6] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION",
                                          "INTERNAL-IP"]
        assert table_rows(out)[1][5] == "127.0.1.1"
        kinds = {k.split()[0] for k in e.api.counts}
        assert "list" in kinds
    finally:
        await e.api.stop()


async def test_per_node_kubelet_port(tmp_path: Path) -> None:
    e = await make_env(tmp_path, small_cluster(), kubelet_port=lambda n: 20000 + n.index)
    try:
        async with e.admin().get("/api/v1/nodes") as r:
            items = (await r.json())["items"]
        assert [n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] for n in items] == [
            20000, 20001, 20002]
    finally:
        for sess in e.sessions:
            await sess.close()
        await e.api.stop()


async def test_kubectl_get_nodes_json(env: Env) -> None:
    rc, out, err = await kubectl(env, "get", "nodes", "-o", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "List"
    assert [n["metadata"]["name"] for n in doc["items"]] == [
        "sim-node-00000", "sim-node-00001", "sim-node-00002"]
    node = doc["items"][0]
    assert node["kind"] == "Node" and node["apiVersion"] == "v1"
    assert node["status"]["addresses"] == [{"type": "InternalIP", "address": "127.0.1.1"},
                                           {"type": "Hostname", "address": "sim-node-00000"}]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.32.0"
    assert node["status"]["allocatable"]["cpu"] == "8"
    assert node["status"]["capacity"]["memory"] == "32Gi"
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "sim-node-00000"


async def test_kubectl_get_pods_all_namespaces(env: Env) -> None:
    rc, out, err = await kubectl(env, "get", "pods", "-A")
    assert rc == 0, err
    rows = table_rows(out)
    assert rows[0] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    got = {(r[0], r[1]) for r in rows[1:]}
    assert got == set(env.cluster.pods)
    assert all(r[2] == "2/2" and r[3] == "Running" and r[4] == "0" for r in rows[1:])


async def test_kubectl_get_pods_label_selector(env: Env) -> None:
    want = {name for (ns, name), p in env.cluster.pods.items()
            if ns == "default" and p.labels["app"] == "web"}
    assert want, "the seed should put a web pod in default"
    rc, out, err = await kubectl(env, "get", "pods", "-n", "default", "-l", "app=web")
    assert rc == 0, err
    rows = table_rows(out)
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert {r[0] for r in rows[1:]} == want
    rc, out, err = await kubectl(env, "get", "pods", "-A", "-l", "app in (web,api),tier")
    assert rc == 0, err
    assert {r[1] for r in table_rows(out)[1:]} == {
        name for (_, name), p in env.cluster.pods.items() if p.labels["app"] in ("web", "api")}


async def test_kubectl_get_raw(env: Env) -> None:
    rc, out, err = await kubectl(env, "get", "--raw", "/version")
    assert rc == 0, err
    version = json.loads(out)
    assert version["gitVersion"] == "v1.32.0"
    assert (version["major"], version["minor"]) == ("1", "32")
    rc, out, err = await kubectl(env, "get", "--raw", "/apis")
    assert rc == 0, err
    groups = json.loads(out)
    assert groups["kind"] == "APIGroupList"
    assert {g["name"] for g in groups["groups"]} >= {"authentication.k8s.io",
                                                     "authorization.k8s.io"}
    rc, out, err = await kubectl(env, "version", "-o", "json")
    assert rc == 0, err
    assert json.loads(out)["serverVersion"]["gitVersion"] == "v1.32.0"


async def test_kubectl_field_selector(env: Env) -> None:
    (ns, name), _ = sorted(env.cluster.pods.items())[0]
    env.cluster.set_phase(ns, name, "Succeeded")
    rc, out, err = await kubectl(env, "get", "pods", "-A", "--field-selector",
                                 "status.phase=Running")
    assert rc == 0, err
    names = {r[1] for r in table_rows(out)[1:]}
    assert name not in names
    assert len(names) == len(env.cluster.pods) - 1
    rc, out, err = await kubectl(env, "get", "pods", "-A", "--field-selector",
                                 "status.phase!=Running")
    assert rc == 0, err
    rows = table_rows(out)
    assert [r[1] for r in rows[1:]] == [name]
    assert rows[1][3] == "Completed"
    node = env.cluster.pods[(ns, name)].node
    rc, out, err = await kubectl(env, "get", "pods", "-A", "--field-selector",
                                 f"spec.nodeName={node},metadata.namespace={ns}")
    assert rc == 0, err
    assert {(r[0], r[1]) for r in table_rows(out)[1:]} == {
        k for k, p in env.cluster.pods.items() if p.node == node and k[0] == ns}
    rc, out, err = await kubectl(env, "get", "pods", "-A", "--field-selector", "spec.bogus=1")
    assert rc != 0
    assert "field label not supported: spec.bogus" in err


async def read_until(stream: asyncio.StreamReader, done: Callable[[str], bool],
                     timeout: float, text: str = "") -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(10_000):
        if done(text):
            return text
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            chunk = await asyncio.wait_for(stream.read(65536), remaining)
        except TimeoutError:
            break
        if not chunk:
            break
        text += chunk.decode()
    return text


@pytest.mark.parametrize("events", [False, True], ids=["rows", "output-watch-events"])
async def test_kubectl_watch(env: Env, events: bool) -> None:
    exe = need_kubectl()
    home = env.dir / "home"
    home.mkdir(exist_ok=True)
    victim_ns, victim = sorted(env.cluster.pods)[-1]
    proc = await asyncio.create_subprocess_exec(
        exe, "--kubeconfig", str(env.kubeconfig), "--cache-dir", str(home / "cache"),
        "get", "pods", "-A", "-w", "--request-timeout=3s",
        *(["--output-watch-events"] if events else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=kubectl_env(home))
    try:
        assert proc.stdout is not None
        n = len(env.cluster.pods)
        text = await read_until(proc.stdout, lambda t: t.count("\n") >= n + 1, 30)
        assert text.count("\n") >= n + 1, text
        assert text.count(victim) == 1
        env.cluster.add_pod("default", "watched-pod-1", "sim-node-00000", {"app": "watched"},
                            ["main"])
        env.cluster.delete_pod(victim_ns, victim)
        text = await read_until(proc.stdout,
                                lambda t: "watched-pod-1" in t and t.count(victim) >= 2, 10,
                                text)
        added = [line.split() for line in text.splitlines() if "watched-pod-1" in line]
        deleted = [line.split() for line in text.splitlines() if victim in line]
        if events:
            assert added[0][:3] == ["ADDED", "default", "watched-pod-1"], text
            assert [d[0] for d in deleted] == ["ADDED", "DELETED"], text
        else:
            assert added[0][:2] == ["default", "watched-pod-1"], text
            assert len(deleted) == 2, text
        # the header is printed once: watch events after the first carry no column definitions
        assert text.count("NAMESPACE") == 1, text
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_kubectl_client_certificate_and_forbidden(env: Env) -> None:
    pair = env.api.issue_client_cert("jane", "jane", ("system:masters",))
    kc = write_kubeconfig(env.dir / "jane.kubeconfig", env.api.url, env.api.ca_file,
                          client_cert=pair.cert_file, client_key=pair.key_file,
                          user_name="jane")
    rc, out, err = await kubectl(env, "get", "nodes", kubeconfig=kc)
    assert rc == 0, err
    assert "sim-node-00000" in out
    rc, out, err = await kubectl(env, "auth", "whoami", "-o", "json", kubeconfig=kc)
    assert rc == 0, err
    assert json.loads(out)["status"]["userInfo"]["username"] == "jane"

    viewer = write_kubeconfig(env.dir / "viewer.kubeconfig", env.api.url, env.api.ca_file,
                              token=env.viewer_token, user_name="viewer")
    rc, out, err = await kubectl(env, "get", "nodes", kubeconfig=viewer)
    assert rc != 0
    assert ('Error from server (Forbidden): nodes is forbidden: User "viewer" cannot list '
            'resource "nodes" in API group "" at the cluster scope') in err
    rc, out, err = await kubectl(env, "get", "pods", "-n", "shop", kubeconfig=viewer)
    assert ('pods is forbidden: User "viewer" cannot list resource "pods" in API group "" '
            'in the namespace "shop"') in err
    # admin impersonating the viewer is denied the same way
    rc, out, err = await kubectl(env, "get", "nodes", "--as=viewer")
    assert rc != 0 and 'User "viewer" cannot list resource "nodes"' in err
    rc, out, err = await kubectl(env, "auth", "can-i", "list", "nodes", kubeconfig=viewer)
    assert out.strip() == "no"
    rc, out, err = await kubectl(env, "auth", "can-i", "list", "nodes")
    assert out.strip() == "yes"


async def test_kubectl_wrong_token_is_unauthorized(env: Env) -> None:
    bad = write_kubeconfig(env.dir / "bad.kubeconfig", env.api.url, env.api.ca_file,
                           token="not-a-token")
    rc, _, err = await kubectl(env, "get", "--raw", "/api/v1/nodes", kubeconfig=bad)
    assert rc != 0
    assert "Unauthorized" in err


# ============================================================================ authn / authz


async def test_unauthenticated_and_bad_token_get_401(env: Env) -> None:
    for s in (env.session(), env.session("wrong")):
        async with s.get("/api/v1/nodes") as r:
            assert r.status == 401
            assert await r.json() == {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


async def test_client_certificates(env: Env) -> None:
    pair = env.api.issue_client_cert("ops", "ops-user", ("ops", "system:masters"))
    async with env.session(pair=pair).get("/apis/authentication.k8s.io/v1") as r:
        assert r.status == 200
    async with env.session(pair=pair).post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}) as r:
        info = (await r.json())["status"]["userInfo"]
    assert info == {"username": "ops-user",
                    "groups": ["ops", "system:masters", "system:authenticated"]}
    # a certificate from another CA (here the front-proxy CA) fails the handshake
    foreign = env.api.front_proxy_ca.issue("stranger", "stranger", client=True)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        async with env.session(pair=foreign).get("/version") as r:
            await r.read()


async def test_forbidden_status_objects(env: Env) -> None:
    s = env.session(env.viewer_token)
    async with s.get("/api/v1/nodes") as r:
        assert r.status == 403
        assert await r.json() == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'nodes is forbidden: User "viewer" cannot list resource "nodes" in API '
                       'group "" at the cluster scope',
            "reason": "Forbidden", "details": {"kind": "nodes"}, "code": 403}
    async with s.get("/api/v1/namespaces/shop/pods/x") as r:
        body = await r.json()
        assert r.status == 403
        assert body["message"] == ('pods "x" is forbidden: User "viewer" cannot get resource '
                                   '"pods" in API group "" in the namespace "shop"')
        assert body["details"] == {"name": "x", "kind": "pods"}
    async with s.get("/apis/metrics.k8s.io/v1beta1/nodes") as r:
        # not registered: authorization happens first anyway
        assert r.status == 403
        assert (await r.json())["message"] == (
            'nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in '
            'API group "metrics.k8s.io" at the cluster scope')
    async with s.get("/metrics") as r:
        assert r.status == 403
        assert (await r.json())["message"] == (
            'forbidden: User "viewer" cannot get path "/metrics"')
    # discovery is open to every authenticated user
    async with s.get("/apis") as r:
        assert r.status == 200


async def test_policy_callable(tmp_path: Path) -> None:
    seen: list[Attributes] = []

    def decide(a: Attributes) -> bool | tuple[bool, str] | None:
        seen.append(a)
        if a.user == "viewer" and a.resource == "nodes":
            return a.verb in ("list", "get")
        if a.user == "viewer" and a.resource == "pods":
            return False, "pods are secret"
        return None

    e = await make_env(tmp_path, small_cluster(), policy=Policy(authorizer=decide))
    try:
        async with e.session(e.viewer_token) as s:
            async with s.get("/api/v1/nodes") as r:
                assert r.status == 200
            async with s.get("/api/v1/nodes/sim-node-00001") as r:
                assert r.status == 200
            async with s.get("/api/v1/nodes?watch=1&timeoutSeconds=1") as r:
                assert r.status == 403
            async with s.get("/api/v1/pods") as r:
                assert r.status == 403
                assert (await r.json())["message"].endswith(": pods are secret")
        assert ("viewer", "get", "nodes", "sim-node-00001") in {
            (a.user, a.verb, a.resource, a.name) for a in seen}
    finally:
        await e.api.stop()


async def test_metrics_server_service_account_rbac(env: Env) -> None:
    s = env.session(env.api.metrics_server_token)
    for path, status in [
        ("/api/v1/nodes", 200),
        ("/api/v1/pods?fieldSelector=status.phase%3DRunning", 200),
        ("/api/v1/nodes?watch=true&timeoutSeconds=1", 200),
        ("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication", 200),
        ("/api/v1/namespaces/kube-system/configmaps"
         "?fieldSelector=metadata.name%3Dextension-apiserver-authentication", 200),
        ("/api/v1/namespaces/kube-system/configmaps", 403),
        ("/api/v1/namespaces/default/configmaps/kube-root-ca.crt", 403),
        ("/api/v1/namespaces", 403),
        ("/apis/metrics.k8s.io/v1beta1/nodes", 403),
    ]:
        async with s.get(path) as r:
            assert r.status == status, (path, await r.text())
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": env.api.admin_token}}
    async with s.post("/apis/authentication.k8s.io/v1/tokenreviews", json=review) as r:
        assert r.status == 201
    async with env.session(env.viewer_token).post(
            "/apis/authentication.k8s.io/v1/tokenreviews", json=review) as r:
        assert r.status == 403
        assert (await r.json())["message"] == (
            'tokenreviews.authentication.k8s.io is forbidden: User "viewer" cannot create '
            'resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope')


async def test_configmap_contents(env: Env) -> None:
    s = env.session(env.api.metrics_server_token)
    async with s.get("/api/v1/namespaces/kube-system/configmaps/"
                     "extension-apiserver-authentication") as r:
        cm = await r.json()
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["namespace"] == "kube-system"
    data = cm["data"]
    assert data["client-ca-file"] == env.api.cluster_ca.cert_pem.decode()
    assert data["requestheader-client-ca-file"] == env.api.front_proxy_ca.cert_pem.decode()
    assert data["client-ca-file"] != data["requestheader-client-ca-file"]
    assert json.loads(data["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(data["requestheader-group-headers"]) == ["X-Remote-Group"]
    assert json.loads(data["requestheader-extra-headers-prefix"]) == ["X-Remote-Extra-"]
    async with s.get("/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3D"
                     "extension-apiserver-authentication") as r:
        lst = await r.json()
    assert lst["kind"] == "ConfigMapList"
    assert [i["data"] for i in lst["items"]] == [data]
    assert "kind" not in lst["items"][0]
    async with s.get("/api/v1/namespaces/kube-system/configmaps/"
                     "extension-apiserver-authentication") as r:
        assert (await r.json())["kind"] == "ConfigMap"  # listing did not alter the object
    rv = lst["metadata"]["resourceVersion"]
    async with s.get("/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3D"
                     f"extension-apiserver-authentication&watch=1&resourceVersion={rv}"
                     "&allowWatchBookmarks=true&timeoutSeconds=2") as r:
        assert r.status == 200
        events = await read_lines(r, 1)
    assert events and events[0]["type"] == "BOOKMARK"


async def test_token_review_round_trip(env: Env) -> None:
    s = env.session(env.api.metrics_server_token)
    url = "/apis/authentication.k8s.io/v1/tokenreviews"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": env.api.metrics_server_token}}
    async with s.post(url, json=body) as r:
        assert r.status == 201
        review = await r.json()
    assert review["kind"] == "TokenReview"
    assert review["apiVersion"] == "authentication.k8s.io/v1"
    assert review["status"]["authenticated"] is True
    user = review["status"]["user"]
    assert user["username"] == METRICS_SERVER_USER
    assert user["groups"] == ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                              "system:authenticated"]
    async with s.post(url, json={"spec": {"token": "nope"}}) as r:
        assert r.status == 201
        review = await r.json()
    assert review["status"] == {"user": {}}
    async with s.post(url, json={"spec": {"token": env.api.admin_token,
                                          "audiences": ["aud-1"]}}) as r:
        review = await r.json()
    assert review["status"]["user"]["username"] == ADMIN_USER
    assert "system:masters" in review["status"]["user"]["groups"]
    assert review["status"]["audiences"] == ["aud-1"]
    async with s.post(url, json={"spec": {}}) as r:
        assert r.status == 422
    assert env.api.counts["tokenreviews"] == 4
    assert [t.get("token") for t in env.api.token_reviews][:2] == [
        env.api.metrics_server_token, "nope"]


async def test_subject_access_review_round_trip(env: Env) -> None:
    s = env.session(env.api.metrics_server_token)
    url = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

    async def review(spec: JSON) -> JSON:
        async with s.post(url, json={"apiVersion": "authorization.k8s.io/v1",
                                     "kind": "SubjectAccessReview", "spec": spec}) as r:
            assert r.status == 201, await r.text()
            out: JSON = await r.json()
            assert out["kind"] == "SubjectAccessReview"
            assert out["spec"] == spec
            return out

    ra = {"verb": "list", "group": "metrics.k8s.io", "version": "v1beta1", "resource": "nodes"}
    out = await review({"user": "reader", "groups": ["readers", "system:authenticated"],
                        "resourceAttributes": ra})
    assert out["status"]["allowed"] is True
    assert "metrics-reader" in out["status"]["reason"]
    out = await review({"user": "viewer", "groups": ["viewers"], "resourceAttributes": ra})
    assert out["status"] == {"allowed": False}
    out = await review({"user": "someone", "groups": ["system:masters"],
                        "resourceAttributes": {**ra, "verb": "delete"}})
    assert out["status"] == {"allowed": True}
    out = await review({"user": "x", "groups": ["system:authenticated"],
                        "nonResourceAttributes": {"path": "/apis", "verb": "get"}})
    assert out["status"]["allowed"] is True
    out = await review({"user": "x", "nonResourceAttributes": {"path": "/metrics",
                                                                "verb": "get"}})
    assert out["status"]["allowed"] is False
    async with s.post(url, json={"spec": {"resourceAttributes": ra}}) as r:
        assert r.status == 422
    assert env.api.counts["subjectaccessreviews"] == 6
    assert len(env.api.subject_access_reviews) == 6


# ============================================================================ lists and objects


async def test_get_single_objects_and_404(env: Env) -> None:
    s = env.admin()
    (ns, name), pod = sorted(env.cluster.pods.items())[0]
    async with s.get(f"/api/v1/namespaces/{ns}/pods/{name}") as r:
        obj = await r.json()
    assert obj["kind"] == "Pod" and obj["apiVersion"] == "v1"
    assert obj["metadata"]["uid"] == pod.uid
    assert obj["metadata"]["resourceVersion"] == str(pod.resource_version)
    assert obj["spec"]["nodeName"] == pod.node
    assert [c["name"] for c in obj["spec"]["containers"]] == [c.name for c in pod.containers]
    assert all(c["image"] for c in obj["spec"]["containers"])
    assert obj["status"]["phase"] == "Running"
    assert obj["status"]["podIP"].startswith("10.")
    async with s.get(f"/api/v1/namespaces/{ns}/pods/nope") as r:
        assert r.status == 404
        assert await r.json() == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'pods "nope" not found', "reason": "NotFound",
            "details": {"name": "nope", "kind": "pods"}, "code": 404}
    async with s.get("/api/v1/nodes/sim-node-00001", headers={"Accept": META}) as r:
        meta = await r.json()
    assert meta["kind"] == "PartialObjectMetadata"
    assert meta["apiVersion"] == "meta.k8s.io/v1"
    assert set(meta) == {"kind", "apiVersion", "metadata"}
    assert meta["metadata"]["name"] == "sim-node-00001"
    async with s.get("/api/v1/nodes/sim-node-00001", headers={"Accept": META_LIST}) as r:
        assert r.status == 406
    async with s.get("/api/v1/nodes", headers={"Accept": META}) as r:
        assert r.status == 406
    async with s.get("/api/v1/namespaces/shop") as r:
        assert (await r.json())["status"]["phase"] == "Active"
    async with s.get("/api/v1/frobs") as r:
        assert r.status == 404
    async with s.delete("/api/v1/nodes/sim-node-00001") as r:
        assert r.status == 405


async def test_discovery_documents(env: Env) -> None:
    s = env.admin()
    async with s.get("/api") as r:
        doc = await r.json()
    assert doc["kind"] == "APIVersions" and doc["versions"] == ["v1"]
    async with s.get("/api/v1") as r:
        doc = await r.json()
    names = {res["name"]: res for res in doc["resources"]}
    assert {"nodes", "pods", "configmaps", "namespaces"} <= set(names)
    assert names["pods"]["namespaced"] and not names["nodes"]["namespaced"]
    assert "watch" in names["pods"]["verbs"]
    for group in ("authentication.k8s.io", "authorization.k8s.io"):
        async with s.get(f"/apis/{group}/v1") as r:
            assert (await r.json())["groupVersion"] == f"{group}/v1"
    for path in ("/api", "/apis"):
        async with s.get(path, headers={"Accept": AGGREGATED_V2 + ",application/json"}) as r:
            assert r.headers["Content-Type"] == AGGREGATED_V2
            doc = await r.json(content_type=None)
            etag = r.headers["ETag"]
        assert doc["kind"] == "APIGroupDiscoveryList"
        assert doc["apiVersion"] == "apidiscovery.k8s.io/v2"
        async with s.get(path, headers={"Accept": AGGREGATED_V2,
                                        "If-None-Match": etag}) as r:
            assert r.status == 304
    async with s.get("/api", headers={"Accept": AGGREGATED_V2}) as r:
        core = (await r.json(content_type=None))["items"][0]
    resources = {x["resource"]: x for x in core["versions"][0]["resources"]}
    assert resources["nodes"]["scope"] == "Cluster"
    assert resources["pods"]["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}


async def test_list_paging(env: Env) -> None:
    s = env.admin()
    async with s.get("/api/v1/pods") as r:
        full = await r.json()
    assert full["kind"] == "PodList"
    assert "kind" not in full["items"][0]
    all_names = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in full["items"]]
    assert all_names == sorted(all_names, key=lambda k: f"{k[0]}/{k[1]}")
    assert len(all_names) == 12
    rv = full["metadata"]["resourceVersion"]
    pages: list[JSON] = []
    cont = ""
    for _ in range(10):
        q = "limit=5" + (f"&continue={cont}" if cont else "")
        async with s.get(f"/api/v1/pods?{q}") as r:
            assert r.status == 200
            page = await r.json()
        pages.append(page)
        cont = page["metadata"].get("continue", "")
        if not cont:
            break
    assert [len(p["items"]) for p in pages] == [5, 5, 2]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [7, 2, None]
    assert all(p["metadata"]["resourceVersion"] == rv for p in pages)
    paged = [(p["metadata"]["namespace"], p["metadata"]["name"])
             for page in pages for p in page["items"]]
    assert paged == all_names
    # with a selector: no remainingItemCount; pages fill up to the limit
    async with s.get("/api/v1/pods?limit=2&labelSelector=tier%3Dbackend") as r:
        page = await r.json()
    assert len(page["items"]) == 2 and "remainingItemCount" not in page["metadata"]
    async with s.get("/api/v1/pods?continue=garbage") as r:
        assert r.status == 400
    async with s.get(f"/api/v1/pods?continue={pages[0]['metadata']['continue']}"
                     f"&resourceVersion={rv}") as r:
        assert r.status == 400
    # namespaced paging
    async with s.get("/api/v1/namespaces/default/pods?limit=1") as r:
        page = await r.json()
    in_default = sum(1 for ns, _ in all_names if ns == "default")
    assert page["metadata"]["remainingItemCount"] == in_default - 1


async def test_continue_pages_show_the_first_pages_state(env: Env) -> None:
    s = env.admin()
    async with s.get("/api/v1/pods?limit=4") as r:
        first = await r.json()
    rv = first["metadata"]["resourceVersion"]
    seen = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in first["items"]}
    later = sorted(set(env.cluster.pods) - seen)
    env.cluster.delete_pod(*later[0])                     # still listed: deleted after rv
    env.cluster.set_phase(*later[1], "Failed")            # listed as it was (Running)
    env.cluster.add_pod("zzz", "new", "sim-node-00000", {}, ["c"])  # not listed
    items = list(first["items"])
    cont = first["metadata"]["continue"]
    for _ in range(10):
        async with s.get(f"/api/v1/pods?limit=4&continue={cont}") as r:
            page = await r.json()
        assert page["metadata"]["resourceVersion"] == rv
        items += page["items"]
        cont = page["metadata"].get("continue", "")
        if not cont:
            break
    by_key = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in items}
    assert len(items) == 12 and len(by_key) == 12
    assert later[0] in by_key and ("zzz", "new") not in by_key
    assert by_key[later[1]]["status"]["phase"] == "Running"
    assert int(by_key[later[1]]["metadata"]["resourceVersion"]) <= int(rv)


async def test_exact_list_at_an_older_resource_version(env: Env) -> None:
    s = env.admin()
    rv = env.cluster.resource_version
    (ns, name), _ = sorted(env.cluster.pods.items())[0]
    env.cluster.set_phase(ns, name, "Succeeded")
    env.cluster.add_pod("default", "after", "sim-node-00000", {"app": "web"}, ["c"])
    victim = sorted(env.cluster.pods)[-1]
    env.cluster.delete_pod(*victim)
    env.cluster.set_node_labels("sim-node-00000", {"new": "label"})
    async with s.get(f"/api/v1/pods?resourceVersion={rv}&resourceVersionMatch=Exact") as r:
        past = await r.json()
    assert past["metadata"]["resourceVersion"] == str(rv)
    names = {p["metadata"]["name"]: p for p in past["items"]}
    assert victim[1] in names and "after" not in names
    assert names[name]["status"]["phase"] == "Running"
    async with s.get(f"/api/v1/pods?resourceVersion={rv}&resourceVersionMatch=Exact"
                     "&fieldSelector=status.phase%3DRunning") as r:
        assert name in {p["metadata"]["name"] for p in (await r.json())["items"]}
    async with s.get(f"/api/v1/nodes?resourceVersion={rv}&resourceVersionMatch=Exact"
                     "&labelSelector=kubernetes.io/os%3Dlinux") as r:
        assert len((await r.json())["items"]) == 3
    async with s.get("/api/v1/nodes?labelSelector=kubernetes.io/os%3Dlinux") as r:
        assert len((await r.json())["items"]) == 2
    async with s.get(f"/api/v1/pods?resourceVersion={rv}") as r:  # NotOlderThan: current
        now = await r.json()
    assert now["metadata"]["resourceVersion"] == str(env.cluster.resource_version)
    assert "after" in {p["metadata"]["name"] for p in now["items"]}


async def test_label_and_field_selectors_over_http(env: Env) -> None:
    s = env.admin()

    async def names(query: str, path: str = "/api/v1/pods") -> set[str]:
        async with s.get(path, params={"labelSelector": "", **dict(
                [kv.split("=", 1) for kv in query.split("&") if kv])}) as r:
            assert r.status == 200, await r.text()
            return {i["metadata"]["name"] for i in (await r.json())["items"]}

    pods = env.cluster.pods
    web_pods = {n for (_, n), p in pods.items() if p.labels["app"] == "web"}
    assert await names("labelSelector=app=web") == web_pods
    assert await names("labelSelector=app==web") == web_pods
    assert await names("labelSelector=app!=web") == {n for _, n in pods} - web_pods
    assert await names("labelSelector=app notin (web),tier") == {n for _, n in pods} - web_pods
    assert await names("labelSelector=!app") == set()
    assert await names("labelSelector=missing") == set()
    assert await names("labelSelector=!missing") == {n for _, n in pods}
    some = sorted(pods)[3]
    assert await names(f"fieldSelector=metadata.name={some[1]}") == {some[1]}
    assert await names(f"fieldSelector=metadata.namespace!={some[0]}") == {
        n for (ns, n) in pods if ns != some[0]}
    assert await names("labelSelector=app=web",
                       "/api/v1/namespaces/default/pods") == {
        n for (ns, n), p in pods.items() if ns == "default" and p.labels["app"] == "web"}
    assert await names("fieldSelector=metadata.name=sim-node-00002",
                       "/api/v1/nodes") == {"sim-node-00002"}
    assert await names("labelSelector=kubernetes.io/hostname in (sim-node-00000,"
                       "sim-node-00001)", "/api/v1/nodes") == {"sim-node-00000",
                                                               "sim-node-00001"}
    for bad in ("labelSelector=app in ()", "labelSelector=a b", "fieldSelector=status.podX=1",
                "fieldSelector=nonsense"):
        k, v = bad.split("=", 1)
        async with s.get("/api/v1/pods", params={k: v}) as r:
            assert r.status == 400, bad
            assert (await r.json())["reason"] == "BadRequest"
    async with s.get("/api/v1/nodes", params={"fieldSelector": "spec.nodeName=x"}) as r:
        assert r.status == 400
        assert (await r.json())["message"] == "field label not supported: spec.nodeName"


async def test_metadata_only_list_and_watch(env: Env) -> None:
    s = env.admin()
    async with s.get("/api/v1/pods", headers={"Accept": META_LIST}) as r:
        assert r.status == 200
        lst = await r.json()
    assert lst["kind"] == "PartialObjectMetadataList"
    assert lst["apiVersion"] == "meta.k8s.io/v1"
    assert set(lst["metadata"]) == {"resourceVersion"}
    item = lst["items"][0]
    assert item["kind"] == "PartialObjectMetadata"
    assert item["apiVersion"] == "meta.k8s.io/v1"
    assert set(item) == {"kind", "apiVersion", "metadata"}
    assert {"name", "namespace", "uid", "resourceVersion", "creationTimestamp",
            "labels"} <= set(item["metadata"])
    rv = lst["metadata"]["resourceVersion"]
    env.cluster.add_pod("shop", "meta-pod", "sim-node-00001", {"app": "meta"}, ["c"])
    async with s.get("/api/v1/pods", params={"watch": "true", "resourceVersion": rv,
                                             "timeoutSeconds": "5"},
                     headers={"Accept": META}) as r:
        assert r.headers["Content-Type"] == "application/json"
        events = await read_lines(r, 1)
    assert events == [{"type": "ADDED", "object": {
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": events[0]["object"]["metadata"]}}]
    assert events[0]["object"]["metadata"]["name"] == "meta-pod"
    assert events[0]["object"]["metadata"]["resourceVersion"] == str(int(rv) + 1)


async def test_table_output(env: Env) -> None:
    s = env.admin()
    async with s.get("/api/v1/pods", headers={"Accept": TABLE + ",application/json"}) as r:
        table = await r.json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == [
        "Name", "Ready", "Status", "Restarts", "Age"]
    row = table["rows"][0]
    assert row["cells"][1:4] == ["2/2", "Running", "0"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    async with s.get("/api/v1/nodes?includeObject=None", headers={"Accept": TABLE}) as r:
        table = await r.json()
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == [
        "Name", "Status", "Roles", "Age", "Version"]
    assert table["rows"][0]["object"] is None
    async with s.get("/api/v1/nodes?includeObject=Object", headers={"Accept": TABLE}) as r:
        table = await r.json()
    assert table["rows"][0]["object"]["kind"] == "Node"
    async with s.get("/api/v1/nodes?includeObject=Bogus", headers={"Accept": TABLE}) as r:
        assert r.status == 400
    rv = table["metadata"]["resourceVersion"]
    env.cluster.set_ready("sim-node-00000", False)
    env.cluster.set_ready("sim-node-00000", True)
    async with s.get(f"/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=5",
                     headers={"Accept": TABLE}) as r:
        events = await read_lines(r, 2)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED"]
    assert events[0]["object"]["columnDefinitions"] is not None
    assert events[1]["object"]["columnDefinitions"] is None
    assert events[1]["object"]["rows"][0]["cells"][:2] == ["sim-node-00000", "Ready"]
    async with s.get("/api/v1/nodes", headers={"Accept": "application/vnd.kubernetes.protobuf"}
                     ) as r:
        assert r.status == 406


# ============================================================================ watch


async def test_watch_from_list_resource_version(env: Env) -> None:
    s = env.admin()
    async with s.get("/api/v1/pods") as r:
        lst = await r.json()
    rv = int(lst["metadata"]["resourceVersion"])
    (ns, name), _ = sorted(env.cluster.pods.items())[0]
    env.cluster.set_phase(ns, name, "Failed")
    env.cluster.add_pod("default", "late", "sim-node-00002", {"app": "late"}, ["c"])
    env.cluster.delete_pod("default", "late")
    env.cluster.set_ready("sim-node-00001", False)  # a node event: not in a pod watch
    async with s.get(f"/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1") as r:
        assert r.status == 200
        events = await read_lines(r, 10, timeout=3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", name), ("ADDED", "late"), ("DELETED", "late")]
    assert [int(e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        rv + 1, rv + 2, rv + 3]
    assert events[0]["object"]["kind"] == "Pod"
    assert events[0]["object"]["status"]["phase"] == "Failed"

    # a live watch: events arrive as they happen; watch=true also works
    async with s.get(f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv + 4}"
                     "&timeoutSeconds=5") as r:
        await asyncio.sleep(0.05)
        env.cluster.add_pod("shop", "elsewhere", "sim-node-00002", {}, ["c"])
        env.cluster.add_pod("default", "live", "sim-node-00002", {}, ["c"])
        events = await read_lines(r, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "live")]


async def test_watch_without_resource_version_sends_initial_state(env: Env) -> None:
    s = env.admin()
    async with s.get("/api/v1/nodes?watch=1&timeoutSeconds=3") as r:
        events = await read_lines(r, 3)
        assert [e["type"] for e in events] == ["ADDED"] * 3
        env.cluster.set_ready("sim-node-00002", False)
        events = await read_lines(r, 1)
    assert events[0]["type"] == "MODIFIED"
    assert events[0]["object"]["metadata"]["name"] == "sim-node-00002"
    # the streaming-list form (sendInitialEvents) ends the initial state with a bookmark
    async with s.get("/api/v1/nodes?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
                     "&resourceVersionMatch=NotOlderThan&timeoutSeconds=3") as r:
        events = await read_lines(r, 4)
    assert [e["type"] for e in events] == ["ADDED"] * 3 + ["BOOKMARK"]
    assert events[3]["object"]["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"}


async def test_watch_bookmarks(env: Env) -> None:
    s = env.admin()
    async with s.get("/api/v1/pods") as r:
        rv = int((await r.json())["metadata"]["resourceVersion"])
    env.cluster.set_ready("sim-node-00000", False)  # moves the resourceVersion, not pods
    async with s.get(f"/api/v1/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
                     "&timeoutSeconds=3") as r:
        events = await read_lines(r, 1)
    assert events == [{"type": "BOOKMARK", "object": {
        "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv + 1)}}}]
    async with s.get(f"/api/v1/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
                     "&timeoutSeconds=3", headers={"Accept": META}) as r:
        events = await read_lines(r, 1)
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["kind"] == "PartialObjectMetadata"
    # no bookmarks unless asked for
    async with s.get(f"/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1") as r:
        events = await read_lines(r, 1, timeout=3)
    assert events == []


async def test_watch_timeout_seconds(env: Env) -> None:
    s = env.admin()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with s.get("/api/v1/pods?watch=1&resourceVersion=0&timeoutSeconds=1") as r:
        body = await asyncio.wait_for(r.read(), 5)
    elapsed = loop.time() - t0
    assert 0.9 <= elapsed < 3
    assert body.count(b"\n") == len(env.cluster.pods)  # the initial ADDED events, then EOF


async def test_watch_too_old_resource_version(tmp_path: Path) -> None:
    cluster = small_cluster(history=5)
    e = await make_env(tmp_path, cluster)
    try:
        s = e.admin()
        for i in range(8):
            cluster.add_pod("default", f"churn-{i}", "sim-node-00000", {}, ["c"])
        oldest = cluster.resource_version - 5
        async with s.get("/api/v1/pods?watch=1&resourceVersion=3") as r:
            assert r.status == 200
            events = await read_lines(r, 5)
        assert events == [{"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"too old resource version: 3 ({oldest})", "reason": "Expired",
            "code": 410}}]
        # just inside the window still works
        async with s.get(f"/api/v1/pods?watch=1&resourceVersion={oldest}&timeoutSeconds=1") as r:
            events = await read_lines(r, 10, timeout=3)
        assert [e["type"] for e in events] == ["ADDED"] * 5
        async with s.get("/api/v1/pods?limit=2") as r:
            cont = (await r.json())["metadata"]["continue"]
        async with s.get(f"/api/v1/pods?limit=2&continue={cont}") as r:
            assert r.status == 200
        for i in range(6):
            cluster.delete_pod("default", f"churn-{i}")
        async with s.get(f"/api/v1/pods?limit=2&continue={cont}") as r:
            assert r.status == 410
            status = await r.json()
        assert status["reason"] == "Expired"
        assert status["message"].startswith("The provided continue parameter is too old")
        async with s.get(f"/api/v1/pods?limit=2&continue={status['metadata']['continue']}"
                         ) as r:  # the inconsistent-continue token still pages on
            assert r.status == 200
            assert (await r.json())["metadata"]["resourceVersion"] == str(
                cluster.resource_version)
        async with s.get("/api/v1/pods?resourceVersion=3&resourceVersionMatch=Exact") as r:
            assert r.status == 410
            assert (await r.json())["reason"] == "Expired"
        async with s.get("/api/v1/pods?resourceVersion=3&resourceVersionMatch=NotOlderThan") as r:
            assert r.status == 200
        async with s.get(f"/api/v1/pods?resourceVersion={cluster.resource_version + 10}") as r:
            assert r.status == 504
            assert "Too large resource version" in (await r.json())["message"]
        async with s.get("/api/v1/pods?resourceVersionMatch=Exact") as r:
            assert r.status == 422
    finally:
        for sess in e.sessions:
            await sess.close()
        await e.api.stop()


async def test_watch_selector_transitions(env: Env) -> None:
    s = env.admin()
    (ns, name), _ = sorted(env.cluster.pods.items())[0]
    async with s.get("/api/v1/pods?fieldSelector=status.phase%3DRunning") as r:
        rv = (await r.json())["metadata"]["resourceVersion"]
    async with s.get(f"/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=5"
                     "&fieldSelector=status.phase%3DRunning") as r:
        env.cluster.set_phase(ns, name, "Succeeded")   # stops matching -> DELETED
        env.cluster.set_phase(ns, name, "Failed")      # matches neither time -> nothing
        env.cluster.set_phase(ns, name, "Running")     # starts matching -> ADDED
        env.cluster.set_phase(ns, name, "Running")     # matches both -> MODIFIED
        events = await read_lines(r, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", name), ("ADDED", name), ("MODIFIED", name)]
    # the DELETED object is the last matching state with the event's resourceVersion
    assert events[0]["object"]["status"]["phase"] == "Running"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) == int(rv) + 1
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) == int(rv) + 3

    labels = dict(env.cluster.node_by_name["sim-node-00001"].labels)
    async with s.get("/api/v1/nodes?watch=1&resourceVersion=0&timeoutSeconds=5"
                     "&labelSelector=pool%3Dgpu") as r:
        env.cluster.set_node_labels("sim-node-00001", {**labels, "pool": "gpu"})
        env.cluster.set_node_labels("sim-node-00001", labels)
        events = await read_lines(r, 2)
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]
    assert events[1]["object"]["metadata"]["labels"]["pool"] == "gpu"


async def test_server_stop_ends_watches(tmp_path: Path) -> None:
    e = await make_env(tmp_path, small_cluster())
    s = e.admin()
    try:
        async with s.get("/api/v1/pods?watch=1&resourceVersion=0") as r:
            await read_lines(r, 12)
            stopping = asyncio.get_running_loop().create_task(e.api.stop())
            rest = await asyncio.wait_for(r.content.read(), 5)
            assert rest == b""
            await asyncio.wait_for(stopping, 10)
    finally:
        await s.close()
        await e.api.stop()


# ============================================================================ aggregator


class Backend:
    """A metrics API backend: TLS, requires a front-proxy client certificate, echoes."""

    def __init__(self, cluster_ca: CertAuthority, front_proxy_ca: CertAuthority,
                 aggregated: bool = True):
        self.pair = cluster_ca.issue("metrics-backend", "metrics-backend",
                                     ip_addresses=("127.0.0.1",), server=True)
        self.front_proxy_ca = front_proxy_ca
        self.aggregated = aggregated
        self.requests: list[JSON] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        cert = request.transport.get_extra_info("peercert") or {}
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"),
                  "")
        seen = {
            "path": request.path_qs, "cn": cn, "method": request.method,
            "user": request.headers.get("X-Remote-User"),
            "groups": request.headers.getall("X-Remote-Group", []),
            "authorization": request.headers.get("Authorization"),
            "accept": request.headers.get("Accept"),
            "x_remote": sorted(k for k, _ in request.headers.items()
                               if k.lower().startswith("x-remote")),
            "peer_port": request.transport.get_extra_info("peername")[1],
        }
        self.requests.append(seen)
        if cn != "front-proxy-client":
            return web.json_response({"error": "not the front proxy"}, status=401)
        if request.path == "/apis/metrics.k8s.io/v1beta1":
            return web.json_response({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "metrics.k8s.io/v1beta1", "resources": [
                    {"name": "nodes", "singularName": "", "namespaced": False,
                     "kind": "NodeMetrics", "verbs": ["get", "list"]},
                    {"name": "pods", "singularName": "", "namespaced": True,
                     "kind": "PodMetrics", "verbs": ["get", "list"]}]})
        if request.path == "/apis" and not self.aggregated:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        if request.path == "/apis":
            return web.json_response({"kind": "APIGroupDiscoveryList",
                                      "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
                                      "items": [{"metadata": {"name": "metrics.k8s.io"},
                                                 "versions": [self.discovery()]}]},
                                     content_type=AGGREGATED_V2)
        return web.json_response({"kind": "Echo", **seen})

    @staticmethod
    def discovery() -> JSON:
        return {"version": "v1beta1", "freshness": "Current", "resources": [
            {"resource": "nodes", "responseKind": {"group": "metrics.k8s.io",
                                                   "version": "v1beta1", "kind": "NodeMetrics"},
             "scope": "Cluster", "singularResource": "", "verbs": ["get", "list"]},
            {"resource": "pods", "responseKind": {"group": "metrics.k8s.io",
                                                  "version": "v1beta1", "kind": "PodMetrics"},
             "scope": "Namespaced", "singularResource": "", "verbs": ["get", "list"]}]}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ctx = server_context(self.pair, client_ca=self.front_proxy_ca.cert_file,
                             require_client_cert=True)
        await web.SockSite(self.runner, sock, ssl_context=ctx).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@pytest.fixture
async def backend(env: Env) -> AsyncIterator[Backend]:
    b = Backend(env.api.cluster_ca, env.api.front_proxy_ca)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def test_aggregator_via_kubectl(env: Env, backend: Backend) -> None:
    env.api.register_api_service("metrics.k8s.io", "v1beta1", backend.url,
                                 ca_bundle=env.api.cluster_ca.cert_pem)
    rc, out, err = await kubectl(env, "get", "--raw",
                                 "/apis/metrics.k8s.io/v1beta1/nodes?limit=3")
    assert rc == 0, err
    echo = json.loads(out)
    assert echo["path"] == "/apis/metrics.k8s.io/v1beta1/nodes?limit=3"
    assert echo["cn"] == "front-proxy-client"
    assert echo["user"] == ADMIN_USER
    assert echo["groups"] == ["system:masters", "system:authenticated"]
    assert echo["authorization"] is None
    # as a user the policy allows, by token, through kubectl
    reader = write_kubeconfig(env.dir / "reader.kubeconfig", env.api.url, env.api.ca_file,
                              token=env.metrics_reader_token, user_name="reader")
    rc, out, err = await kubectl(env, "get", "--raw",
                                 "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods",
                                 kubeconfig=reader)
    assert rc == 0, err
    echo = json.loads(out)
    assert (echo["user"], echo["groups"]) == ("reader", ["readers", "system:authenticated"])
    # discovery now lists the group, in both forms; kubectl sees it
    rc, out, err = await kubectl(env, "api-versions")
    assert rc == 0, err
    assert "metrics.k8s.io/v1beta1" in out.split()
    rc, out, err = await kubectl(env, "api-resources", "--api-group=metrics.k8s.io",
                                 "-o", "name")
    assert rc == 0, err
    assert set(out.split()) == {"nodes.metrics.k8s.io", "pods.metrics.k8s.io"}
    rc, out, err = await kubectl(env, "get", "--raw", "/apis/metrics.k8s.io")
    assert json.loads(out)["preferredVersion"]["groupVersion"] == "metrics.k8s.io/v1beta1"


async def test_aggregator_denied_user_never_reaches_backend(env: Env, backend: Backend) -> None:
    svc = env.api.register_api_service("metrics.k8s.io", "v1beta1", backend.url,
                                       ca_bundle=env.api.cluster_ca.cert_pem)
    async with env.session(env.viewer_token).get("/apis/metrics.k8s.io/v1beta1/pods") as r:
        assert r.status == 403
        body = await r.json()
    assert body["message"] == (
        'pods.metrics.k8s.io is forbidden: User "viewer" cannot list resource "pods" in API '
        'group "metrics.k8s.io" at the cluster scope')
    assert body["details"] == {"group": "metrics.k8s.io", "kind": "pods"}
    async with env.session().get("/apis/metrics.k8s.io/v1beta1/pods") as r:
        assert r.status == 401
    assert backend.requests == [] and svc.calls == 0


async def test_aggregator_strips_forged_headers(env: Env, backend: Backend) -> None:
    env.api.register_api_service("metrics.k8s.io", "v1beta1", backend.url,
                                 ca_bundle=env.api.cluster_ca.cert_pem)
    s = env.session(env.metrics_reader_token, headers={
        "X-Remote-User": "system:admin", "X-Remote-Group": "system:masters",
        "X-Remote-Extra-Scopes": "all", "Accept": TABLE})
    async with s.get("/apis/metrics.k8s.io/v1beta1/nodes/sim-node-00000?x=1") as r:
        assert r.status == 200
        echo = await r.json()
    assert echo["user"] == "reader"
    assert echo["groups"] == ["readers", "system:authenticated"]
    assert echo["x_remote"] == ["X-Remote-Group", "X-Remote-Group", "X-Remote-User"]
    assert echo["authorization"] is None
    assert echo["accept"] == TABLE
    assert echo["path"] == "/apis/metrics.k8s.io/v1beta1/nodes/sim-node-00000?x=1"
    # keep-alive: the second request reuses the connection to the backend
    async with s.get("/apis/metrics.k8s.io/v1beta1/nodes") as r:
        assert r.status == 200
        again = await r.json()
    assert again["peer_port"] == echo["peer_port"]


async def test_aggregator_discovery(env: Env, backend: Backend) -> None:
    env.api.register_api_service("metrics.k8s.io", "v1beta1", backend.url,
                                 insecure_skip_tls_verify=True)
    s = env.admin()
    async with s.get("/apis", headers={"Accept": AGGREGATED_V2}) as r:
        doc = await r.json(content_type=None)
    items = {i["metadata"]["name"]: i for i in doc["items"]}
    assert items["metrics.k8s.io"]["versions"] == [Backend.discovery()]
    polls = [q for q in backend.requests if q["path"] == "/apis"]
    assert polls and polls[0]["user"] == "system:kube-aggregator"
    assert polls[0]["groups"] == ["system:masters"]
    async with s.get("/apis") as r:
        legacy = await r.json()
    assert {"name": "metrics.k8s.io",
            "versions": [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}],
            "preferredVersion": {"groupVersion": "metrics.k8s.io/v1beta1",
                                 "version": "v1beta1"}} in legacy["groups"]
    async with s.get("/apis/metrics.k8s.io/v1beta2/nodes") as r:
        assert r.status == 404


async def test_aggregator_legacy_discovery(tmp_path: Path) -> None:
    """A backend without aggregated discovery, behind an apiserver kubectl reads the legacy
    way: both conversions end in the same resources."""
    e = await make_env(tmp_path, small_cluster(), aggregated_discovery=False)
    b = Backend(e.api.cluster_ca, e.api.front_proxy_ca, aggregated=False)
    await b.start()
    try:
        e.api.register_api_service("metrics.k8s.io", "v1beta1", b.url,
                                   ca_bundle=e.api.cluster_ca.cert_pem)
        rc, out, err = await kubectl(e, "api-resources", "--api-group=metrics.k8s.io",
                                     "-o", "wide")
        assert rc == 0, err
        rows = table_rows(out)
        assert rows[0] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND", "VERBS",
                           "CATEGORIES"]
        assert rows[1:] == [["nodes", "metrics.k8s.io/v1beta1", "false", "NodeMetrics",
                             "get,list"],
                            ["pods", "metrics.k8s.io/v1beta1", "true", "PodMetrics",
                             "get,list"]]
        e.api.aggregated_discovery = True
        async with e.admin().get("/apis", headers={"Accept": AGGREGATED_V2}) as r:
            doc = await r.json(content_type=None)
        items = {i["metadata"]["name"]: i for i in doc["items"]}
        resources = items["metrics.k8s.io"]["versions"][0]["resources"]
        assert resources == Backend.discovery()["resources"]
        assert [q["path"] for q in b.requests][-2:] == ["/apis", "/apis/metrics.k8s.io/v1beta1"]
        assert b.requests[-1]["user"] == "system:kube-aggregator"
    finally:
        for sess in e.sessions:
            await sess.close()
        await e.api.stop()
        await b.stop()


async def test_aggregator_backend_down(env: Env) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    env.api.register_api_service("metrics.k8s.io", "v1beta1", f"https://127.0.0.1:{port}",
                                 insecure_skip_tls_verify=True)
    s = env.admin()
    async with s.get("/apis/metrics.k8s.io/v1beta1/nodes") as r:
        assert r.status == 503
        assert await r.text() == "service unavailable\n"
    async with s.get("/apis", headers={"Accept": AGGREGATED_V2}) as r:
        doc = await r.json(content_type=None)
    assert "metrics.k8s.io" not in {i["metadata"]["name"] for i in doc["items"]}
    with pytest.raises(ValueError, match="ca_bundle"):
        env.api.register_api_service("metrics.k8s.io", "v1beta1", "https://127.0.0.1:1")
    with pytest.raises(ValueError, match="loopback"):
        env.api.register_api_service("metrics.k8s.io", "v1beta1", "https://10.0.0.1:443",
                                     insecure_skip_tls_verify=True)


async def test_kubectl_aggregator_backend_down(env: Env) -> None:
    need_kubectl()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env.api.register_api_service("metrics.k8s.io", "v1beta1", f"https://127.0.0.1:{port}",
                                 insecure_skip_tls_verify=True)
    rc, _, err = await kubectl(env, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
    assert rc != 0
    assert "ServiceUnavailable" in err or "unable to handle the request" in err
    # the rest of the API still works while an aggregated API is down
    rc, out, err = await kubectl(env, "get", "nodes")
    assert rc == 0, err
    assert "sim-node-00000" in out


async def test_backend_rejects_clients_without_front_proxy_cert(env: Env,
                                                                backend: Backend) -> None:
    ctx = client_context(env.api.ca_file)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            async with s.get(backend.url + "/apis/metrics.k8s.io/v1beta1/nodes") as r:
                await r.read()
    assert all(q["cn"] == "front-proxy-client" for q in backend.requests)


# ============================================================================ pure functions


def test_label_selector_grammar() -> None:
    labels = {"app": "web", "tier": "backend", "n": "5", "empty": ""}
    cases = {
        "": True,
        "app=web": True,
        "app==web": True,
        "app!=web": False,
        "app!=api": True,
        "missing!=x": True,
        "app in (web, api)": True,
        "app in (api)": False,
        "app notin (api,cache)": True,
        "missing notin (x)": True,
        "app notin (web)": False,
        "tier": True,
        "missing": False,
        "!missing": True,
        "!app": False,
        "app=web,tier=backend": True,
        "app=web, tier=frontend": False,
        "n>4": True,
        "n<5": False,
        "app>1": False,
        "empty=": True,
        "empty in (,x)": True,
        "example.com/role": False,
        " app = web ": True,
    }
    for sel, want in cases.items():
        assert LabelSelector.parse(sel).matches(labels) is want, sel
    for bad in ("app in ()", "app in (a", "=web", "app=web,", "a b", "app=(x)", "-bad=x",
                "app>x", "app=a b", "!", "app ~ x", "app=" + "x" * 64):
        with pytest.raises(SelectorError):
            LabelSelector.parse(bad)


def test_field_selector_grammar() -> None:
    fields = {"metadata.name": "a,b", "status.phase": "Running", "spec.nodeName": ""}
    assert FieldSelector.parse("status.phase=Running").matches(fields)
    assert FieldSelector.parse("status.phase==Running").matches(fields)
    assert not FieldSelector.parse("status.phase!=Running").matches(fields)
    assert FieldSelector.parse(r"metadata.name=a\,b").matches(fields)
    assert FieldSelector.parse("spec.nodeName=").matches(fields)
    assert FieldSelector.parse("spec.nodeName!=,status.phase=Running").matches(fields) is False
    assert FieldSelector.parse(r"metadata.name=a\,b").exact("metadata.name") == "a,b"
    assert FieldSelector.parse("metadata.name!=x").exact("metadata.name") is None
    assert FieldSelector.parse("").empty
    for bad in ("nonsense", "a=b=c", r"a=b\x"):
        with pytest.raises(SelectorError):
            FieldSelector.parse(bad)
    with pytest.raises(SelectorError, match="field label not supported: x"):
        FieldSelector.parse("x=1").check_supported(["metadata.name"])


def test_request_info() -> None:
    info = parse_request_info("GET", "/api/v1/namespaces/ns1/pods", {})
    assert (info.verb, info.resource, info.namespace, info.name) == ("list", "pods", "ns1", "")
    info = parse_request_info("GET", "/api/v1/pods", {"watch": "1"})
    assert info.verb == "watch"
    info = parse_request_info("GET", "/api/v1/nodes/n1", {"watch": "true"})
    assert (info.verb, info.name) == ("get", "n1")
    info = parse_request_info("GET", "/api/v1/watch/namespaces/ns1/pods", {})
    assert (info.verb, info.namespace, info.resource) == ("watch", "ns1", "pods")
    info = parse_request_info("GET", "/api/v1/namespaces/kube-system/configmaps",
                              {"fieldSelector": "metadata.name=abc"})
    assert (info.verb, info.name) == ("list", "abc")
    info = parse_request_info("GET", "/api/v1/namespaces/shop", {})
    assert (info.resource, info.name, info.namespace) == ("namespaces", "shop", "shop")
    info = parse_request_info("GET", "/api/v1/nodes/n1/metrics", {})
    assert (info.resource, info.subresource, info.name) == ("nodes", "metrics", "n1")
    info = parse_request_info("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/a/pods/b", {})
    assert (info.api_group, info.api_version, info.resource, info.namespace, info.name) == (
        "metrics.k8s.io", "v1beta1", "pods", "a", "b")
    info = parse_request_info("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {})
    assert (info.verb, info.resource) == ("create", "tokenreviews")
    for path in ("/apis/metrics.k8s.io/v1beta1", "/api/v1", "/version", "/apis", "/"):
        info = parse_request_info("GET", path, {})
        assert not info.resource_request and info.verb == "get", path


def test_default_rules_and_messages() -> None:
    policy = Policy(default_rules())
    sa = (METRICS_SERVER_USER, ("system:serviceaccounts", "system:authenticated"))

    def allowed(user: tuple[str, tuple[str, ...]], verb: str, resource: str, ns: str = "",
                name: str = "", group: str = "") -> bool:
        return policy.authorize(Attributes(user[0], user[1], verb, True, "", group, "v1",
                                           resource, "", ns, name))[0]

    assert allowed(sa, "list", "nodes") and allowed(sa, "watch", "pods")
    assert not allowed(sa, "delete", "pods")
    assert allowed(sa, "get", "configmaps", "kube-system", "extension-apiserver-authentication")
    assert not allowed(sa, "get", "configmaps", "default", "extension-apiserver-authentication")
    assert allowed(sa, "create", "tokenreviews", group="authentication.k8s.io")
    assert allowed(sa, "create", "subjectaccessreviews", group="authorization.k8s.io")
    assert not allowed(("bob", ("system:authenticated",)), "list", "pods")
    assert allowed(("bob", ("system:masters",)), "delete", "anything")
    a = Attributes("bob", (), "get", False, "/metrics")
    assert a.forbidden_message() == 'User "bob" cannot get path "/metrics"'


def test_human_duration() -> None:
    assert [human_duration(s) for s in (-5, -0.5, 0, 119, 120, 125, 600, 3 * 3600 - 1,
                                        3 * 3600 + 120, 8 * 3600, 47 * 3600, 50 * 3600,
                                        8 * 86400, 3 * 365 * 86400 + 86400,
                                        9 * 365 * 86400)] == [
        "<invalid>", "0s", "0s", "119s", "2m", "2m5s", "10m", "179m", "3h2m", "8h", "47h",
        "2d2h", "8d", "3y1d", "9y"]


def test_write_kubeconfig(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    path = write_kubeconfig(tmp_path / "sub" / "kc", "https://127.0.0.1:1", ca, token="t",
                            user_name="u", context_name="c", namespace="ns")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == "c"
    assert doc["clusters"][0]["cluster"] == {"server": "https://127.0.0.1:1",
                                             "certificate-authority": str(ca.resolve())}
    assert doc["users"] == [{"name": "u", "user": {"token": "t"}}]
    assert doc["contexts"][0]["context"] == {"cluster": "sim", "user": "u", "namespace": "ns"}
    path = write_kubeconfig(tmp_path / "kc2", "https://127.0.0.1:1", ca,
                            client_cert=tmp_path / "a.crt", client_key=tmp_path / "a.key")
    user = yaml.safe_load(path.read_text())["users"][0]["user"]
    assert user == {"client-certificate": str(tmp_path / "a.crt"),
                    "client-key": str(tmp_path / "a.key")}
    with pytest.raises(ValueError):
        write_kubeconfig(tmp_path / "kc3", "https://x", ca)
    with pytest.raises(ValueError):
        write_kubeconfig(tmp_path / "kc3", "https://x", ca, client_cert="a.crt")


async def test_frequent_bookmarks_never_skip_events(tmp_path: Path) -> None:
    """A bookmark must not jump past events queued while the watch task was waking up."""
    from fastmetrics.sim.run import SimulatedCluster

    shape = ClusterShape(nodes=1, pods_per_node=0)
    async with SimulatedCluster(shape, tmp_path, bookmark_interval_s=0.005) as sim:
        ctx = ssl.create_default_context(cafile=str(sim.api.ca_file))
        headers = {"Authorization": f"Bearer {sim.api.admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{sim.api.url}/api/v1/pods", ssl=ctx) as r:
                rv = (await r.json())["metadata"]["resourceVersion"]
            added: list[str] = []

            async def watch() -> None:
                params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                          "timeoutSeconds": "20"}
                async with session.get(f"{sim.api.url}/api/v1/pods", params=params,
                                       ssl=ctx) as r:
                    async for line in r.content:
                        ev = json.loads(line)
                        if ev["type"] == "ADDED":
                            added.append(ev["object"]["metadata"]["name"])
                            if len(added) == 400:
                                return

            task = asyncio.create_task(watch())
            await asyncio.sleep(0.2)
            node = sim.cluster.nodes[0].name
            for i in range(400):
                sim.cluster.add_pod("default", f"p{i}", node, {}, ["c"])
                if i % 7 == 0:
                    await asyncio.sleep(0.003)
            await asyncio.wait_for(task, 20)
    assert added == [f"p{i}" for i in range(400)]
