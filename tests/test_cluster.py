"""Client configuration, the kube client and the informers, against a real SimulatedCluster.

Everything talks HTTPS to the simulated kube-apiserver on loopback (SPEC §2.1, §2.4, §5.4):
kubeconfig and in-cluster credentials, list/watch/resume/relist, paging, bookmarks, churn,
disconnects and 410 Gone, and the memory the pod cache holds per pod.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import gc
import json
import os
import pickle
import random
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import yaml
from aiohttp import web

import fastmetrics.cluster as cluster_mod
from fastmetrics.cluster import (
    PARTIAL_OBJECT_METADATA,
    USER_AGENT,
    Backoff,
    ClientConfig,
    ClusterState,
    Informer,
    KubeApiError,
    KubeClient,
    Labels,
    NodeInfo,
    NodeInformer,
    PodInfo,
    PodInformer,
    TLSConfig,
    decode_node,
    load_client_config,
)
from fastmetrics.errors import ConfigError
from fastmetrics.sim.apiserver import METRICS_SERVER_USER, ApiServer
from fastmetrics.sim.model import Cluster, ClusterShape
from fastmetrics.sim.run import SimulatedCluster

FAST: dict[str, Any] = {"backoff_initial_s": 0.05, "backoff_max_s": 0.4}
"""Informer settings for tests: quick retries (watch timeouts stay 5-10 min)."""

SHAPE = ClusterShape(nodes=3, pods_per_node=6, containers_per_pod=1, seed=3)


# ============================================================================ helpers


async def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "",
                     detail: Callable[[], object] | None = None) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds (with ``detail()``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            pytest.fail(f"not within {timeout} s: {what or check}{extra}")
        await asyncio.sleep(0.02)


def describe(informer: Informer[Any, Any]) -> str:
    return (f"{informer.resource}: rv={informer.resource_version} {informer.stats} "
            f"last_error={informer.last_error!r}")


def running_model(c: Cluster) -> dict[tuple[str, str], dict[str, str]]:
    return {k: dict(p.labels) for k, p in c.pods.items() if p.phase == "Running"}


def cached(pods: PodInformer | ClusterState) -> dict[tuple[str, str], dict[str, str]]:
    out = {(p.namespace, p.name): dict(p.labels) for p in pods.pods_in(None)}
    assert len(out) == len(pods.pods_in(None)), "a pod is cached twice"
    return out


def set_pod_labels(c: Cluster, namespace: str, name: str, labels: dict[str, str]) -> None:
    """The model has no pod-label setter: change the labels and emit MODIFIED as it would."""
    pod = c.pods[(namespace, name)]
    pod.labels = dict(labels)
    pod.resource_version = c._bump()
    c._emit("MODIFIED", pod)


class Tracker:
    """A listener that checks the event sequence: no ADDED twice, no DELETED of the absent."""

    def __init__(self) -> None:
        self.present: set[tuple[str, str]] = set()
        self.problems: list[str] = []
        self.counts = {"ADDED": 0, "MODIFIED": 0, "DELETED": 0}

    def __call__(self, kind: str, old: PodInfo | None, new: PodInfo | None) -> None:
        self.counts[kind] += 1
        pod = new if new is not None else old
        assert pod is not None
        key = (pod.namespace, pod.name)
        if kind == "ADDED":
            if key in self.present:
                self.problems.append(f"ADDED twice: {key}")
            self.present.add(key)
        elif kind == "DELETED":
            if key not in self.present:
                self.problems.append(f"DELETED while absent: {key}")
            self.present.discard(key)
        elif key not in self.present:
            self.problems.append(f"MODIFIED while absent: {key}")


def write_kubeconfig(path: Path, server: str, *, cluster: dict[str, Any] | None = None,
                     user: dict[str, Any] | None = None) -> Path:
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def node_names(cfg: ClientConfig) -> list[str]:
    async with KubeClient(cfg) as client:
        body = await client.get_json("/api/v1/nodes")
    return [n["metadata"]["name"] for n in body["items"]]


class TcpProxy:
    """A loopback TCP relay in front of the apiserver that can cut every connection and
    refuse new ones (paused), to break watches without touching the server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.paused = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        if self._handlers:
            await asyncio.wait_for(asyncio.gather(*self._handlers, return_exceptions=True), 5)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cut(self) -> None:
        for w in list(self._writers):
            w.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.paused:
                return
            try:
                up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            self._writers |= {writer, upstream}
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
                    w.close()
            self._handlers.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(1 << 40):
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


async def restart_apiserver(sim: SimulatedCluster, between: Callable[[], None]) -> None:
    """Stop the simulated apiserver, run ``between``, start a new one on the same port with
    the same CA, tokens and cluster (the event history lives in the cluster model)."""
    old = sim.api
    port = old.port
    await old.stop()
    between()
    new = ApiServer(sim.cluster, sim.workdir / "pki", cluster_ca=sim.cluster_ca,
                    front_proxy_ca=sim.front_proxy_ca, kubelet_port=lambda _n: sim.farm.port,
                    port=port, bookmark_interval=old.bookmark_interval)
    new.tokens.update(old.tokens)
    await new.start()
    sim.api = new


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimulatedCluster]:
    # Bookmarks stay at the simulator's default (60 s) here: its watch stream can drop an
    # event that arrives while a bookmark timer fires (sim/apiserver.py ``_stream`` advances
    # ``progress`` to the newest resourceVersion with events still queued), which frequent
    # bookmarks make likely under load. test_bookmarks_* uses frequent ones on a quiet watch.
    async with SimulatedCluster(SHAPE, tmp_path / "sim") as s:
        yield s


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("FASTMETRICS_TEST_SEED", "20240611"))
    return random.Random(seed)


# ============================================================================ kubeconfig


async def test_sim_kubeconfigs_load_and_authenticate(sim: SimulatedCluster) -> None:
    for path in (sim.metrics_server_kubeconfig, sim.admin_kubeconfig):
        cfg = load_client_config(str(path))
        assert cfg.server == sim.api.url
        assert cfg.auth_kind == "token"
        assert cfg.ca_file == str(sim.api.ca_file.resolve())
        assert cfg.ca_data is None and cfg.client_cert is None and not cfg.insecure
        assert str(path) in cfg.source
        assert sim.api.metrics_server_token not in repr(cfg)
        assert sorted(await node_names(cfg)) == [n.name for n in sim.cluster.nodes]


