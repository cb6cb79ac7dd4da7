"""Units of fastmetrics.auth: request attributes, Status bodies, certificate verification, the
authentication union, the authorizer and its caches (injected clocks), header stripping and
the dynamic settings. End to end over real TLS: tests/test_e2e_security.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict, MultiDict

from fastmetrics.auth import (
    ANONYMOUS,
    AUTHENTICATED,
    CREDENTIAL_ID_KEY,
    UNAUTHENTICATED,
    UNAUTHORIZED_BODY,
    USER_KEY,
    Attributes,
    AuthConfig,
    AuthenticationError,
    Authenticator,
    Authorizer,
    CertificateError,
    CertPool,
    DynamicAuthConfig,
    FileWatch,
    RequestHeaderConfig,
    RequestInfoError,
    Security,
    TokenAuthenticator,
    User,
    WebhookError,
    forbidden_body,
    request_attributes,
    status_json,
)
from fastmetrics.errors import ConfigError
from fastmetrics.options import Options
from fastmetrics.sim.certs import CertAuthority, KeyPair

G = "metrics.k8s.io"
P = "/apis/metrics.k8s.io/v1beta1"


# ------------------------------------------------------------------ request attributes


def _attrs(method: str, path: str, query: str = "") -> Attributes:
    q: MultiDict[str] = MultiDict(parse_qsl(query, keep_blank_values=True))
    return request_attributes(method, path, q)


def _res(verb: str, resource: str, namespace: str = "", name: str = "",
         subresource: str = "", path: str = "", group: str = G,
         version: str = "v1beta1") -> Attributes:
    return Attributes(True, verb, path, group, version, namespace, resource, subresource, name)


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", f"{P}/nodes", "", _res("list", "nodes", path=f"{P}/nodes")),
    ("GET", f"{P}/nodes/n1", "", _res("get", "nodes", name="n1", path=f"{P}/nodes/n1")),
    ("HEAD", f"{P}/nodes/n1", "", _res("get", "nodes", name="n1", path=f"{P}/nodes/n1")),
    ("GET", f"{P}/pods", "", _res("list", "pods", path=f"{P}/pods")),
    ("GET", f"{P}/namespaces/default/pods", "labelSelector=app%3Dweb",
     _res("list", "pods", "default", path=f"{P}/namespaces/default/pods")),
    ("GET", f"{P}/namespaces/default/pods/web-1", "",
     _res("get", "pods", "default", "web-1", path=f"{P}/namespaces/default/pods/web-1")),
    # watch: any value but 0/false (any case) is true, even an empty one
    ("GET", f"{P}/nodes", "watch=true", _res("watch", "nodes", path=f"{P}/nodes")),
    ("GET", f"{P}/nodes", "watch=1", _res("watch", "nodes", path=f"{P}/nodes")),
    ("GET", f"{P}/nodes", "watch=", _res("watch", "nodes", path=f"{P}/nodes")),
    ("GET", f"{P}/nodes", "watch=FALSE", _res("list", "nodes", path=f"{P}/nodes")),
    ("GET", f"{P}/nodes", "watch=0", _res("list", "nodes", path=f"{P}/nodes")),
    ("GET", f"{P}/watch/nodes", "", _res("watch", "nodes", path=f"{P}/watch/nodes")),
    ("GET", f"{P}/watch/namespaces/ns/pods/p", "",
     _res("watch", "pods", "ns", "p", path=f"{P}/watch/namespaces/ns/pods/p")),
    # a field selector pinning the name names the object
    ("GET", f"{P}/nodes", "fieldSelector=metadata.name%3Dn2",
     _res("list", "nodes", name="n2", path=f"{P}/nodes")),
    ("GET", f"{P}/nodes", "fieldSelector=metadata.name%3D..",
     _res("list", "nodes", path=f"{P}/nodes")),
    # list options that do not decode: no name from them; a watch is still honoured
    ("GET", f"{P}/nodes", "fieldSelector=metadata.name%3Dn2&limit=x&watch=yes",
     _res("watch", "nodes", path=f"{P}/nodes")),
    ("GET", f"{P}/nodes", "fieldSelector=metadata.name%3Dn2&labelSelector=a%20b",
     _res("list", "nodes", path=f"{P}/nodes")),
    ("DELETE", f"{P}/nodes", "", _res("deletecollection", "nodes", path=f"{P}/nodes")),
    ("POST", f"{P}/nodes", "", _res("create", "nodes", path=f"{P}/nodes")),
    ("OPTIONS", f"{P}/nodes/x", "", _res("", "nodes", name="x", path=f"{P}/nodes/x")),
    ("GET", f"{P}/nodes/n1/status/x", "",
     _res("get", "nodes", name="n1", subresource="status", path=f"{P}/nodes/n1/status/x")),
    ("GET", f"{P}/proxy/nodes/n1/x", "",
     _res("proxy", "nodes", name="n1", path=f"{P}/proxy/nodes/n1/x")),
    ("GET", "/api/v1/namespaces/default", "",
     _res("get", "namespaces", "default", "default", group="", version="v1",
          path="/api/v1/namespaces/default")),
    ("GET", "/api/v1/namespaces/kube-system/status", "",
     _res("get", "namespaces", "kube-system", "kube-system", "status", group="", version="v1",
          path="/api/v1/namespaces/kube-system/status")),
    # non-resource requests: the lower-cased method
    ("GET", "/apis", "", Attributes(False, "get", "/apis")),
    ("GET", "/apis/metrics.k8s.io", "", Attributes(False, "get", "/apis/metrics.k8s.io")),
    ("GET", P, "", Attributes(False, "get", P)),
    ("GET", "/metrics", "", Attributes(False, "get", "/metrics")),
    ("HEAD", "/readyz/shutdown", "", Attributes(False, "head", "/readyz/shutdown")),
    ("PUT", "/debug/flags/v", "", Attributes(False, "put", "/debug/flags/v")),
    ("GET", "/", "", Attributes(False, "get", "/")),
    ("GET", "/version/", "", Attributes(False, "get", "/version/")),
])
def test_request_attributes(method: str, path: str, query: str,
                            expected: Attributes) -> None:
    assert _attrs(method, path, query) == expected


def test_request_attributes_special_verb_without_resource() -> None:
    with pytest.raises(RequestInfoError, match="unable to determine kind and namespace"):
        _attrs("GET", f"{P}/watch")


# ------------------------------------------------------------------ Status bodies


def _status(message: str, details: dict[str, str], code: int = 403,
            reason: str = "Forbidden") -> bytes:
    return (json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": message, "reason": reason,
                        "details": details, "code": code}, separators=(",", ":")).encode()
            + b"\n")


def test_forbidden_bodies() -> None:
    assert forbidden_body("system:anonymous", _res("list", "nodes")) == _status(
        'nodes.metrics.k8s.io is forbidden: User "system:anonymous" cannot list resource '
        '"nodes" in API group "metrics.k8s.io" at the cluster scope',
        {"group": G, "kind": "nodes"})
    assert forbidden_body("bob", _res("list", "pods", "kube-system")) == _status(
        'pods.metrics.k8s.io is forbidden: User "bob" cannot list resource "pods" in API group '
        '"metrics.k8s.io" in the namespace "kube-system"', {"group": G, "kind": "pods"})
    assert forbidden_body("bob", _res("get", "pods", "other", "db-0")) == _status(
        'pods.metrics.k8s.io "db-0" is forbidden: User "bob" cannot get resource "pods" in API '
        'group "metrics.k8s.io" in the namespace "other"',
        {"name": "db-0", "group": G, "kind": "pods"})
    assert forbidden_body("eve", _res("get", "nodes", name="n1"), "no RBAC policy matched") \
        == _status('nodes.metrics.k8s.io "n1" is forbidden: User "eve" cannot get resource '
                   '"nodes" in API group "metrics.k8s.io" at the cluster scope: no RBAC policy '
                   'matched', {"name": "n1", "group": G, "kind": "nodes"})
    assert forbidden_body("eve", Attributes(False, "get", "/metrics")) == _status(
        'forbidden: User "eve" cannot get path "/metrics"', {})
    assert forbidden_body("eve", _res("get", "nodes", name="n1", subresource="proxy")) == \
        _status('nodes.metrics.k8s.io "n1" is forbidden: User "eve" cannot get resource '
                '"nodes/proxy" in API group "metrics.k8s.io" at the cluster scope',
                {"name": "n1", "group": G, "kind": "nodes"})
    # core group: no group in the qualified resource nor in the details
    assert forbidden_body("a", _res("impersonate", "users", name="b", group="")) == _status(
        'users "b" is forbidden: User "a" cannot impersonate resource "users" in API group "" '
        'at the cluster scope', {"name": "b", "kind": "users"})


def test_forbidden_body_escapes_as_go() -> None:
    # forbiddenMessage is HTML-sanitized, names are %q-quoted, and Go's JSON encoder escapes
    # <, > and & once more
    body = forbidden_body('a<b>&"c"', Attributes(False, "get", "/x\ty"))
    assert body == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                    b'"message":"forbidden: User \\"a\\u0026lt;b\\u0026gt;\\u0026amp;\\\\\\"c'
                    b'\\\\\\"\\" cannot get path \\"/x\\\\ty\\"","reason":"Forbidden",'
                    b'"details":{},"code":403}\n')
    assert status_json({"m": "\u2028<é>"}) == b'{"m":"\\u2028\\u003c\xc3\xa9\\u003e"}\n'
    assert UNAUTHORIZED_BODY == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"Unauthorized","reason":"Unauthorized","code":401}\n')


# ------------------------------------------------------------------ certificates


def _der(pair: KeyPair) -> bytes:
    return x509.load_pem_x509_certificate(pair.cert_pem).public_bytes(
        serialization.Encoding.DER)


class PKI:
    def __init__(self, d: Path) -> None:
        self.d = d
        self.cluster = CertAuthority(d, "cluster")
        self.front_proxy = CertAuthority(d, "front-proxy")
        self.other = CertAuthority(d, "other")
        self.proxy_client = _der(self.front_proxy.issue("fp", "front-proxy-client",
                                                        client=True))
        self.proxy_stranger = _der(self.front_proxy.issue("fp2", "someone-else", client=True))
        self.alice = _der(self.cluster.issue("alice", "alice", organizations=("dev", "ops"),
                                             client=True))
        self.server_only = _der(self.cluster.issue("srv", "srv", server=True))
        self.foreign = _der(self.other.issue("admin", "admin", organizations=("system:masters",),
                                             client=True))

    def client_pool(self) -> CertPool:
        return CertPool(self.cluster.cert_pem, "client CA")

    def proxy_pool(self) -> CertPool:
        return CertPool(self.front_proxy.cert_pem, "request-header CA")

    def config(self, generation: int = 1, allowed: tuple[str, ...] = ("front-proxy-client",),
               ) -> AuthConfig:
        rh = RequestHeaderConfig(self.proxy_pool(), allowed, ("X-Remote-User",),
                                 ("X-Remote-Uid",), ("X-Remote-Group",), ("X-Remote-Extra-",))
        return AuthConfig(self.client_pool(), rh, generation)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


def _self_issued(ca: CertAuthority, cn: str, *, days: tuple[int, int]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=days[0]))
            .not_valid_after(now + dt.timedelta(days=days[1]))
            .sign(ca._key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_cert_pool(pki: PKI) -> None:
    pool = pki.client_pool()
    got = pool.verify(pki.alice)
    assert (got.common_name, got.organizations) == ("alice", ("dev", "ops"))
    assert pool.verify(pki.alice) is got  # cached
    for der, why in ((pki.foreign, "signed by unknown authority"),
                     (pki.proxy_client, "signed by unknown authority"),
                     (pki.server_only, "incompatible key usage"),
                     (_self_issued(pki.cluster, "old", days=(-3, -1)), "has expired"),
                     (_self_issued(pki.cluster, "early", days=(1, 3)), "not yet valid"),
                     (b"\x30\x03\x02\x01\x00", "malformed")):
        with pytest.raises(CertificateError, match=why):
            pool.verify(der)
    # no EKU at all is fine for client auth (Go treats it as any usage)
    assert pool.verify(_self_issued(pki.cluster, "plain", days=(-1, 1))).common_name == "plain"
    # the cached success is re-checked against the time
    later = got.not_after + 1
    with pytest.raises(CertificateError, match="has expired"):
        pool.verify(pki.alice, now=later)
    # every certificate in a bundle is a trust anchor
    both = CertPool(pki.other.cert_pem + pki.cluster.cert_pem, "bundle")
    assert both.verify(pki.foreign).common_name == "admin"
    with pytest.raises(ConfigError, match="no usable PEM certificates"):
        CertPool(b"not a certificate", "--client-ca-file /x")


# ------------------------------------------------------------------ authentication


class _SSLObject:
    def __init__(self, der: bytes | None) -> None:
        self.der = der
        self.calls = 0

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        self.calls += 1
        return self.der


class _Transport:
    def __init__(self, der: bytes | None, tls: bool = True) -> None:
        self.ssl_object = _SSLObject(der) if tls else None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.ssl_object if name == "ssl_object" else default

    def is_closing(self) -> bool:
        return False


def _request(transport: _Transport | None = None, path: str = f"{P}/nodes",
             headers: list[tuple[str, str]] | None = None, method: str = "GET") -> web.Request:
    return make_mocked_request(method, path, headers=CIMultiDict(headers or []),
                               transport=transport if transport is not None else _Transport(None))


class FakeWebhook:
    """Stands in for the review client: answers with ``answer(path, body)``."""

    def __init__(self, answer: Callable[[str, dict[str, Any]], dict[str, Any]]) -> None:
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        if self.gate is not None:
            await self.gate.wait()
        return self.answer(path, body)


def _token_answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
    token = body["spec"]["token"]
    if token == "good":
        return {"status": {"authenticated": True, "user": {
            "username": "carol", "uid": "u-1", "groups": ["devs"],
            "extra": {"scopes": ["a", "b"]}}}}
    if token == "broken":
        return {"status": {"authenticated": False, "error": "token expired"}}
    if token == "boom":
        raise WebhookError("tokenreviews: HTTP 500")
    return {"status": {"authenticated": False}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_front_proxy(pki: PKI) -> None:
    auth = Authenticator(pki.config())
    headers = [("X-Remote-User", "alice"), ("X-Remote-Group", "g1"), ("X-Remote-Group", ""),
               ("X-Remote-Group", "g2"), ("X-Remote-Uid", "u-9"),
               ("X-Remote-Extra-Scopes", "s1"), ("x-remote-extra-scopes", "s2"),
               ("X-Remote-Extra-Acme.com%2Fproject", "p")]
    user = await auth.authenticate(_request(_Transport(pki.proxy_client), headers=headers))
    assert user == User("alice", ("g1", "g2", AUTHENTICATED), "u-9",
                        (("acme.com/project", ("p",)), ("scopes", ("s1", "s2"))))
    # a verified proxy certificate without a user header: not authenticated by that step,
    # and it is not a client-CA certificate either
    with pytest.raises(AuthenticationError, match="unknown authority") as e:
        await auth.authenticate(_request(_Transport(pki.proxy_client)))
    assert len(e.value.errors) == 1
    # CN not allowed: an error (401), never anonymous
    with pytest.raises(AuthenticationError, match="cn=someone-else is not in the allowed list"):
        await auth.authenticate(_request(_Transport(pki.proxy_stranger), headers=headers))
    # any CN when the allowed list is empty
    open_auth = Authenticator(pki.config(allowed=()))
    user = await open_auth.authenticate(_request(_Transport(pki.proxy_stranger),
                                                 headers=[("X-Remote-User", "x")]))
    assert user.name == "x"
    # the group adder leaves a user that claims system:unauthenticated alone
    user = await auth.authenticate(_request(_Transport(pki.proxy_client), headers=[
        ("X-Remote-User", "y"), ("X-Remote-Group", UNAUTHENTICATED)]))
    assert user.groups == (UNAUTHENTICATED,)


async def test_client_certificates(pki: PKI) -> None:
    auth = Authenticator(pki.config())
    transport = _Transport(pki.alice)
    forged = [("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters")]
    user = await auth.authenticate(_request(transport, headers=forged))
    fingerprint = x509.load_der_x509_certificate(pki.alice).fingerprint(hashes.SHA256()).hex()
    assert user == User("alice", ("dev", "ops", AUTHENTICATED), "",
                        ((CREDENTIAL_ID_KEY, (f"X509SHA256={fingerprint}",)),))
    # per connection: the certificate is read and verified once
    await auth.authenticate(_request(transport))
    assert transport.ssl_object is not None and transport.ssl_object.calls == 1
    # a new configuration re-verifies the connection's certificate
    auth.config = AuthConfig(None, pki.config().request_header, 2)
    with pytest.raises(AuthenticationError, match="unknown authority"):
        await auth.authenticate(_request(transport))
    assert transport.ssl_object.calls == 2
    # an unknown CA with forged headers: 401
    auth.config = pki.config(3)
    with pytest.raises(AuthenticationError) as e:
        await auth.authenticate(_request(_Transport(pki.foreign), headers=forged))
    assert len(e.value.errors) == 2  # request header and x509 both say why


async def test_anonymous_and_tokens(pki: PKI) -> None:
    clock = Clock()
    hook = FakeWebhook(_token_answer)
    tokens = TokenAuthenticator(hook, 10.0, clock=clock)  # type: ignore[arg-type]
    auth = Authenticator(pki.config(), tokens)
    # nothing to go on (no TLS at all, or TLS without a certificate): anonymous
    assert await auth.authenticate(_request(_Transport(None, tls=False))) == User(
        ANONYMOUS, (UNAUTHENTICATED,))
    assert (await auth.authenticate(_request(_Transport(None)))).name == ANONYMOUS
    for header in ("Basic abc", "Bearer", "Bearer  x", "bearer"):
        user = await auth.authenticate(_request(headers=[("Authorization", header)]))
        assert user.name == ANONYMOUS, header
    user = await auth.authenticate(_request(headers=[("Authorization", " bearer good extra")]))
    assert user == User("carol", ("devs", AUTHENTICATED), "u-1", (("scopes", ("a", "b")),))
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        await auth.authenticate(_request(headers=[("Authorization", "Bearer bad")]))
    with pytest.raises(AuthenticationError, match="token expired"):
        await auth.authenticate(_request(headers=[("Authorization", "Bearer broken")]))
    with pytest.raises(AuthenticationError, match="token review failed: tokenreviews: HTTP 500"):
        await auth.authenticate(_request(headers=[("Authorization", "Bearer boom")]))
    assert [b["spec"]["token"] for b in hook.bodies] == ["good", "bad", "broken", "boom"]
    assert hook.bodies[0] == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                              "metadata": {"creationTimestamp": None},
                              "spec": {"token": "good"}, "status": {"user": {}}}
    # within the TTL: good and bad answers come from the cache; errors were not cached
    for token in ("good", "bad", "broken", "boom"):
        with pytest.raises(AuthenticationError) if token != "good" else _nothing():
            await auth.authenticate(_request(headers=[("Authorization", f"Bearer {token}")]))
    assert [b["spec"]["token"] for b in hook.bodies][4:] == ["broken", "boom"]
    clock.t += 10.0
    await auth.authenticate(_request(headers=[("Authorization", "Bearer good")]))
    assert hook.bodies[-1]["spec"]["token"] == "good"
    # a certificate-based user wins over the token
    user = await auth.authenticate(_request(_Transport(pki.alice),
                                            headers=[("Authorization", "Bearer good")]))
    assert user.name == "alice"


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_concurrent_token_reviews_share_one() -> None:
    hook = FakeWebhook(_token_answer)
    hook.gate = asyncio.Event()
    tokens = TokenAuthenticator(hook, 0.0)  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(tokens.authenticate("good")) for _ in range(5)]
    await asyncio.sleep(0.01)
    hook.gate.set()
    results = await asyncio.gather(*waiting)
    assert len(hook.bodies) == 1
    assert {r[0].name for r in results if r[0]} == {"carol"}
    # TTL 0: nothing kept
    await tokens.authenticate("good")
    assert len(hook.bodies) == 2


# ------------------------------------------------------------------ authorization


def _sar_answer(rules: dict[str, dict[str, Any]]) -> Callable[[str, dict[str, Any]],
                                                               dict[str, Any]]:
    def answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body["spec"]
        status = rules.get(spec.get("user", ""), {"allowed": False})
        if isinstance(status, Exception):
            raise status
        return {"status": status}
    return answer


async def test_authorizer_order_and_paths() -> None:
    hook = FakeWebhook(_sar_answer({"alice": {"allowed": True}}))
    authz = Authorizer(hook, always_allow_paths=["/healthz", "/readyz", "/livez",  # type: ignore[arg-type]
                                                 "/debug/*", "/"])
    anon = User(ANONYMOUS, (UNAUTHENTICATED,))
    root = User("root", ("system:masters", AUTHENTICATED))
    for path in ("/healthz", "/readyz", "/livez", "/debug/pprof/x", "/debug/", "/"):
        assert (await authz.authorize(anon, Attributes(False, "get", path))).allowed, path
    assert hook.bodies == []
    # exact matching: /readyz/<check> is not /readyz; and the paths are for non-resource
    # requests only
    for attrs in (Attributes(False, "get", "/readyz/metric-storage-ready"),
                  Attributes(False, "get", "/debug"), Attributes(False, "get", "/metrics"),
                  _res("get", "healthz", path="/healthz")):
        decision = await authz.authorize(anon, attrs)
        assert (decision.allowed, decision.error) == (False, ""), attrs
    assert len(hook.bodies) == 4
    # system:masters: allowed without a review
    assert (await authz.authorize(root, _res("list", "nodes"))).allowed
    assert len(hook.bodies) == 4
    with pytest.raises(ConfigError, match="only trailing"):
        Authorizer(None, always_allow_paths=["/a*b"])
    # without a review client: no opinion, i.e. denied
    assert not (await Authorizer(None).authorize(anon, _res("list", "nodes"))).allowed


async def test_authorizer_review_and_caches() -> None:
    clock = Clock()
    answers: dict[str, Any] = {"alice": {"allowed": True, "reason": "RBAC: allowed"},
                               "eve": {"allowed": False, "reason": "no rule"},
                               "dan": {"allowed": False, "denied": True, "reason": "denied!"},
                               "odd": {"allowed": True, "denied": True},
                               "err": WebhookError("subjectaccessreviews: HTTP 500")}
    hook = FakeWebhook(_sar_answer(answers))
    authz = Authorizer(hook, allowed_ttl_s=5.0, denied_ttl_s=2.0,  # type: ignore[arg-type]
                       clock=clock)
    alice = User("alice", ("dev", AUTHENTICATED), "u1", (("k", ("v",)),))
    eve = User("eve", (AUTHENTICATED,))
    pods = _res("get", "pods", "default", "web-1")
    assert await authz.authorize(alice, pods) == type(await authz.authorize(alice, pods))(
        True, "RBAC: allowed")
    assert hook.bodies[0] == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "metadata": {"creationTimestamp": None},
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "group": G,
                                        "version": "v1beta1", "resource": "pods",
                                        "name": "web-1"},
                 "user": "alice", "groups": ["dev", AUTHENTICATED], "extra": {"k": ["v"]},
                 "uid": "u1"},
        "status": {"allowed": False}}
    assert len(hook.bodies) == 1  # the second came from the cache
    decision = await authz.authorize(eve, Attributes(False, "get", "/metrics"))
    assert (decision.allowed, decision.reason) == (False, "no rule")
    assert hook.bodies[-1]["spec"] == {"nonResourceAttributes": {"path": "/metrics",
                                                                 "verb": "get"},
                                       "user": "eve", "groups": [AUTHENTICATED]}
    assert (await authz.authorize(User("dan"), pods)).reason == "denied!"
    odd = await authz.authorize(User("odd"), pods)
    assert (odd.allowed, odd.error) == (False, "webhook subject access review returned both "
                                               "allow and deny response")
    err = await authz.authorize(User("err"), pods)
    assert (err.allowed, err.error) == (False, "subjectaccessreviews: HTTP 500")
    assert len(hook.bodies) == 5
    # cached: the allowed for 5 s, the denied for 2 s; errors are not cached
    clock.t += 1.9
    for user, attrs in ((alice, pods), (eve, Attributes(False, "get", "/metrics")),
                        (User("dan"), pods)):
        await authz.authorize(user, attrs)
    assert len(hook.bodies) == 5
    await authz.authorize(User("err"), pods)
    assert len(hook.bodies) == 6
    clock.t += 0.2  # 2.1 s: the denials expired, the allowance not
    await authz.authorize(eve, Attributes(False, "get", "/metrics"))
    await authz.authorize(alice, pods)
    assert [b["spec"].get("user") for b in hook.bodies[6:]] == ["eve"]
    clock.t += 3.0  # 5.1 s
    await authz.authorize(alice, pods)
    assert [b["spec"].get("user") for b in hook.bodies[7:]] == ["alice"]
    # the key is the whole request: another namespace, verb or group set is another review
    for user, attrs in ((alice, _res("get", "pods", "other", "web-1")),
                        (alice, _res("list", "pods", "default")),
                        (User("alice", ("dev",), "u1", (("k", ("v",)),)), pods)):
        await authz.authorize(user, attrs)
    assert len(hook.bodies) == 11


async def test_concurrent_reviews_share_one() -> None:
    hook = FakeWebhook(_sar_answer({"alice": {"allowed": True}}))
    hook.gate = asyncio.Event()
    authz = Authorizer(hook)  # type: ignore[arg-type]
    alice = User("alice")
    waiting = [asyncio.ensure_future(authz.authorize(alice, _res("list", "nodes")))
               for _ in range(5)]
    await asyncio.sleep(0.01)
    waiting[0].cancel()  # one requester going away does not cancel the shared review
    hook.gate.set()
    results = await asyncio.gather(*waiting[1:])
    assert all(r.allowed for r in results) and len(hook.bodies) == 1


# ------------------------------------------------------------------ the middleware


async def _echo(request: web.Request) -> web.Response:
    user = request[USER_KEY]
    raw = sorted(k.decode().lower() for k, _ in request.raw_headers)
    headers = sorted(k.lower() for k in request.headers)
    assert raw == headers
    return web.json_response({"user": user.name, "groups": list(user.groups),
                              "headers": headers})


def _security(pki: PKI, hook: FakeWebhook | None = None) -> Security:
    return Security(Authenticator(pki.config()),
                    Authorizer(hook, always_allow_paths=["/echo"]))  # type: ignore[arg-type]


async def test_middleware_strips_and_refuses(pki: PKI) -> None:
    hook = FakeWebhook(_sar_answer({}))
    security = _security(pki, hook)
    app = web.Application(middlewares=[security.middleware])
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get(f"{P}/nodes", _echo)
    app.router.add_get(f"{P}/nodes/{{name}}", _echo)
    async with TestClient(TestServer(app)) as c:
        # no certificate: the front-proxy headers are not trusted, and never reach handlers
        r = await c.get("/echo", headers=[
            ("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters"),
            ("X-Remote-Uid", "1"), ("X-Remote-Extra-Scopes", "x"), ("Authorization", "Bearer t"),
            ("X-Other", "kept")])
        assert r.status == 200
        doc = await r.json()
        assert doc["user"] == ANONYMOUS
        assert not [h for h in doc["headers"] if h.startswith("x-remote") or h ==
                    "authorization"]
        assert "x-other" in doc["headers"]
        # anonymous is denied the API: the exact 403, with the review that decided it
        r = await c.get(f"{P}/nodes", headers=[("X-Remote-User", "admin")])
        assert (r.status, await r.read()) == (403, forbidden_body(ANONYMOUS,
                                                                  _res("list", "nodes")))
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert hook.bodies[-1]["spec"]["user"] == ANONYMOUS
        # impersonation is refused
        r = await c.get("/echo", headers=[("Impersonate-User", "bob")])
        assert (r.status, await r.read()) == (403, forbidden_body(
            ANONYMOUS, Attributes(True, "impersonate", "", "", "v1", "", "users", "", "bob"),
            "impersonation is not supported by fastmetrics"))
        r = await c.get("/echo", headers=[("Impersonate-User",
                                           "system:serviceaccount:kube-system:x")])
        assert r.status == 403
        assert (await r.json())["message"].startswith(
            'serviceaccounts "x" is forbidden: User "system:anonymous" cannot impersonate '
            'resource "serviceaccounts" in API group "" in the namespace "kube-system"')
        r = await c.get("/echo", headers=[("Impersonate-Group", "system:masters")])
        assert r.status == 400
        assert (await r.json())["message"] == \
            'requested [group "system:masters"] without impersonating a user'
        # a failed review is a 500 (plain text, as Go's InternalError); the denial above is
        # still cached
        hook.answer = _sar_answer({ANONYMOUS: WebhookError("down")})  # type: ignore[dict-item]
        r = await c.get(f"{P}/nodes?labelSelector=a")
        assert r.status == 403
        r = await c.get(f"{P}/nodes/n1?x=<")
        assert (r.status, await r.read()) == (
            500, b'Internal Server Error: "/apis/metrics.k8s.io/v1beta1/nodes/n1?x=%3C": down\n')
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        r = await c.get(f"{P}/watch")
        assert r.status == 500
        assert b"failed to create RequestInfo" in await r.read()


async def test_middleware_401(pki: PKI) -> None:
    hook = FakeWebhook(_token_answer)
    security = Security(Authenticator(pki.config(),
                                      TokenAuthenticator(hook, 10.0)),  # type: ignore[arg-type]
                        Authorizer(None))
    app = web.Application(middlewares=[security.middleware])
    app.router.add_get("/healthz", _echo)
    async with TestClient(TestServer(app)) as c:
        # an authentication failure is a 401 even on an always-allowed path
        r = await c.get("/healthz", headers={"Authorization": "Bearer bad"})
        assert (r.status, await r.read()) == (401, UNAUTHORIZED_BODY)
        assert r.headers["Content-Type"] == "application/json"
        r = await c.get("/healthz")
        assert r.status == 200


# ------------------------------------------------------------------ dynamic settings


def test_file_watch(tmp_path: Path) -> None:
    f = tmp_path / "ca.crt"
    f.write_bytes(b"one")
    w = FileWatch(f)
    assert w.read() == b"one" and w.changed() is None
    f.write_bytes(b"two!")
    assert w.changed() == b"two!" and w.changed() is None
    f.unlink()
    assert w.changed() is None and w.content == b"two!"


def test_dynamic_config_from_configmap(pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    auth = Authenticator(AuthConfig())
    dyn = DynamicAuthConfig(Options(), auth, client=None)
    data = {"client-ca-file": pki.cluster.cert_pem.decode(),
            "requestheader-client-ca-file": pki.front_proxy.cert_pem.decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]'}
    dyn.on_configmap("ADDED", None, data)
    first = auth.config
    assert first.client_ca is not None and first.request_header is not None
    assert first.request_header.allowed_names == ("front-proxy-client",)
    assert first.request_header.uid_headers == ()
    assert first.client_ca_bundle() == (pki.cluster.cert_pem.strip() + b"\n" +
                                        pki.front_proxy.cert_pem.strip() + b"\n")
    # a bad change is logged and ignored
    dyn.on_configmap("MODIFIED", data, {**data, "requestheader-allowed-names": "nope"})
    assert auth.config is first
    assert "requestheader-allowed-names is not a JSON list of strings" in \
        caplog.records[-1].__dict__["err"]
    dyn.on_configmap("MODIFIED", data, {**data, "requestheader-client-ca-file": "garbage"})
    assert auth.config is first
    # deleted: no CA from it any more
    dyn.on_configmap("DELETED", data, None)
    assert (auth.config.client_ca, auth.config.request_header) == (None, None)
    assert auth.config.generation > first.generation


async def test_dynamic_config_files_win(pki: PKI, tmp_path: Path) -> None:
    ca = tmp_path / "client-ca.crt"
    ca.write_bytes(pki.other.cert_pem)
    rh = tmp_path / "rh-ca.crt"
    rh.write_bytes(pki.front_proxy.cert_pem)
    options = Options(client_ca_file=str(ca), requestheader_client_ca_file=str(rh),
                      requestheader_allowed_names=("proxy",),
                      requestheader_uid_headers=("X-Remote-Uid",))
    auth = Authenticator(AuthConfig())
    dyn = DynamicAuthConfig(options, auth, client=None, interval_s=0.01)
    assert not dyn.uses_configmap
    await dyn.load()
    cfg = auth.config
    assert cfg.client_ca is not None and cfg.client_ca.pem == pki.other.cert_pem
    assert cfg.request_header is not None
    assert (cfg.request_header.allowed_names, cfg.request_header.uid_headers) == (
        ("proxy",), ("X-Remote-Uid",))
    # the ConfigMap cannot override what the flags name
    dyn.on_configmap("ADDED", None, {"client-ca-file": pki.cluster.cert_pem.decode()})
    assert auth.config.client_ca is not None
    assert auth.config.client_ca.pem == pki.other.cert_pem
    # a rotated file is picked up by the poller
    task = asyncio.ensure_future(dyn.run())
    try:
        ca.write_bytes(pki.cluster.cert_pem)
        for _ in range(500):
            if auth.config.client_ca is not None and \
                    auth.config.client_ca.pem == pki.cluster.cert_pem:
                break
            await asyncio.sleep(0.01)
        assert auth.config.client_ca is not None
        assert auth.config.client_ca.pem == pki.cluster.cert_pem
        # a broken file keeps the last good CA
        generation = auth.config.generation
        ca.write_bytes(b"garbage")
        await asyncio.sleep(0.1)
        assert auth.config.generation == generation
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(ConfigError, match="--client-ca-file: No such file or directory"):
        await DynamicAuthConfig(Options(client_ca_file=str(tmp_path / "nope")),
                                Authenticator(AuthConfig()), client=None).load()


# ------------------------------------------------------------------ against the simulator


async def test_configmap_lookup_and_watch(tmp_path: Path) -> None:
    from fastmetrics.auth import AUTH_CONFIGMAP, build_security
    from fastmetrics.cluster import load_client_config
    from fastmetrics.sim.kubeconfig import write_kubeconfig
    from fastmetrics.sim.model import ClusterShape
    from fastmetrics.sim.run import SimulatedCluster

    async with SimulatedCluster(ClusterShape(nodes=1, pods_per_node=1), tmp_path) as sim:
        sa = load_client_config(sim.metrics_server_kubeconfig)
        security = await build_security(Options(), sa, sa, reload_interval_s=0.05)
        cfg = security.authenticator.config
        assert cfg.request_header is not None and cfg.request_header.ca is not None
        assert cfg.request_header.ca.pem == sim.api.front_proxy_ca.cert_pem
        assert cfg.request_header.allowed_names == ("front-proxy-client",)
        assert cfg.client_ca is not None and cfg.client_ca.pem == sim.cluster_ca.cert_pem
        assert sim.api.counts["get configmaps"] == 1
        async with security:
            sim.api.rotate_front_proxy_ca()
            for _ in range(300):
                rh = security.authenticator.config.request_header
                if rh is not None and rh.ca is not None and \
                        rh.ca.pem == sim.api.front_proxy_ca.cert_pem:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the ConfigMap change was not seen")
            sim.api.update_auth_configmap(requestheader_allowed_names='["proxy-a","proxy-b"]')
            for _ in range(300):
                rh = security.authenticator.config.request_header
                if rh is not None and rh.allowed_names == ("proxy-a", "proxy-b"):
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the ConfigMap change was not seen")
        assert sim.api.counts["watch configmaps"] >= 1
        # the lookup is skipped when asked, or when both CAs come from flags
        before = sim.api.counts["get configmaps"]
        security = await build_security(Options(authentication_skip_lookup=True), sa, sa)
        assert security.authenticator.config.request_header is None
        await security.stop()
        assert sim.api.counts["get configmaps"] == before
        # a lookup the identity may not make: fatal, unless tolerated
        sim.api.add_token("nobody-token", "nobody")
        kc = tmp_path / "nobody.kubeconfig"
        write_kubeconfig(kc, sim.api.url, sim.api.ca_file, token="nobody-token")
        nobody = load_client_config(kc)
        with pytest.raises(ConfigError, match=r"unable to load configmap based "
                                              r"request-header-client-ca-file: .*403"):
            await build_security(Options(), nobody, nobody)
        security = await build_security(
            Options(authentication_tolerate_lookup_failure=True), nobody, nobody)
        assert security.authenticator.config.request_header is None
        await security.stop()
        assert AUTH_CONFIGMAP.endswith("/kube-system/configmaps/extension-apiserver-authentication")


async def test_middleware_front_proxy_path(pki: PKI) -> None:
    """The middleware's own fast path (one header scan, users reused, decisions cached) gives
    what the plain authenticator gives."""
    hook = FakeWebhook(_sar_answer({"alice": {"allowed": True}}))
    security = Security(Authenticator(pki.config()), Authorizer(hook))  # type: ignore[arg-type]
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        return web.Response()

    transport = _Transport(pki.proxy_client)
    plain = [("X-Remote-User", "alice"), ("X-Remote-Group", "dev"), ("Accept", "*/*")]
    with_extra = [*plain, ("X-Remote-Extra-Scopes", "s1")]
    for headers in (plain, plain, with_extra):
        r = await security.middleware(_request(transport, f"{P}/nodes", headers), handler)
        assert r.status == 200
    assert [b["spec"].get("extra") for b in hook.bodies] == [None, {"scopes": ["s1"]}]
    assert [b["spec"]["groups"] for b in hook.bodies] == [["dev", AUTHENTICATED]] * 2
    assert seen[0][USER_KEY] is seen[1][USER_KEY]  # the same user object, reused
    assert [list(r.headers) for r in seen] == [["Accept"]] * 3
    assert [r.raw_headers for r in seen] == [((b"Accept", b"*/*"),)] * 3


async def test_webhook_client_retries(tmp_path: Path) -> None:
    """Transient failures (500, 429, 504) are retried with backoff; others fail at once; a
    401 is retried once with fresh credentials; an unreachable server fails at once."""
    from fastmetrics.auth import Backoff, WebhookClient
    from fastmetrics.cluster import ClientConfig, TLSConfig
    from fastmetrics.sim.certs import server_context

    ca = CertAuthority(tmp_path, "ca")
    pair = ca.issue("srv", "localhost", ip_addresses=("127.0.0.1",), server=True)
    script: list[int] = []
    seen: list[dict[str, Any]] = []

    async def review(request: web.Request) -> web.Response:
        seen.append({"auth": request.headers.get("Authorization"), **await request.json()})
        status = script.pop(0) if script else 201
        if status != 201:
            return web.Response(status=status, text=f"status {status}")
        return web.json_response({"status": {"allowed": True}}, status=201)

    app = web.Application()
    app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(pair))
    await site.start()
    port = runner.addresses[0][1]
    config = ClientConfig(f"https://127.0.0.1:{port}", TLSConfig(ca_file=str(ca.cert_file)),
                          token="t0k3n")
    hook = WebhookClient(config, backoff=Backoff(initial_s=0.01, steps=3))
    path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    try:
        script[:] = [500, 429]
        assert await hook.create(path, {"x": 1}) == {"status": {"allowed": True}}
        assert len(seen) == 3 and seen[0] == {"auth": "Bearer t0k3n", "x": 1}
        script[:] = [500, 504, 500]
        with pytest.raises(WebhookError, match="HTTP 500: status 500"):
            await hook.create(path, {})
        script[:] = [403]
        with pytest.raises(WebhookError, match="HTTP 403"):
            await hook.create(path, {})
        script[:] = [401]  # a static token cannot be refreshed: no second try
        with pytest.raises(WebhookError, match="HTTP 401"):
            await hook.create(path, {})
        assert hook.calls == 3 + 3 + 1 + 1
        with pytest.raises(WebhookError, match="404"):
            await hook.create("/nowhere", {})
    finally:
        await hook.close()
        await runner.cleanup()
    down = WebhookClient(ClientConfig(f"https://127.0.0.1:{port}",
                                      TLSConfig(ca_file=str(ca.cert_file))))
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(WebhookError, match="ClientConnectorError"):
        await down.create(path, {})
    assert asyncio.get_running_loop().time() - t0 < 0.4  # refused: not retried
    await down.close()


def test_intermediates_sent_by_the_client(pki: PKI) -> None:
    """A chain through an intermediate verifies when the client sends the intermediate
    (``SSLObject.get_unverified_chain``, Python 3.13+), not without it."""
    from fastmetrics.auth import _der

    now = dt.datetime.now(dt.UTC)
    root = x509.load_pem_x509_certificate(pki.cluster.cert_pem)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")])
    mid = (x509.CertificateBuilder().subject_name(mid_name).issuer_name(root.subject)
           .public_key(mid_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - dt.timedelta(hours=1))
           .not_valid_after(now + dt.timedelta(days=1))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
           .sign(pki.cluster._key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deep")]))
            .issuer_name(mid_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(mid_key, hashes.SHA256()))
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    mid_pem = mid.public_bytes(serialization.Encoding.PEM).decode()

    class Cert:  # what Python 3.13's _ssl.Certificate offers
        def __init__(self, pem: str) -> None:
            self.pem = pem

        def public_bytes(self) -> str:
            return self.pem

    class ChainSSLObject(_SSLObject):
        def get_unverified_chain(self) -> list[Any]:
            return [leaf_der, Cert(mid_pem)]

    assert _der(Cert(mid_pem)) == mid.public_bytes(serialization.Encoding.DER)
    with pytest.raises(CertificateError, match="unknown authority"):
        pki.client_pool().verify(leaf_der)
    auth = Authenticator(pki.config())
    transport = _Transport(leaf_der)
    transport.ssl_object = ChainSSLObject(leaf_der)
    peer = auth._peer(transport)
    assert peer.x509_user is not None and peer.x509_user.name == "deep"
