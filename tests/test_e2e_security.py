"""End to end, over real TLS: who gets in (SPEC §6). The simulated cluster (kube-apiserver
stand-in with TokenReview, SubjectAccessReview, the authentication ConfigMap and the
aggregator) runs on a background loop; fastmetrics runs as a subprocess with the stock
manifest flags plus short authorization and token cache TTLs, registered as the
metrics.k8s.io APIService.

Requests reach fastmetrics two ways: through the simulated aggregator (which authenticates and
authorizes first, as kube-apiserver does, then proxies with its front-proxy client
certificate), and directly, with or without client certificates, as a pod on the cluster
network could. Every case checks the exact status code and body.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _e2e import LoopThread

from fastmetrics.sim.apiserver import Rule
from fastmetrics.sim.certs import CertAuthority, KeyPair
from fastmetrics.sim.kubeconfig import write_kubeconfig
from fastmetrics.sim.model import ClusterShape
from fastmetrics.sim.run import SimulatedCluster, start_fastmetrics

P = "/apis/metrics.k8s.io/v1beta1"
G = "metrics.k8s.io"
KUBECTL = shutil.which("kubectl")

ALLOWED_TTL_S = 3.0
DENIED_TTL_S = 2.0
TOKEN_TTL_S = 3.0


def _status(code: int, reason: str, message: str,
            details: dict[str, str] | None = None) -> bytes:
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        doc["details"] = details
    doc["code"] = code
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


UNAUTHORIZED = _status(401, "Unauthorized", "Unauthorized")


def _forbidden_list(user: str, resource: str, namespace: str = "") -> bytes:
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return _status(403, "Forbidden",
                   f'{resource}.{G} is forbidden: User "{user}" cannot list resource '
                   f'"{resource}" in API group "{G}" {where}', {"group": G, "kind": resource})


def _forbidden_path(user: str, path: str) -> bytes:
    return _status(403, "Forbidden", f'forbidden: User "{user}" cannot get path "{path}"', {})


@dataclass
class Env:
    lt: LoopThread
    sim: SimulatedCluster
    url: str
    tmp: Path
    tokens: dict[str, str]

    @property
    def serving_ca(self) -> Path:
        """fastmetrics' self-signed certificate (written into --cert-dir)."""
        return self.sim.workdir / "fastmetrics-certs" / "apiserver.crt"

    def direct(self, path: str, *, cert: KeyPair | None = None,
               headers: dict[str, str] | None = None,
               token: str | None = None) -> tuple[int, bytes]:
        """GET ``path`` from fastmetrics itself, verifying its certificate, presenting
        ``cert`` (and a bearer ``token``) when given."""
        ctx = ssl.create_default_context(cafile=str(self.serving_ca))
        if cert is not None:
            ctx.load_cert_chain(cert.cert_file, cert.key_file)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return _get(self.url + path, ctx, h)

    def as_proxy(self, path: str, user: str, group: str,
                 extra_headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """What the aggregator sends: its front-proxy client certificate, X-Remote-User and
        X-Remote-Group."""
        h = {"X-Remote-User": user, "X-Remote-Group": group, **(extra_headers or {})}
        ctx = ssl.create_default_context(cafile=str(self.serving_ca))
        fp = self.sim.api.front_proxy_client
        ctx.load_cert_chain(fp.cert_file, fp.key_file)
        return _get(self.url + path, ctx, h)

    def via_aggregator(self, path: str, token: str) -> tuple[int, bytes]:
        """GET ``path`` from the simulated kube-apiserver as the token's user."""
        ctx = ssl.create_default_context(cafile=str(self.sim.api.ca_file))
        return _get(self.sim.api.url + path, ctx, {"Authorization": f"Bearer {token}"})

    def reviews(self, user: str) -> list[dict[str, Any]]:
        """The SubjectAccessReview specs received for ``user`` so far."""
        return [s for s in list(self.sim.api.subject_access_reviews) if s.get("user") == user]

    def token_reviews(self, token: str) -> int:
        return sum(1 for s in list(self.sim.api.token_reviews) if s.get("token") == token)


def _open(req: urllib.request.Request, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def _get(url: str, ctx: ssl.SSLContext, headers: dict[str, str]) -> tuple[int, bytes]:
    return _open(urllib.request.Request(url, headers=headers), ctx)


def _wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(10_000):
        if check():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout_s} s")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("security")
    lt = LoopThread()
    sim = SimulatedCluster(ClusterShape(nodes=2, pods_per_node=5, containers_per_pod=1,
                                        namespaces=("default", "shop")),
                           tmp / "sim", stats_interval_s=1.0)
    tokens = {u: f"{u}-token-0123456789" for u in ("alice", "bob", "eve")}
    for user, token in tokens.items():
        sim.api.add_token(token, user)
    metrics_resources = ("nodes", "pods")
    sim.api.policy.rules += [
        Rule("alice:metrics", ("get", "list"), users=("alice",), api_groups=(G,),
             resources=metrics_resources),
        Rule("alice:metrics-path", ("get",), users=("alice",), non_resource_urls=("/metrics",)),
        Rule("bob:default-pods", ("get", "list"), users=("bob",), api_groups=(G,),
             resources=("pods",), namespaces=("default",)),
    ]
    try:
        lt.run(sim.start())
        with contextlib.ExitStack() as processes:
            url = lt.run(start_fastmetrics(
                sim, processes, 60.0, metric_resolution="10s", kubelet_request_timeout="5s",
                extra_args=[
                    f"--authorization-webhook-cache-authorized-ttl={ALLOWED_TTL_S:g}s",
                    f"--authorization-webhook-cache-unauthorized-ttl={DENIED_TTL_S:g}s",
                    f"--authentication-token-webhook-cache-ttl={TOKEN_TTL_S:g}s"]), 90.0)
            yield Env(lt, sim, url, tmp, tokens)
    finally:
        with contextlib.suppress(Exception):
            lt.run(sim.stop())
        lt.close()


def _names(body: bytes) -> list[tuple[str | None, str]]:
    doc = json.loads(body)
    return sorted((i["metadata"].get("namespace"), i["metadata"]["name"]) for i in doc["items"])


# ------------------------------------------------------------------ through the aggregator


def test_aggregator_allowed_user(env: Env) -> None:
    status, body = env.via_aggregator(f"{P}/nodes", env.tokens["alice"])
    assert status == 200, body
    assert json.loads(body)["kind"] == "NodeMetricsList"
    assert _names(body) == sorted((None, n.name) for n in env.sim.cluster.nodes)
    # fastmetrics asked kube-apiserver about alice (the aggregator had said who she is)
    assert {"resourceAttributes": {"verb": "list", "group": G, "version": "v1beta1",
                                   "resource": "nodes"},
            "user": "alice", "groups": ["system:authenticated"]} in env.reviews("alice")


def test_aggregator_user_allowed_in_one_namespace(env: Env) -> None:
    token = env.tokens["bob"]
    status, body = env.via_aggregator(f"{P}/namespaces/default/pods", token)
    assert status == 200, body
    assert _names(body) == sorted(
        (ns, name) for (ns, name) in env.sim.cluster.pods if ns == "default")
    ns, name = next(k for k in env.sim.cluster.pods if k[0] == "default")
    status, body = env.via_aggregator(f"{P}/namespaces/{ns}/pods/{name}", token)
    assert (status, json.loads(body)["metadata"]["name"]) == (200, name)
    # elsewhere kube-apiserver itself refuses (the stand-in writes no trailing newline)
    status, body = env.via_aggregator(f"{P}/namespaces/shop/pods", token)
    assert (status, body) == (403, _forbidden_list("bob", "pods", "shop").rstrip(b"\n"))
    # and fastmetrics refuses the same, byte for byte, when the aggregator's credentials
    # carry bob there
    assert env.as_proxy(f"{P}/namespaces/shop/pods", "bob", "system:authenticated") == (
        403, _forbidden_list("bob", "pods", "shop"))
    assert env.as_proxy(f"{P}/pods", "bob", "system:authenticated") == (
        403, _forbidden_list("bob", "pods"))
    other = next(k for k in env.sim.cluster.pods if k[0] == "shop")
    assert env.as_proxy(f"{P}/namespaces/shop/pods/{other[1]}", "bob",
                        "system:authenticated") == (403, _status(
        403, "Forbidden",
        f'pods.{G} "{other[1]}" is forbidden: User "bob" cannot get resource "pods" in API '
        f'group "{G}" in the namespace "shop"', {"name": other[1], "group": G, "kind": "pods"}))
    status, body = env.as_proxy(f"{P}/namespaces/default/pods", "bob", "system:authenticated")
    assert status == 200, body


@pytest.mark.skipif(KUBECTL is None and os.environ.get("CI") != "true",
                    reason="kubectl is not on PATH")
def test_kubectl_top_as_a_namespace_user(env: Env) -> None:
    if KUBECTL is None:
        pytest.fail("kubectl is required under CI=true")
    kubeconfig = env.tmp / "bob.kubeconfig"
    write_kubeconfig(kubeconfig, env.sim.api.url, env.sim.api.ca_file,
                     token=env.tokens["bob"], user_name="bob", context_name="bob")

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir",
                               str(env.tmp / "kube-cache"), *args],
                              capture_output=True, text=True, timeout=60)

    r = kubectl("top", "pod", "-n", "default")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0] for line in r.stdout.strip().splitlines()[1:]}
    assert rows == {name for (ns, name) in env.sim.cluster.pods if ns == "default"}
    r = kubectl("top", "pod", "-n", "shop")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        'Error from server (Forbidden): pods.metrics.k8s.io is forbidden: User "bob" cannot '
        'list resource "pods" in API group "metrics.k8s.io" in the namespace "shop"')