@pytest.mark.parametrize("variant", [
    "token-file", "token-file-relative", "client-cert-files", "client-cert-data",
    "ca-data", "insecure-skip-tls-verify", "tls-server-name", "relative-ca",
])
async def test_kubeconfig_variants(sim: SimulatedCluster, tmp_path: Path, variant: str) -> None:
    ca = sim.api.ca_file
    cluster: dict[str, Any] = {"certificate-authority": str(ca)}
    user: dict[str, Any] = {}
    kc_dir = tmp_path / "kc"
    kc_dir.mkdir()
    token = sim.api.metrics_server_token
    if variant == "token-file":
        (tmp_path / "token").write_text(token + "\n")
        user["tokenFile"] = str(tmp_path / "token")
    elif variant == "token-file-relative":
        (kc_dir / "sa-token").write_text(token)
        user["tokenFile"] = "sa-token"  # relative to the kubeconfig's directory
    elif variant in ("client-cert-files", "client-cert-data"):
        pair = sim.api.issue_client_cert("fm-test-client", METRICS_SERVER_USER)
        if variant == "client-cert-files":
            user |= {"client-certificate": str(pair.cert_file), "client-key": str(pair.key_file)}
        else:
            user |= {"client-certificate-data": b64(pair.cert_file.read_bytes()),
                     "client-key-data": b64(pair.key_file.read_bytes())}
    elif variant == "ca-data":
        cluster = {"certificate-authority-data": b64(ca.read_bytes())}
    elif variant == "insecure-skip-tls-verify":
        cluster = {"insecure-skip-tls-verify": True}
    elif variant == "tls-server-name":
        cluster["tls-server-name"] = "kubernetes.default.svc"  # a SAN of the serving cert
    elif variant == "relative-ca":
        (kc_dir / "ca.crt").write_bytes(ca.read_bytes())
        cluster = {"certificate-authority": "ca.crt"}
    if "client-cert" not in variant and "token-file" not in variant:
        user["token"] = token
    kc = write_kubeconfig(kc_dir / "config", sim.api.url, cluster=cluster, user=user)
    cfg = load_client_config(kc)
    expected_kind = {"token-file": "token-file", "token-file-relative": "token-file",
                     "client-cert-files": "client-certificate",
                     "client-cert-data": "client-certificate"}.get(variant, "token")
    assert cfg.auth_kind == expected_kind
    if variant == "client-cert-data":
        assert cfg.client_cert_data and cfg.client_key_data and cfg.client_cert is None
    if variant == "client-cert-files":
        assert cfg.client_cert and cfg.client_key
    if variant == "ca-data":
        assert cfg.ca_data == ca.read_bytes() and cfg.ca_file is None
    if variant == "insecure-skip-tls-verify":
        assert cfg.insecure and cfg.ssl_context().verify_mode.name == "CERT_NONE"
    if variant == "relative-ca":
        assert cfg.ca_file == str(kc_dir.resolve() / "ca.crt")
    ctx = cfg.ssl_context()
    assert ctx.minimum_version.name == "TLSv1_2"
    assert sorted(await node_names(cfg)) == [n.name for n in sim.cluster.nodes]


async def test_tls_server_name_is_verified(sim: SimulatedCluster, tmp_path: Path) -> None:
    kc = write_kubeconfig(tmp_path / "kc", sim.api.url,
                          cluster={"certificate-authority": str(sim.api.ca_file),
                                   "tls-server-name": "not-in-the-cert.example"},
                          user={"token": sim.api.admin_token})
    cfg = load_client_config(kc)
    assert cfg.tls_server_name == "not-in-the-cert.example"
    with pytest.raises(aiohttp.ClientSSLError):
        await node_names(cfg)


async def test_untrusted_ca_fails(sim: SimulatedCluster, tmp_path: Path) -> None:
    other = sim.front_proxy_ca.cert_file  # a CA that did not sign the serving certificate
    kc = write_kubeconfig(tmp_path / "kc", sim.api.url,
                          cluster={"certificate-authority": str(other)},
                          user={"token": sim.api.admin_token})
    with pytest.raises(aiohttp.ClientSSLError):
        await node_names(load_client_config(kc))


def test_basic_auth_and_impersonation_headers(tmp_path: Path) -> None:
    kc = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:6443",
                          cluster={"insecure-skip-tls-verify": True},
                          user={"username": "ada", "password": "s3cret", "as": "bob",
                                "as-groups": ["g1", "g2"], "as-uid": "42",
                                "as-user-extra": {"scopes": ["a", "b"]}})
    cfg = load_client_config(kc)
    assert cfg.auth_kind == "basic"
    assert cfg.auth_headers() == {"Authorization": "Basic " + b64(b"ada:s3cret")}
    assert cfg.bearer_token() is None
    assert cfg.impersonation_headers() == [
        ("Impersonate-User", "bob"), ("Impersonate-Uid", "42"), ("Impersonate-Group", "g1"),
        ("Impersonate-Group", "g2"), ("Impersonate-Extra-scopes", "a"),
        ("Impersonate-Extra-scopes", "b")]


BAD_KUBECONFIGS: dict[str, tuple[str | dict[str, Any] | None, str]] = {
    # name: (file content: text, or a doc merged into a valid one, or None = no file; message)
    "missing-file": (None, "cannot read: no such file or directory"),
    "not-yaml": ("clusters: [unclosed\n", "not valid YAML"),
    "not-a-mapping": ("- a\n- b\n", "expected a mapping"),
    "no-current-context": ({"current-context": ""}, "no current-context is set"),
    "unknown-context": ({"current-context": "nope"}, "context 'nope'"),
    "unknown-cluster": ({"contexts": [{"name": "x", "context": {"cluster": "zz", "user": "u"}}]},
                        "cluster 'zz'"),
    "no-server": ({"clusters": [{"name": "c", "cluster": {}}]}, "has no server"),
    "bad-server": ({"clusters": [{"name": "c", "cluster": {"server": "ftp://x"}}]},
                   "is not an http(s) URL"),
    "ca-missing": ({"clusters": [{"name": "c", "cluster": {
        "server": "https://127.0.0.1:1", "certificate-authority": "/nonexistent/ca.crt"}}]},
        "certificate-authority /nonexistent/ca.crt: cannot read"),
    "ca-data-not-base64": ({"clusters": [{"name": "c", "cluster": {
        "server": "https://127.0.0.1:1", "certificate-authority-data": "!!not base64!!"}}]},
        "certificate-authority-data is not valid base64"),
    "ca-data-not-pem": ({"clusters": [{"name": "c", "cluster": {
        "server": "https://127.0.0.1:1", "certificate-authority-data": b64(b"hello")}}]},
        "not a PEM certificate"),
    "insecure-with-ca": ({"clusters": [{"name": "c", "cluster": {
        "server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True,
        "certificate-authority-data": b64(b"x")}}]}, "insecure-skip-tls-verify is not allowed"),
    "cert-without-key": ({"users": [{"name": "u", "user": {
        "client-certificate-data": b64(b"x")}}]}, "client-key-data or client-key"),
    "cert-not-pem": ({"users": [{"name": "u", "user": {
        "client-certificate-data": b64(b"x"), "client-key-data": b64(b"y")}}]},
        "not a matching PEM certificate and key"),
    "token-file-missing": ({"users": [{"name": "u", "user": {"tokenFile": "/nonexistent/tok"}}]},
                           "tokenFile /nonexistent/tok: cannot read"),
    "token-and-basic": ({"users": [{"name": "u", "user": {"token": "t", "username": "a"}}]},
                        "more than one authentication method"),
    "auth-provider": ({"users": [{"name": "u", "user": {"auth-provider": {"name": "gcp"}}}]},
                      "auth-provider 'gcp' is not supported"),
    "exec-no-command": ({"users": [{"name": "u", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1"}}}]}, "command must be specified"),
    "exec-no-api-version": ({"users": [{"name": "u", "user": {"exec": {"command": "x"}}}]},
                            "apiVersion must be specified"),
    "exec-interactive": ({"users": [{"name": "u", "user": {"exec": {
        "command": "x", "apiVersion": "client.authentication.k8s.io/v1",
        "interactiveMode": "Always"}}}]}, "needs a terminal"),
}


@pytest.mark.parametrize("name", list(BAD_KUBECONFIGS))
def test_bad_kubeconfig_names_file_and_problem(tmp_path: Path, name: str) -> None:
    content, message = BAD_KUBECONFIGS[name]
    path = tmp_path / "bad.kubeconfig"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        write_kubeconfig(path, "https://127.0.0.1:1", cluster={"insecure-skip-tls-verify": True})
        doc = yaml.safe_load(path.read_text())
        doc.update(content)
        path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        load_client_config(str(path))
    assert str(path) in str(info.value)
    assert message in str(info.value)


# ============================================================================ exec plugins

EXEC_PLUGIN = r'''
import json, os, sys
from pathlib import Path

state = Path(os.environ["FM_STATE"])
n = int(state.read_text()) + 1 if state.exists() else 1
state.write_text(str(n))
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
Path(str(state) + ".info").write_text(json.dumps({"info": info, "argv": sys.argv[1:]}))
if os.environ.get("FM_FAIL"):
    print("no credentials for you", file=sys.stderr)
    sys.exit(3)
status = {}
tokens = [t for t in os.environ.get("FM_TOKENS", "").split(",") if t]
if tokens:
    status["token"] = tokens[min(n, len(tokens)) - 1]
if os.environ.get("FM_CERT"):
    status["clientCertificateData"] = Path(os.environ["FM_CERT"]).read_text()
    status["clientKeyData"] = Path(os.environ["FM_KEY"]).read_text()
if os.environ.get("FM_EXPIRY"):
    status["expirationTimestamp"] = os.environ["FM_EXPIRY"]
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))
'''


def exec_kubeconfig(sim: SimulatedCluster, tmp_path: Path, env: dict[str, str],
                    *, api_version: str = "client.authentication.k8s.io/v1") -> tuple[Path, Path]:
    """A kubeconfig whose user is the plugin above (run by this Python); returns it and the
    plugin's state file (the number of runs)."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(EXEC_PLUGIN)
    state = tmp_path / "plugin.state"
    kc = write_kubeconfig(
        tmp_path / "kc", sim.api.url, cluster={"certificate-authority": str(sim.api.ca_file)},
        user={"exec": {"apiVersion": api_version, "command": sys.executable,
                       "args": [str(plugin), "--flag"], "provideClusterInfo": True,
                       "interactiveMode": "Never",
                       "env": [{"name": "FM_STATE", "value": str(state)},
                               *({"name": k, "value": v} for k, v in env.items())]}})
    return kc, state


def runs(state: Path) -> int:
    return int(state.read_text()) if state.exists() else 0


async def test_exec_plugin_token_cached_until_expiry(sim: SimulatedCluster,
                                                     tmp_path: Path) -> None:
    kc, state = exec_kubeconfig(sim, tmp_path, {"FM_TOKENS": sim.api.metrics_server_token,
                                                "FM_EXPIRY": "2999-01-01T00:00:00Z"})
    cfg = load_client_config(kc)
    assert cfg.auth_kind == "exec" and runs(state) == 0  # nothing runs before it is needed
    assert cfg.credentials_stale()
    async with KubeClient(cfg) as client:
        for _ in range(3):
            await client.get_json("/api/v1/nodes")
    assert runs(state) == 1
    assert not cfg.credentials_stale()
    seen = json.loads(Path(str(state) + ".info").read_text())
    assert seen["argv"] == ["--flag"]
    assert seen["info"]["kind"] == "ExecCredential"
    assert seen["info"]["apiVersion"] == "client.authentication.k8s.io/v1"
    assert seen["info"]["spec"]["interactive"] is False
    cluster_info = seen["info"]["spec"]["cluster"]
    assert cluster_info["server"] == sim.api.url
    assert base64.b64decode(cluster_info["certificate-authority-data"]) == \
        sim.api.ca_file.read_bytes()


async def test_exec_plugin_expired_credential_is_refetched(sim: SimulatedCluster,
                                                           tmp_path: Path) -> None:
    kc, state = exec_kubeconfig(sim, tmp_path, {"FM_TOKENS": sim.api.metrics_server_token,
                                                "FM_EXPIRY": "2001-01-01T00:00:00Z"},
                                api_version="client.authentication.k8s.io/v1beta1")
    cfg = load_client_config(kc)
    for i in range(1, 4):
        assert cfg.auth_headers() == {"Authorization": f"Bearer {sim.api.metrics_server_token}"}
        assert runs(state) == i


async def test_exec_plugin_rerun_after_401(sim: SimulatedCluster, tmp_path: Path) -> None:
    kc, state = exec_kubeconfig(
        sim, tmp_path, {"FM_TOKENS": f"revoked-token,{sim.api.metrics_server_token}"})
    cfg = load_client_config(kc)
    assert sorted(await node_names(cfg)) == [n.name for n in sim.cluster.nodes]
    assert runs(state) == 2


async def test_exec_plugin_client_certificate(sim: SimulatedCluster, tmp_path: Path) -> None:
    pair = sim.api.issue_client_cert("fm-exec-client", METRICS_SERVER_USER)
    kc, state = exec_kubeconfig(sim, tmp_path, {"FM_CERT": str(pair.cert_file),
                                                "FM_KEY": str(pair.key_file)})
    cfg = load_client_config(kc)
    async with KubeClient(cfg) as client:
        nodes = await client.get_json("/api/v1/nodes")
        assert len(nodes["items"]) == len(sim.cluster.nodes)
        assert cfg.auth_headers() == {}
        assert cfg.tls_generation == 1
    assert runs(state) == 1


async def test_exec_plugin_failure_is_a_config_error(sim: SimulatedCluster,
                                                     tmp_path: Path) -> None:
    kc, _ = exec_kubeconfig(sim, tmp_path, {"FM_FAIL": "1"})
    cfg = load_client_config(kc)
    with pytest.raises(ConfigError) as info:
        cfg.auth_headers()
    msg = str(info.value)
    assert str(kc) in msg and sys.executable in msg
    assert "exit status 3" in msg and "no credentials for you" in msg
    kc2 = write_kubeconfig(tmp_path / "kc2", sim.api.url, user={"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "/nonexistent/plugin",
        "installHint": "install the plugin"}})
    with pytest.raises(ConfigError, match=r"executable not found.*install the plugin"):
        load_client_config(kc2).auth_headers()


# ============================================================================ in-cluster


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replace_file(path: Path, text: str) -> None:
    """Atomically, as the kubelet updates projected volumes."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def test_in_cluster_config_and_token_rotation(sim: SimulatedCluster,
                                                    tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(sim.api.metrics_server_token)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(sim.api.port)}
    clock = FakeClock()
    cfg = load_client_config(None, environ=env, token_file=token_file, ca_file=sim.api.ca_file,
                             clock=clock)
    assert cfg.server == sim.api.url and cfg.source == "in-cluster"
    assert cfg.ca_file == str(sim.api.ca_file) and cfg.auth_kind == "token-file"
    assert cfg.bearer_token() == sim.api.metrics_server_token
    async with KubeClient(cfg) as client:
        assert len((await client.get_json("/api/v1/nodes"))["items"]) == len(sim.cluster.nodes)

        # the kubelet rotates the token: read again once a minute
        sim.api.add_token("rotated-token-1", METRICS_SERVER_USER)
        replace_file(token_file, "rotated-token-1\n")
        clock.now += 30
        assert cfg.bearer_token() == sim.api.metrics_server_token
        clock.now += 31
        assert cfg.auth_headers() == {"Authorization": "Bearer rotated-token-1"}

        # the old token is revoked before the minute is up: the 401 makes it read again
        sim.api.add_token("rotated-token-2", METRICS_SERVER_USER)
        replace_file(token_file, "rotated-token-2")
        del sim.api.tokens["rotated-token-1"]
        assert len((await client.get_json("/api/v1/nodes"))["items"]) == len(sim.cluster.nodes)
        assert cfg.bearer_token() == "rotated-token-2"

        # an unreadable file keeps the last token
        token_file.unlink()
        clock.now += 61
        assert cfg.bearer_token() == "rotated-token-2"


def test_in_cluster_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"):
        load_client_config("", environ={})
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    missing = tmp_path / "no-token"
    with pytest.raises(ConfigError) as info:
        load_client_config(None, environ=env, token_file=missing, ca_file=tmp_path / "ca")
    assert str(missing) in str(info.value)
    token = tmp_path / "token"
    token.write_text("t")
    # an unreadable CA is logged and the system trust store used (as client-go does)
    cfg = load_client_config(None, environ=env, token_file=token, ca_file=tmp_path / "no-ca")
    assert cfg.server == "https://[fd00::1]:443"
    assert cfg.ca_file is None
    assert cfg.auth_headers() == {"Authorization": "Bearer t"}


def test_with_tls_shares_credentials(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t1")
    cfg = load_client_config(None, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                            "KUBERNETES_SERVICE_PORT": "443"},
                             token_file=token, ca_file=tmp_path / "none", token_refresh_s=0)
    kubelet = cfg.with_tls(TLSConfig(insecure=True))
    assert kubelet.insecure and not cfg.insecure
    replace_file(token, "t2")
    assert kubelet.bearer_token() == "t2" == cfg.bearer_token()


# ============================================================================ KubeClient


@contextlib.asynccontextmanager
async def local_http_server(
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A plain-HTTP server on loopback for what the simulator cannot be made to do; yields
    its URL."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_client_headers_and_watch_framing(tmp_path: Path) -> None:
    """Against a plain local HTTP server: headers sent, and watch events split across chunks,
    blank lines, and a last event without its newline."""
    seen: list[tuple[dict[str, list[str]], dict[str, str]]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        headers: dict[str, list[str]] = {}
        for k, v in request.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        seen.append((headers, dict(request.query)))
        if request.query.get("watch") == "true":
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b'{"type":"ADDED","object":{"metadata":{"name":"a"')
            await asyncio.sleep(0.02)
            await resp.write(b'}}}\n\n{"type":"DELETED","object":{}}\n{"type":"BOOKMARK",')
            await asyncio.sleep(0.02)
            await resp.write(b'"object":{"metadata":{"resourceVersion":"7"}}}')
            await resp.write_eof()
            return resp
        if request.path == "/missing":
            return web.json_response({"kind": "Status", "reason": "NotFound", "code": 404,
                                      "message": 'nodes "x" not found'}, status=404)
        return web.json_response({"kind": "NodeList", "items": []})

    async with local_http_server(handler) as url:
        cfg = ClientConfig(url, token="tok", impersonate_user="bob",
                           impersonate_groups=["g1", "g2"])
        async with KubeClient(cfg) as client:
            assert await client.get_json("/api/v1/nodes", {"limit": "5"}) == {
                "kind": "NodeList", "items": []}
            events = [e async for e in client.watch("/api/v1/pods", {"watch": "true"},
                                                    PARTIAL_OBJECT_METADATA, timeout_s=10)]
            with pytest.raises(KubeApiError) as info:
                await client.get_json("/missing")
    assert info.value.status == 404 and info.value.reason == "NotFound"
    assert 'nodes "x" not found' in str(info.value)
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "BOOKMARK"]
    assert events[0]["object"]["metadata"]["name"] == "a"
    assert events[2]["object"]["metadata"]["resourceVersion"] == "7"
    headers, query = seen[0]
    assert headers["user-agent"] == [USER_AGENT] and USER_AGENT.startswith("fastmetrics/")
    assert headers["authorization"] == ["Bearer tok"]
    assert headers["accept"] == ["application/json"]
    assert headers["impersonate-user"] == ["bob"]
    assert headers["impersonate-group"] == ["g1", "g2"]
    assert query == {"limit": "5"}
    assert seen[1][0]["accept"] == [PARTIAL_OBJECT_METADATA]
    assert seen[1][0]["connection"] == ["close"]  # watch connections are not pooled


async def test_client_against_sim_errors_and_watch(sim: SimulatedCluster) -> None:
    cfg = load_client_config(sim.metrics_server_kubeconfig)
    async with KubeClient(cfg) as client:
        with pytest.raises(KubeApiError) as info:
            await client.get_json("/api/v1/nodes/nope")
        assert info.value.status == 404 and not info.value.gone
        with pytest.raises(KubeApiError) as info:  # RBAC: the service account reads no secrets
            await client.get_json("/api/v1/namespaces/default/configmaps")
        assert info.value.status == 403
        rv = str(sim.cluster.resource_version)
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}
        async with asyncio.timeout(10):
            stream = client.watch("/api/v1/nodes", params)
            try:
                sim.cluster.set_ready("sim-node-00001", False)
                event = await anext(stream)
            finally:
                await stream.aclose()
        assert event["type"] == "MODIFIED"
        assert event["object"]["metadata"]["name"] == "sim-node-00001"
    bad = ClientConfig(sim.api.url, TLSConfig(ca_file=str(sim.api.ca_file)), token="wrong")
    async with KubeClient(bad) as client:
        with pytest.raises(KubeApiError) as info:
            await client.get_json("/api/v1/nodes")
    assert info.value.status == 401


# ============================================================================ decoding


def test_decode_node_keeps_what_is_used() -> None:
    body = json.dumps({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": "n1", "resourceVersion": "9", "labels": {"a": "1"},
                     "annotations": {"metrics.k8s.io/resource-metrics-path": "/custom/path",
                                     "other": "x"},
                     "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:x": {}}}] * 50},
        "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [{"type": "Hostname", "address": "n1"},
                          {"type": "InternalIP", "address": "10.0.0.4"},
                          {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "conditions": [{"type": "MemoryPressure", "status": "True"},
                           {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                           {"type": "Ready", "status": "False"}],
            "allocatable": {"cpu": "3920m", "memory": "15Gi", "pods": "110"},
            "images": [{"names": ["x"], "sizeBytes": 1}] * 100,
        },
    }).encode()
    node = decode_node(body)
    assert node == NodeInfo(
        name="n1", labels={"a": "1"},
        addresses=(("Hostname", "n1"), ("InternalIP", "10.0.0.4"), ("InternalIP", "10.0.0.5")),
        kubelet_port=10250, ready=True, metrics_path="/custom/path", allocatable_cpu="3920m",
        allocatable_memory="15Gi")
    bare = decode_node(b'{"metadata":{"name":"n2","labels":null},"status":{}}')
    assert bare == NodeInfo("n2", {}, (), 0, False)
    with pytest.raises(msgspec.DecodeError):
        decode_node(b'{"metadata":{"name":5}}')