def test_aggregator_denied_user(env: Env) -> None:
    status, body = env.via_aggregator(f"{P}/nodes", env.tokens["eve"])
    assert (status, body) == (403, _forbidden_list("eve", "nodes").rstrip(b"\n"))
    before = len(env.reviews("eve"))
    assert env.as_proxy(f"{P}/nodes", "eve", "system:authenticated") == (
        403, _forbidden_list("eve", "nodes"))
    assert len(env.reviews("eve")) == before + 1  # decided by a SubjectAccessReview


# ------------------------------------------------------------------ direct access


def test_no_client_certificate(env: Env) -> None:
    # anonymous: the probes and what RBAC gives system:unauthenticated, nothing else
    for path in ("/readyz", "/livez", "/healthz"):
        assert env.direct(path) == (200, b"ok"), path
    assert env.direct(f"{P}/nodes") == (403, _forbidden_list("system:anonymous", "nodes"))
    assert env.direct(f"{P}/namespaces/default/pods") == (
        403, _forbidden_list("system:anonymous", "pods", "default"))
    assert env.direct("/metrics") == (403, _forbidden_path("system:anonymous", "/metrics"))
    # exact path matching: /readyz does not cover /readyz/<check>
    assert env.direct("/readyz/shutdown") == (
        403, _forbidden_path("system:anonymous", "/readyz/shutdown"))
    assert env.direct("/apis") == (403, _forbidden_path("system:anonymous", "/apis"))
    # /version is public information in RBAC (system:public-info-viewer): a review allows it
    status, body = env.direct("/version")
    assert status == 200 and json.loads(body)["gitVersion"], body
    # forged front-proxy headers without a certificate are just headers: still anonymous
    assert env.direct(f"{P}/pods", headers={"X-Remote-User": "system:admin",
                                            "X-Remote-Group": "system:masters"}) == (
        403, _forbidden_list("system:anonymous", "pods"))