def test_labels_are_shared_and_read_only() -> None:
    labels = Labels({"app": "web"})
    mutations: list[Callable[[], object]] = [
        lambda: labels.__setitem__("a", "b"), lambda: labels.update(a="b"),
        lambda: labels.pop("app"), labels.clear, labels.popitem,
        lambda: labels.setdefault("x", "y"), lambda: labels.__delitem__("app")]
    for mutate in mutations:
        with pytest.raises(TypeError):
            mutate()
    with pytest.raises(TypeError):
        labels |= {"b": "c"}
    assert labels == {"app": "web"} and isinstance(labels, dict)
    assert json.dumps(labels) == '{"app": "web"}'
    assert pickle.loads(pickle.dumps(labels)) == labels
    assert copy.deepcopy(labels) == labels and type(copy.copy(labels)) is Labels
    assert dict(labels) | {"b": "c"} == {"app": "web", "b": "c"}

    sets = cluster_mod._LabelSets()
    a = sets.get(msgspec.Raw(b'{"app":"web","tier":"backend"}'))
    b = sets.get(msgspec.Raw(b'{"app":"web","tier":"backend"}'))
    assert a is b and a == {"app": "web", "tier": "backend"}
    assert sets.get(msgspec.Raw(b"null")) == {} and sets.get(msgspec.Raw()) == {}
    # unused sets are swept as the table grows; used ones stay shared
    keep = [sets.get(msgspec.Raw(f'{{"k":"{i}"}}'.encode())) for i in range(600)]
    for i in range(5000):
        sets.get(msgspec.Raw(f'{{"gone":"{i}"}}'.encode()))
    assert 601 <= len(sets) < 3000
    assert sets.get(msgspec.Raw(b'{"k":"7"}')) is keep[7]
    assert sets.get(msgspec.Raw(b'{"app":"web","tier":"backend"}')) is a


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(0.8, 30.0, rng=random.Random(1))
    delays = [b.next() for _ in range(10)]
    bases = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 30.0]
    for d, base in zip(delays, bases, strict=True):
        assert base <= d <= min(2 * base, 30.0)
    b.reset()
    assert 0.8 <= b.next() <= 1.6


# ============================================================================ informers


async def test_informers_sync_and_match_the_model(sim: SimulatedCluster) -> None:
    c = sim.cluster
    # pods in other phases are invisible (SPEC §5.4)
    c.add_pod("default", "pending-pod", "sim-node-00000", {"app": "p"}, ["c"], phase="Pending")
    c.add_pod("default", "done-pod", "sim-node-00001", {"app": "d"}, ["c"], phase="Succeeded")
    c.add_pod("shop", "failed-pod", "sim-node-00002", {"app": "f"}, ["c"], phase="Failed")
    c.set_ready("sim-node-00002", False)
    state = ClusterState(load_client_config(sim.metrics_server_kubeconfig), **FAST)
    assert not state.synced
    await state.start()
    try:
        assert await state.wait_synced(15)
        assert state.synced
        nodes = state.nodes()
        assert [n.name for n in nodes] == sorted(n.name for n in c.nodes)
        for info in nodes:
            model = c.node_by_name[info.name]
            assert info.labels == model.labels
            assert info.addresses == (("InternalIP", model.address), ("Hostname", model.name))
            assert info.kubelet_port == sim.farm.port
            assert info.ready is model.ready
            assert info.metrics_path == ""
            assert (info.allocatable_cpu, info.allocatable_memory) == ("8", "32Gi")
            assert state.node(info.name) is info
        assert state.node("nope") is None
        assert state.node_count == len(c.nodes)

        assert cached(state) == running_model(c)
        assert state.pod_count == len(running_model(c)) == SHAPE.nodes * SHAPE.pods_per_node
        for name in ("pending-pod", "done-pod"):
            assert state.pod("default", name) is None
        for ns in SHAPE.namespaces:
            in_ns = state.pods_in(ns)
            assert sorted(p.name for p in in_ns) == sorted(
                name for (n, name), p in c.pods.items() if n == ns and p.phase == "Running")
            for p in in_ns:
                assert state.pod(ns, p.name) is p
        assert state.pods_in("no-such-namespace") == []
        # equal label sets are one object; namespace names are interned
        pods = state.pods_in(None)
        web = [p for p in pods if p.labels.get("app") == "web"]
        assert len(web) > 1 and all(p.labels is web[0].labels for p in web)
        assert all(p.namespace is sys.intern(p.namespace) for p in pods)
        assert sim.api.counts["list pods"] == 1 and sim.api.counts["list nodes"] == 1
    finally:
        await state.stop()