def test_untrusted_ca_with_forged_user(env: Env) -> None:
    rogue = CertAuthority(env.tmp / "rogue", "front-proxy")
    cert = rogue.issue("rogue-proxy", "front-proxy-client", client=True)
    forged = {"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
    # the TLS handshake completes (as with Go), then authentication fails: 401, everywhere
    for path in (f"{P}/nodes", "/metrics", "/readyz", "/nope"):
        assert env.direct(path, cert=cert, headers=forged) == (401, UNAUTHORIZED), path


def test_front_proxy_certificate_with_a_cn_not_allowed(env: Env) -> None:
    cert = env.sim.api.front_proxy_ca.issue("intruder", "intruder", client=True)
    assert env.direct(f"{P}/nodes", cert=cert, headers={"X-Remote-User": "admin"}) == (
        401, UNAUTHORIZED)


def test_forged_group_over_a_plain_client_certificate(env: Env) -> None:
    cert = env.sim.api.issue_client_cert("mallory", "mallory")
    assert env.direct(f"{P}/nodes", cert=cert,
                      headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
                      ) == (403, _forbidden_list("mallory", "nodes"))
    (spec,) = [s for s in env.reviews("mallory")
               if s.get("resourceAttributes", {}).get("resource") == "nodes"]
    assert spec["groups"] == ["system:authenticated"]
    assert list(spec["extra"]) == ["authentication.kubernetes.io/credential-id"]
    assert "admin" not in json.dumps(env.sim.api.subject_access_reviews)


def test_client_certificate_user(env: Env) -> None:
    cert = env.sim.api.issue_client_cert("root", "root", ("system:masters",))
    status, body = env.direct(f"{P}/nodes", cert=cert)
    assert status == 200 and json.loads(body)["kind"] == "NodeMetricsList"
    assert env.reviews("root") == []  # system:masters needs no review


def test_token_review(env: Env) -> None:
    token = env.tokens["alice"]
    status, body = env.direct(f"{P}/namespaces/shop/pods", token=token)
    assert status == 200, body
    assert _names(body) == sorted(k for k in env.sim.cluster.pods if k[0] == "shop")
    assert env.token_reviews(token) == 1
    assert env.direct(f"{P}/nodes", token="not-a-token") == (401, UNAUTHORIZED)
    assert env.direct("/readyz", token="not-a-token") == (401, UNAUTHORIZED)
    assert env.token_reviews("not-a-token") == 1  # the second answer came from the cache
    # eve's token is good, her permissions are not
    assert env.direct(f"{P}/pods", token=env.tokens["eve"]) == (
        403, _forbidden_list("eve", "pods"))


def test_cache_ttls(env: Env) -> None:
    alice, eve = env.tokens["alice"], env.tokens["eve"]

    def metrics_reviews(user: str) -> int:
        return sum(1 for s in env.reviews(user)
                   if s.get("nonResourceAttributes") == {"path": "/metrics", "verb": "get"})

    time.sleep(TOKEN_TTL_S)  # earlier tests' token answers have expired
    start = time.monotonic()
    status, body = env.direct("/metrics", token=alice)
    assert status == 200 and b"metrics_server_kubelet_request_total" in body
    assert env.direct("/metrics", token=eve) == (403, _forbidden_path("eve", "/metrics"))
    first = (metrics_reviews("alice"), metrics_reviews("eve"), env.token_reviews(alice))
    assert env.direct("/metrics", token=alice)[0] == 200
    assert env.direct("/metrics", token=eve)[0] == 403
    elapsed = time.monotonic() - start
    assert elapsed < DENIED_TTL_S, "too slow to observe the caches"
    assert (metrics_reviews("alice"), metrics_reviews("eve"), env.token_reviews(alice)) == first
    # the denial expires first
    time.sleep(DENIED_TTL_S - elapsed + 0.3)
    assert time.monotonic() - start < ALLOWED_TTL_S - 0.2, "too slow to observe the caches"
    assert env.direct("/metrics", token=eve)[0] == 403
    assert env.direct("/metrics", token=alice)[0] == 200
    assert (metrics_reviews("alice"), metrics_reviews("eve")) == (first[0], first[1] + 1)
    # then the allowance and the token review
    time.sleep(max(0.0, ALLOWED_TTL_S + 0.3 - (time.monotonic() - start)))
    assert env.direct("/metrics", token=alice)[0] == 200
    assert (metrics_reviews("alice"), env.token_reviews(alice)) == (first[0] + 1, first[2] + 1)


def test_metrics_only_where_allowed(env: Env) -> None:
    assert env.direct("/metrics") == (403, _forbidden_path("system:anonymous", "/metrics"))
    assert env.as_proxy("/metrics", "eve", "system:authenticated") == (
        403, _forbidden_path("eve", "/metrics"))
    status, body = env.as_proxy("/metrics", "system:kube-aggregator", "system:masters")
    assert status == 200 and b"# TYPE metrics_server_storage_points gauge" in body


def test_impersonation_is_refused(env: Env) -> None:
    assert env.as_proxy(f"{P}/nodes", "admin", "system:masters",
                        extra_headers={"Impersonate-User": "bob"}) == (403, _status(
        403, "Forbidden",
        'users "bob" is forbidden: User "admin" cannot impersonate resource "users" in API '
        'group "" at the cluster scope: impersonation is not supported by fastmetrics',
        {"name": "bob", "kind": "users"}))


def test_front_proxy_ca_rotation(env: Env) -> None:
    """Last: kube-apiserver gets a new front-proxy CA and client certificate; fastmetrics
    follows the ConfigMap and trusts the new one and no longer the old."""
    old = env.sim.api.front_proxy_client
    admin = env.sim.api.admin_token

    async def rotate() -> None:
        env.sim.api.rotate_front_proxy_ca()

    env.lt.run(rotate())
    new = env.sim.api.front_proxy_client
    assert new != old

    def new_cert_works() -> bool:
        return env.as_proxy(f"{P}/nodes", "system:admin", "system:masters")[0] == 200

    _wait_for(new_cert_works, 30.0, "fastmetrics trusting the new front-proxy CA")
    forged = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}
    assert env.direct(f"{P}/nodes", cert=old, headers=forged) == (401, UNAUTHORIZED)
    status, body = env.via_aggregator(f"{P}/nodes", admin)
    assert status == 200 and json.loads(body)["kind"] == "NodeMetricsList"