async def test_churn_is_reflected(sim: SimulatedCluster, rng: random.Random) -> None:
    c = sim.cluster
    nodes: list[tuple[str, NodeInfo | None, NodeInfo | None]] = []
    tracker = Tracker()
    state = ClusterState(load_client_config(sim.metrics_server_kubeconfig),
                         on_node_change=lambda *e: nodes.append(e), on_pod_change=tracker,
                         **FAST)
    async with state:
        assert await state.wait_synced(15)
        assert tracker.counts["ADDED"] == len(running_model(c))
        node_names = [n.name for n in c.nodes]

        # one of each, checked one by one
        key = next(iter(running_model(c)))
        c.set_phase(*key, "Succeeded")
        await eventually(lambda: state.pod(*key) is None, what="Running -> Succeeded removes")
        c.add_pod("payments", "late-starter", node_names[0], {"app": "late"}, ["c"],
                  phase="Pending")
        await asyncio.sleep(0.1)
        assert state.pod("payments", "late-starter") is None
        c.set_phase("payments", "late-starter", "Running")
        await eventually(lambda: state.pod("payments", "late-starter") is not None,
                         what="Pending -> Running adds")
        set_pod_labels(c, "payments", "late-starter", {"app": "late", "version": "2"})
        await eventually(lambda: (p := state.pod("payments", "late-starter")) is not None
                         and p.labels == {"app": "late", "version": "2"}, what="label change")
        c.delete_pod("payments", "late-starter")
        await eventually(lambda: state.pod("payments", "late-starter") is None, what="delete")
        c.set_ready(node_names[1], False)
        await eventually(lambda: (n := state.node(node_names[1])) is not None and not n.ready,
                         what="node NotReady")
        c.set_node_labels(node_names[2], {**c.node_by_name[node_names[2]].labels, "pool": "gpu"})
        await eventually(lambda: (n := state.node(node_names[2])) is not None
                         and n.labels.get("pool") == "gpu", what="node labels")

        # then a burst of random changes
        for i in range(300):
            running = [k for k, p in c.pods.items() if p.phase == "Running"]
            op = rng.random()
            if op < 0.35 or not running:
                c.add_pod(rng.choice(SHAPE.namespaces), f"burst-{i}", rng.choice(node_names),
                          {"app": rng.choice(["a", "b", "c"])}, ["c"],
                          phase=rng.choice(["Running", "Running", "Pending"]))
            elif op < 0.55:
                c.delete_pod(*rng.choice(list(c.pods)))
            elif op < 0.75:
                c.set_phase(*rng.choice(list(c.pods)),
                            rng.choice(["Running", "Succeeded", "Failed"]))
            else:
                k = rng.choice(running)
                set_pod_labels(c, *k, {"app": rng.choice(["a", "b"]), "rev": str(i)})
            if i % 50 == 0:
                await asyncio.sleep(0)
        await eventually(lambda: cached(state) == running_model(c), what="burst converges")
        assert tracker.problems == []
        assert tracker.present == set(running_model(c))
        assert state.pod_informer.stats.lists == 1  # no relist was needed
        assert [k for k, _, _ in nodes].count("MODIFIED") == 2


async def test_paging(tmp_path: Path) -> None:
    shape = ClusterShape(nodes=3, pods_per_node=400, containers_per_pod=1, seed=4)
    async with SimulatedCluster(shape, tmp_path / "sim") as sim:
        cfg = load_client_config(sim.metrics_server_kubeconfig)
        async with KubeClient(cfg) as client:
            pods = PodInformer(client, **FAST)
            pods.start()
            try:
                assert await pods.wait_synced(30)
                assert cached(pods) == running_model(sim.cluster)
                assert len(pods) == 1200
                assert sim.api.counts["list pods"] == 3  # 500 + 500 + 200
                assert pods.stats.list_pages == 3 and pods.stats.lists == 1
            finally:
                await pods.stop()
            tiny = NodeInformer(client, page_size=1, **FAST)
            tiny.start()
            try:
                assert await tiny.wait_synced(30)
                assert [n.name for n in tiny.nodes()] == sorted(n.name for n in sim.cluster.nodes)
                assert tiny.stats.list_pages == 3
            finally:
                await tiny.stop()


async def test_expired_continue_token_relists_unpaged(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Cluster, "HISTORY", 8)
    shape = ClusterShape(nodes=2, pods_per_node=10, containers_per_pod=1, seed=6)
    async with SimulatedCluster(shape, tmp_path / "sim") as sim:
        c = sim.cluster
        async with KubeClient(load_client_config(sim.metrics_server_kubeconfig)) as client:
            calls: list[dict[str, str]] = []
            original = client.get_bytes

            async def get_bytes(path: str, params: Any = None, accept: str = "") -> bytes:
                calls.append(dict(params or {}))
                body = await original(path, params, accept)
                if len(calls) == 1:  # between the pages, more changes than the history holds
                    for i in range(12):
                        c.add_pod("default", f"between-{i}", "sim-node-00000", {}, ["c"])
                return body

            monkeypatch.setattr(client, "get_bytes", get_bytes)
            pods = PodInformer(client, page_size=5, **FAST)
            pods.start()
            try:
                assert await pods.wait_synced(15)
                assert cached(pods) == running_model(c)
            finally:
                await pods.stop()
    assert "continue" in calls[1] and calls[2] == {"fieldSelector": "status.phase=Running"}


async def test_bookmarks_advance_the_resource_version(tmp_path: Path) -> None:
    async with (SimulatedCluster(SHAPE, tmp_path / "sim", bookmark_interval_s=0.2) as sim,
                KubeClient(load_client_config(sim.metrics_server_kubeconfig)) as client):
        pods = PodInformer(client, **FAST)
        pods.start()
        try:
            assert await pods.wait_synced(15)
            listed = int(pods.resource_version)
            assert listed == sim.cluster.resource_version
            # changes the pod watch does not show: only bookmarks carry the new version
            for _ in range(3):
                sim.cluster.set_ready("sim-node-00000", not sim.cluster.nodes[0].ready)
            target = sim.cluster.resource_version
            assert target == listed + 3
            await eventually(lambda: int(pods.resource_version) == target, 10,
                             "a bookmark brings the pod informer to the latest version")
            assert pods.stats.bookmarks >= 1 and pods.stats.events == 0
        finally:
            await pods.stop()


async def test_watch_cut_heals_without_relist(sim: SimulatedCluster, tmp_path: Path,
                                              rng: random.Random) -> None:
    c = sim.cluster
    async with TcpProxy(sim.api.port) as proxy:
        kc = write_kubeconfig(tmp_path / "kc", proxy.url,
                              cluster={"certificate-authority": str(sim.api.ca_file)},
                              user={"token": sim.api.metrics_server_token})
        tracker = Tracker()
        async with KubeClient(load_client_config(kc)) as client:
            pods = PodInformer(client, **FAST)
            pods.add_listener(tracker)
            pods.start()
            try:
                assert await pods.wait_synced(15)
                for round_ in range(3):
                    proxy.paused = True
                    proxy.cut()
                    for i in range(10):
                        if rng.random() < 0.5:
                            c.add_pod("shop", f"cut-{round_}-{i}", "sim-node-00001",
                                      {"round": str(round_)}, ["c"])
                        else:
                            c.set_phase(*rng.choice(list(c.pods)), "Succeeded")
                    await asyncio.sleep(0.3)  # reconnects fail meanwhile
                    proxy.paused = False
                    await eventually(lambda: cached(pods) == running_model(c),
                                     what="the cache heals after a cut")
                assert tracker.problems == []
                assert pods.stats.lists == 1 and pods.stats.relists == 0
                assert pods.stats.watches >= 4 and pods.stats.errors >= 3
            finally:
                await pods.stop()


async def test_apiserver_restart_resumes_the_watch(sim: SimulatedCluster) -> None:
    c = sim.cluster
    tracker = Tracker()
    state = ClusterState(load_client_config(sim.metrics_server_kubeconfig),
                         on_pod_change=tracker, **FAST)
    async with state:
        assert await state.wait_synced(15)

        def changes() -> None:
            c.add_pod("default", "born-while-down", "sim-node-00000", {"x": "1"}, ["c"])
            c.delete_pod(*next(iter(c.pods)))
            c.set_ready("sim-node-00001", False)

        await restart_apiserver(sim, changes)
        await eventually(lambda: cached(state) == running_model(c), what="pods after restart",
                         detail=lambda: (describe(state.pod_informer), c.resource_version,
                                         sim.api.counts))
        await eventually(lambda: (n := state.node("sim-node-00001")) is not None and not n.ready,
                         what="nodes after restart",
                         detail=lambda: (describe(state.node_informer), c.resource_version,
                                         sim.api.counts))
        assert state.pod_informer.stats.relists == 0 and state.pod_informer.stats.lists == 1
        assert state.node_informer.stats.lists == 1
        assert sim.api.counts["watch pods"] >= 1 and sim.api.counts["list pods"] == 0
        assert tracker.problems == []


async def test_410_gone_relists_to_the_exact_state(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Cluster, "HISTORY", 8)
    async with SimulatedCluster(SHAPE, tmp_path / "sim") as sim:
        c = sim.cluster
        async with TcpProxy(sim.api.port) as proxy:
            kc = write_kubeconfig(tmp_path / "kc", proxy.url,
                                  cluster={"certificate-authority": str(sim.api.ca_file)},
                                  user={"token": sim.api.metrics_server_token})
            tracker = Tracker()
            async with KubeClient(load_client_config(kc)) as client:
                pods = PodInformer(client, **FAST)
                pods.add_listener(tracker)
                pods.start()
                try:
                    assert await pods.wait_synced(15)
                    before = pods.resource_version
                    proxy.paused = True
                    proxy.cut()
                    keys = list(running_model(c))
                    for i in range(6):
                        c.add_pod("monitoring", f"while-away-{i}", "sim-node-00002",
                                  {"i": str(i)}, ["c"])
                    for k in keys[:4]:
                        c.delete_pod(*k)
                    for k in keys[4:8]:
                        c.set_phase(*k, "Failed")
                    set_pod_labels(c, *keys[8], {"relabelled": "yes"})
                    assert c.resource_version - int(before) > Cluster.HISTORY
                    await asyncio.sleep(0.2)
                    proxy.paused = False
                    await eventually(lambda: pods.stats.relists >= 1, what="410 -> relist")
                    await eventually(lambda: cached(pods) == running_model(c),
                                     what="the relist converges")
                    assert pods.stats.lists >= 2
                    assert tracker.problems == []
                    assert tracker.present == set(running_model(c))
                finally:
                    await pods.stop()


async def test_error_events_http_410_and_garbage(tmp_path: Path) -> None:
    """A scripted apiserver: an ERROR event (not 410) backs off and resumes from the same
    version; a watch that ends resumes from the last bookmark; an HTTP 410 on the watch
    relists; a malformed event backs off and resumes."""
    lists: list[dict[str, str]] = []
    watches: list[dict[str, str]] = []
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            lists.append(dict(request.query))
            gen = len(lists)
            items = [{"metadata": {"namespace": "ns", "name": f"p{i}", "resourceVersion": "5",
                                   "labels": {"gen": str(gen)}}} for i in range(4 - gen)]
            return web.json_response({"kind": "PartialObjectMetadataList",
                                      "apiVersion": "meta.k8s.io/v1",
                                      "metadata": {"resourceVersion": str(10 * gen)},
                                      "items": items})
        watches.append(dict(request.query))
        if len(watches) == 3:
            return web.json_response({"kind": "Status", "status": "Failure", "code": 410,
                                      "reason": "Expired", "message": "too old"}, status=410)
        resp = web.StreamResponse()
        await resp.prepare(request)
        if len(watches) == 1:
            await resp.write(b'{"type":"ERROR","object":{"kind":"Status","code":500,'
                             b'"reason":"InternalError","message":"etcd leader changed"}}\n')
        elif len(watches) == 2:
            await resp.write(b'{"type":"ADDED","object":{"metadata":{"namespace":"ns",'
                             b'"name":"p9","resourceVersion":"11"}}}\n'
                             b'{"type":"BOOKMARK","object":{"metadata":'
                             b'{"resourceVersion":"12"}}}\n')
        elif len(watches) == 4:
            await resp.write(b'{"type":"ADDED","object":{"metadata":{"name":7}}}\n')
        else:
            await asyncio.wait_for(done.wait(), 10)
        await resp.write_eof()
        return resp

    async with (local_http_server(handler) as url,
                KubeClient(ClientConfig(url, token="t")) as client):
        pods = PodInformer(client, **FAST)
        pods.start()
        try:
            await eventually(lambda: len(watches) >= 5, 10, "five watches")
        finally:
            done.set()
            await pods.stop()
    assert [w["resourceVersion"] for w in watches[:5]] == ["10", "10", "12", "20", "20"]
    assert all(w["allowWatchBookmarks"] == "true" for w in watches)
    assert all(300 <= int(w["timeoutSeconds"]) < 600 for w in watches)
    assert all(w["fieldSelector"] == "status.phase=Running" for w in watches + lists)
    assert len(lists) == 2 and lists[0]["limit"] == "500"
    assert pods.stats.relists == 1 and pods.stats.lists == 2 and pods.stats.errors == 2
    assert pods.stats.bookmarks == 1 and pods.stats.events == 1
    assert cached(pods) == {("ns", "p0"): {"gen": "2"}, ("ns", "p1"): {"gen": "2"}}
    assert pods.resource_version == "20"


async def test_unauthorized_backs_off_until_credentials_work(sim: SimulatedCluster,
                                                             tmp_path: Path) -> None:
    kc = write_kubeconfig(tmp_path / "kc", sim.api.url,
                          cluster={"certificate-authority": str(sim.api.ca_file)},
                          user={"token": "not-yet-valid"})
    async with KubeClient(load_client_config(kc)) as client:
        nodes = NodeInformer(client, **FAST)
        nodes.start()
        try:
            assert not await nodes.wait_synced(0.5)
            assert nodes.stats.errors >= 2
            assert isinstance(nodes.last_error, KubeApiError)
            assert nodes.last_error.status == 401
            sim.api.add_token("not-yet-valid", METRICS_SERVER_USER)
            assert await nodes.wait_synced(5)
            assert nodes.last_error is None and len(nodes) == SHAPE.nodes
        finally:
            await nodes.stop()


async def test_gc_freeze_once_after_sync(sim: SimulatedCluster,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    def collect(*_: object) -> int:
        calls.append("collect")
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    state = ClusterState(load_client_config(sim.metrics_server_kubeconfig), gc_freeze=True,
                         **FAST)
    with pytest.raises(RuntimeError):
        await state.wait_synced(1)
    async with state:
        assert await state.wait_synced(15)
        assert await state.wait_synced(1)
        sim.cluster.add_pod("default", "after-freeze", "sim-node-00000", {}, ["c"])
        await eventually(lambda: state.pod("default", "after-freeze") is not None)
    assert calls == ["collect", "freeze"] and state.gc_frozen


async def test_informer_base_is_abstract() -> None:
    class Bare(Informer[str, str]):
        pass

    async with KubeClient(ClientConfig("https://127.0.0.1:1")) as client:
        bare = Bare(client, "/x")
        with pytest.raises(NotImplementedError):
            bare._decode_page(b"{}")
        assert bare.resource_version == "" and not bare.synced.is_set()


# ============================================================================ memory


@pytest.mark.timeout(900)
@pytest.mark.parametrize("labels", ["shared", "unique"])
async def test_memory_per_pod(tmp_path: Path, labels: str,
                              record_property: Callable[[str, object], None],
                              capsys: pytest.CaptureFixture[str]) -> None:
    """What the pod cache holds per pod for ~20,000 Running pods (PERFORMANCE.md: < 1 KB).

    ``shared``: the simulator's labels (a few deployments, so few distinct label sets);
    ``unique``: every pod also carries its own label (as StatefulSet pods do), so no two pods
    share a label set. Only allocations made by fastmetrics.cluster are counted (the simulated
    apiserver runs in this process too).
    """
    shape = ClusterShape(nodes=40, pods_per_node=500, containers_per_pod=1, seed=8)
    sim = SimulatedCluster(shape, tmp_path / "sim")
    if labels == "unique":
        for pod in sim.cluster.pods.values():
            pod.labels["statefulset.kubernetes.io/pod-name"] = pod.name
    async with sim:
        n = len(sim.cluster.pods)
        async with KubeClient(load_client_config(sim.metrics_server_kubeconfig)) as client:
            pods = PodInformer(client, **FAST)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                pods.start()
                try:
                    assert await pods.wait_synced(600)
                finally:
                    await pods.stop()
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
        assert len(pods) == n == 20_000
        only = [tracemalloc.Filter(True, cluster_mod.__file__)]
        held = sum(d.size_diff for d in after.filter_traces(only).compare_to(
            before.filter_traces(only), "filename"))
        per_pod = held / n
        record_property("bytes_per_pod", round(per_pod))
        with capsys.disabled():
            print(f"\n[memory] pod cache, {labels} labels: {held / 2**20:.2f} MiB for {n} pods"
                  f" = {per_pod:.0f} bytes/pod ({pods.label_sets} label sets)")
        assert per_pod < 1024
        assert cached(pods) == running_model(sim.cluster)
