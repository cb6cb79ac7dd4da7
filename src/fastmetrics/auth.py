"""Delegated authentication and authorization (SPEC §6), as k8s.io/apiserver's delegating
authenticator and authorizer do it for metrics-server.

Every request goes through :meth:`Security.middleware`, in this order (Go's filter chain):

1. **Authentication**, a union where the first success wins, then ``system:authenticated``:

   * front proxy: a client certificate that verifies against the request-header CA and whose
     CN is allowed, plus a user header (``X-Remote-User``, groups from ``X-Remote-Group``,
     extra from ``X-Remote-Extra-*``, uid from the uid headers);
   * x509: a client certificate that verifies against the client CA (user = CN, groups = O);
   * bearer token: a ``TokenReview``, cached ``--authentication-token-webhook-cache-ttl``;

   if none succeeds and one of them failed (a certificate from an unknown CA, a CN that is not
   allowed, a token the review rejects) the answer is 401; if none had anything to go on, the
   user is ``system:anonymous`` in ``system:unauthenticated``. The front-proxy headers and
   ``Authorization`` are then removed from the request, whoever sent them.
2. **Impersonation** headers are refused (403).
3. **Authorization**, a union: ``system:masters`` is allowed; so are the
   ``--authorization-always-allow-paths`` (non-resource requests only, exact or ``*``
   prefix); otherwise a ``SubjectAccessReview`` decides, cached for the allowed and the denied
   TTL. A denial is a 403 Status with kube-apiserver's message; a review that cannot be made
   is a 500.

Client certificates are verified here, not by OpenSSL: the TLS server asks for any client
certificate and accepts it (see ``server.ServingTLS``), so that a certificate from an unknown CA
gets the 401 Go gives it instead of a failed handshake. Results are cached per connection and
per certificate, so the steady state costs a dictionary lookup.

The CA bundles and request-header settings come from the flags or from the
``kube-system/extension-apiserver-authentication`` ConfigMap (watched); CA files named by flags
are re-read when they change. :func:`build_security` assembles all of it from the options.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import random
import re
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import aiohttp
import msgspec
from aiohttp import web
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDictProxy, MultiMapping

from ._version import __version__
from .cluster import ClientConfig, Informer, KubeApiError, KubeClient
from .errors import ConfigError, FastMetricsError
from .log import go_quote
from .options import Options
from .selectors import SelectorError, parse_field_selector, parse_label_selector

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_USER",
    "AUTHENTICATED",
    "AUTH_CONFIGMAP",
    "CREDENTIAL_ID_KEY",
    "MASTERS",
    "UNAUTHENTICATED",
    "UNAUTHORIZED_BODY",
    "USER_KEY",
    "Attributes",
    "AuthConfig",
    "AuthConfigMapInformer",
    "AuthenticationError",
    "Authenticator",
    "Authorizer",
    "Backoff",
    "CertPool",
    "CertificateError",
    "Decision",
    "DynamicAuthConfig",
    "FileWatch",
    "RequestHeaderConfig",
    "RequestInfoError",
    "Security",
    "TokenAuthenticator",
    "User",
    "VerifiedCert",
    "WebhookClient",
    "WebhookError",
    "allow_everyone",
    "build_security",
    "forbidden_body",
    "forbidden_message",
    "request_attributes",
    "status_json",
]

log = logging.getLogger("fastmetrics.auth")

ANONYMOUS: Final = "system:anonymous"
UNAUTHENTICATED: Final = "system:unauthenticated"
AUTHENTICATED: Final = "system:authenticated"
MASTERS: Final = "system:masters"
CREDENTIAL_ID_KEY: Final = "authentication.kubernetes.io/credential-id"

AUTH_CONFIGMAP_NAMESPACE: Final = "kube-system"
AUTH_CONFIGMAP_NAME: Final = "extension-apiserver-authentication"
AUTH_CONFIGMAP: Final = (f"/api/v1/namespaces/{AUTH_CONFIGMAP_NAMESPACE}/configmaps/"
                         f"{AUTH_CONFIGMAP_NAME}")

TOKEN_REVIEW_PATH: Final = "/apis/authentication.k8s.io/v1/tokenreviews"
SUBJECT_ACCESS_REVIEW_PATH: Final = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

USER_KEY: Final[Any] = (web.RequestKey("user", object) if hasattr(web, "RequestKey")
                        else "fastmetrics.user")  # aiohttp < 3.14 has no RequestKey
"""The request key under which the middleware leaves the authenticated :class:`User`."""

JSON_CONTENT_TYPE: Final = "application/json"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"

NS_PER_S: Final = 1_000_000_000


# ================================================================================ identities


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated identity (``user.Info``): name, uid, groups and extra attributes
    (``extra`` is sorted by key; the values keep their order)."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    _hash: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # users are keys of the decision cache on every request: hash once
        object.__setattr__(self, "_hash", hash((self.name, self.groups, self.uid, self.extra)))

    def __hash__(self) -> int:
        return self._hash

    def with_authenticated(self) -> User:
        """Go's ``AuthenticatedGroupAdder``: add ``system:authenticated`` unless the user is
        anonymous or already in ``system:authenticated`` or ``system:unauthenticated``."""
        if self.name == ANONYMOUS or AUTHENTICATED in self.groups or \
                UNAUTHENTICATED in self.groups:
            return self
        return User(self.name, (*self.groups, AUTHENTICATED), self.uid, self.extra)


ANONYMOUS_USER: Final = User(ANONYMOUS, (UNAUTHENTICATED,))


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a request asks to do (Go's ``RequestInfo`` as ``authorizer.Attributes``).

    A resource request names ``api_group``/``api_version``/``resource`` (and maybe
    ``namespace``, ``name``, ``subresource``) and a verb such as ``get``, ``list`` or
    ``watch``; a non-resource request names a ``path`` and the lower-cased HTTP method.
    """

    resource_request: bool
    verb: str
    path: str
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    _hash: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((
            self.resource_request, self.verb, self.path, self.api_group, self.api_version,
            self.namespace, self.resource, self.subresource, self.name)))

    def __hash__(self) -> int:
        return self._hash


class RequestInfoError(FastMetricsError):
    """The path cannot be read as a request (``/apis/<g>/<v>/watch`` with nothing after)."""


_SPECIAL_VERBS: Final = frozenset({"proxy", "watch"})
_NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})
_METHOD_VERBS: Final = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
                        "PATCH": "patch", "DELETE": "delete"}
_INT64: Final = re.compile(r"[+-]?[0-9]+")


def _go_int64_ok(text: str) -> bool:
    return _INT64.fullmatch(text) is not None and -(1 << 63) <= int(text) < (1 << 63)


def _go_bool(values: Sequence[str]) -> bool:
    """A query boolean as Kubernetes converts it: absent, ``0`` or ``false`` (any case) are
    false; anything else, even an empty value, is true."""
    return bool(values) and values[0] != "0" and values[0].lower() != "false"


def _path_segment_name_ok(name: str) -> bool:
    return name not in (".", "..") and "/" not in name and "%" not in name


def _list_name(query: MultiMapping[str]) -> str | None:
    """Decode the list options of ``query`` as the apiserver does; the name a
    ``fieldSelector=metadata.name=<x>`` pins, ``""`` when none, None when the options do not
    decode (then no name is taken from them)."""
    for key in ("timeoutSeconds", "limit"):
        values = query.getall(key, [])
        if values and not _go_int64_ok(values[0]):
            return None
    try:
        labels = query.getall("labelSelector", [])
        if labels:
            parse_label_selector(labels[0])
        fields = query.getall("fieldSelector", [])
        selector = parse_field_selector(fields[0]) if fields else None
    except SelectorError:
        return None
    if selector is None:
        return ""
    name = selector.requires_exact_match("metadata.name")
    return name if name is not None and _path_segment_name_ok(name) else ""


def request_attributes(method: str, path: str, query: MultiMapping[str]) -> Attributes:
    """The attributes of a request (Go's ``RequestInfoFactory.NewRequestInfo`` with the API
    prefixes ``api`` (groupless) and ``apis``).

    Raises :class:`RequestInfoError` for ``/apis/<group>/<version>/watch`` or ``.../proxy``
    with nothing after it (Go answers those with a 500)."""
    trimmed = path.strip("/")
    parts = trimmed.split("/") if trimmed else []
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return Attributes(False, method.lower(), path)
    cur = parts[1:]
    group = ""
    if parts[0] == "apis":
        if len(cur) < 3:
            return Attributes(False, method.lower(), path)
        group, cur = cur[0], cur[1:]
    version, cur = cur[0], cur[1:]
    if cur[0] in _SPECIAL_VERBS:
        if len(cur) < 2:
            raise RequestInfoError(f"unable to determine kind and namespace from url, {path}")
        verb, cur = cur[0], cur[1:]
    else:
        verb = _METHOD_VERBS.get(method.upper(), "")
    namespace = ""
    if cur[0] == "namespaces" and len(cur) > 1:
        namespace = cur[1]
        if len(cur) > 2 and cur[2] not in _NAMESPACE_SUBRESOURCES:
            cur = cur[2:]
    subresource = cur[2] if len(cur) >= 3 and verb != "proxy" else ""
    name = cur[1] if len(cur) >= 2 else ""
    resource = cur[0]
    if not name and verb == "get":
        listed = _list_name(query)
        if listed is None:
            # the options did not decode: Go still honours a watch parameter
            watch = query.getall("watch", [])
            verb = "watch" if watch and watch[0].lower() not in ("false", "0") else "list"
        else:
            verb = "watch" if _go_bool(query.getall("watch", [])) else "list"
            name = listed
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(True, verb, path, group, version, namespace, resource, subresource, name)


# ================================================================================ bodies


def status_json(status: Mapping[str, Any]) -> bytes:
    """A Status object as the apiserver writes it: compact JSON, a trailing newline, and Go's
    HTML-safe escaping of ``<``, ``>``, ``&`` (and U+2028/U+2029)."""
    text = json.dumps(status, separators=(",", ":"), ensure_ascii=False)
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return text.encode("utf-8", "surrogatepass") + b"\n"


UNAUTHORIZED_BODY: Final = status_json({
    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
    "message": "Unauthorized", "reason": "Unauthorized", "code": 401})

_SANITIZE: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def forbidden_message(user: str, attrs: Attributes) -> str:
    """Go's ``forbiddenMessage``: what ``user`` may not do."""
    if not attrs.resource_request:
        return f"User {go_quote(user)} cannot {attrs.verb} path {go_quote(attrs.path)}"
    resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    where = (f"in the namespace {go_quote(attrs.namespace)}" if attrs.namespace
             else "at the cluster scope")
    return (f"User {go_quote(user)} cannot {attrs.verb} resource {go_quote(resource)} "
            f"in API group {go_quote(attrs.api_group)} {where}")


def forbidden_body(user: str, attrs: Attributes, reason: str = "") -> bytes:
    """The 403 Status kube-apiserver writes (``responsewriters.Forbidden``)."""
    msg = forbidden_message(user, attrs).translate(_SANITIZE)
    if reason:
        msg = f"{msg}: {reason}"
    qualified = attrs.resource + (f".{attrs.api_group}" if attrs.api_group else "")
    if not qualified:
        message = f"forbidden: {msg}"
    elif attrs.name:
        message = f"{qualified} {go_quote(attrs.name)} is forbidden: {msg}"
    else:
        message = f"{qualified} is forbidden: {msg}"
    details: dict[str, str] = {}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    if attrs.resource:
        details["kind"] = attrs.resource
    return status_json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": message, "reason": "Forbidden",
                        "details": details, "code": 403})


def _internal_error_text(request_uri: str, err: str) -> bytes:
    """Go's ``responsewriters.InternalError`` body (plain text)."""
    return (f"Internal Server Error: {go_quote(request_uri)}: {err}".translate(_SANITIZE)
            + "\n").encode()


# ================================================================================ certificates


class CertificateError(FastMetricsError):
    """A client certificate did not verify (the message says why, as Go's x509 would)."""


_CA_POLICY: Final = verification.ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)
_EE_POLICY: Final = verification.ExtensionPolicy.permit_all()
_CLIENT_AUTH_USAGES: Final = frozenset({ExtendedKeyUsageOID.CLIENT_AUTH,
                                        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE})
_POOL_CACHE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class VerifiedCert:
    """A client certificate that chains to a pool, with what authentication reads from it."""

    common_name: str
    organizations: tuple[str, ...]
    sha256_hex: str
    not_before: float
    """Unix seconds: the chain is valid from ``not_before`` ..."""
    not_after: float
    """... to ``not_after`` (the earliest expiry in the chain)."""


def _names(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def _identifier(cert: x509.Certificate) -> str:
    """Go's ``certificateIdentifier``: serial number, subject and authority key ids."""
    def hexed(data: bytes) -> str:
        return ":".join(f"{b:02X}" for b in data)
    try:
        skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        skid = b""
    try:
        akid = cert.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier).value.key_identifier or b""
    except x509.ExtensionNotFound:
        akid = b""
    return f"SN={cert.serial_number}, SKID={hexed(skid)}, AKID={hexed(akid)}"


class CertPool:
    """A CA bundle (every certificate in it is a trust anchor, as Go's ``CertPool``) that
    verifies client certificates for client authentication (``ExtKeyUsageClientAuth``).

    Successes are cached by the certificate's bytes until the chain expires; a certificate
    outside its validity period is re-verified. Raises ConfigError when ``pem`` holds no
    certificate."""

    def __init__(self, pem: bytes, source: str) -> None:
        self.pem = pem
        self.source = source
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError as e:
            raise ConfigError(f"{source}: no usable PEM certificates ({e})") from None
        self.certs: tuple[x509.Certificate, ...] = tuple(certs)
        self._store = verification.Store(list(certs))
        self._verified: dict[bytes, VerifiedCert] = {}

    def __repr__(self) -> str:
        return f"CertPool({self.source!r}, {len(self.certs)} certificates)"

    def verify(self, leaf_der: bytes, intermediates: Sequence[bytes] = (),
               now: float | None = None) -> VerifiedCert:
        """Verify the DER client certificate ``leaf_der`` (with the ``intermediates`` the
        client sent) at ``now`` (Unix seconds). Raises :class:`CertificateError`."""
        t = time.time() if now is None else now
        hit = self._verified.get(leaf_der)
        if hit is not None and hit.not_before <= t < hit.not_after:
            return hit
        try:
            leaf = x509.load_der_x509_certificate(leaf_der)
        except ValueError as e:
            raise CertificateError(f"x509: malformed certificate: {e}") from None
        try:
            inter = [x509.load_der_x509_certificate(d) for d in intermediates]
        except ValueError:
            inter = []
        verifier = (verification.PolicyBuilder().store(self._store)
                    .time(dt.datetime.fromtimestamp(t, dt.UTC))
                    .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
                    .build_client_verifier())
        try:
            chain = verifier.verify(leaf, inter).chain
        except verification.VerificationError as e:
            why = str(e)
            if "not valid at validation time" in why:
                reason = ("x509: certificate has expired or is not yet valid: current time "
                          f"{dt.datetime.fromtimestamp(t, dt.UTC):%Y-%m-%dT%H:%M:%SZ}")
            else:
                reason = f"x509: certificate signed by unknown authority ({why})"
            raise CertificateError(
                f"verifying certificate {_identifier(leaf)} failed: {reason}") from None
        for cert in chain:
            try:
                usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                continue
            if not _CLIENT_AUTH_USAGES.intersection(usages):
                raise CertificateError(
                    f"verifying certificate {_identifier(leaf)} failed: "
                    "x509: certificate specifies an incompatible key usage")
        cns = _names(leaf, NameOID.COMMON_NAME)
        result = VerifiedCert(
            cns[0] if cns else "", tuple(_names(leaf, NameOID.ORGANIZATION_NAME)),
            hashlib.sha256(leaf_der).hexdigest(),
            max(c.not_valid_before_utc.timestamp() for c in chain),
            min(c.not_valid_after_utc.timestamp() for c in chain))
        if len(self._verified) >= _POOL_CACHE_SIZE:
            self._verified.clear()
        self._verified[leaf_der] = result
        return result


@dataclass(frozen=True)
class RequestHeaderConfig:
    """The front-proxy (request-header) authenticator's settings (SPEC §6.1)."""

    ca: CertPool | None
    """None: no request-header CA is known, the authenticator has no opinion."""
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


@dataclass(frozen=True)
class AuthConfig:
    """One consistent view of the certificate-based settings (swapped whole on a change)."""

    client_ca: CertPool | None = None
    request_header: RequestHeaderConfig | None = None
    generation: int = 0

    def client_ca_bundle(self) -> bytes:
        """Every CA certificate either authenticator trusts, PEM (for a TLS context that has
        to verify client certificates itself)."""
        parts = [p.pem.strip() + b"\n" for p in
                 (self.client_ca, self.request_header.ca if self.request_header else None)
                 if p is not None]
        return b"".join(parts)


# ================================================================================ webhooks


class WebhookError(FastMetricsError):
    """A TokenReview or SubjectAccessReview could not be made (after the retries)."""


@dataclass(frozen=True)
class Backoff:
    """Go's ``wait.Backoff`` for the auth webhooks (``DefaultAuthWebhookRetryBackoff``)."""

    initial_s: float = 0.5
    factor: float = 1.5
    jitter: float = 0.2
    steps: int = 5


class WebhookClient:
    """Creates review objects on kube-apiserver (POST, JSON) with the credentials of
    ``config``: one keep-alive session; transient failures (connection reset, 429, 500, 504,
    a ``Retry-After``) retried with :class:`Backoff`; a 401 once more with fresh
    credentials. Raises :class:`WebhookError`."""

    def __init__(self, config: ClientConfig, *, timeout_s: float = 10.0,
                 backoff: Backoff = Backoff(), rng: random.Random | None = None) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.backoff = backoff
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._tls_generation = -1
        self.calls = 0
        """Requests sent (retries included)."""

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        generation = self.config.tls_generation
        if self._session is None or self._session.closed or \
                generation != self._tls_generation:
            old = self._session
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context(), limit=32,
                                             keepalive_timeout=60.0)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": f"fastmetrics/{__version__}"},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                trust_env=self.config.proxy_url is None)
            self._tls_generation = generation
            if old is not None and not old.closed:
                task = asyncio.get_running_loop().create_task(old.close())
                task.add_done_callback(lambda t: t.exception())
        return self._session

    async def _headers(self) -> dict[str, str]:
        if self.config.credentials_stale():
            auth = await asyncio.to_thread(self.config.auth_headers)
        else:
            auth = self.config.auth_headers()
        headers = {"Content-Type": JSON_CONTENT_TYPE, "Accept": JSON_CONTENT_TYPE, **auth}
        for k, v in self.config.impersonation_headers():
            headers[k] = v
        return headers

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path``; the created object (the review with its status)."""
        data = json.dumps(body, separators=(",", ":")).encode()
        url = self.config.server + path
        delay = self.backoff.initial_s
        refreshed = False
        last = ""
        for attempt in range(self.backoff.steps):
            if attempt:
                await asyncio.sleep(delay * (1 + self.backoff.jitter * self._rng.random()))
                delay *= self.backoff.factor
            self.calls += 1
            try:
                headers = await self._headers()
                session = self._ensure_session()
                async with session.post(url, data=data, headers=headers,
                                        server_hostname=self.config.tls_server_name,
                                        proxy=self.config.proxy_url) as resp:
                    payload = await resp.read()
                    status = resp.status
                    retry_after = "Retry-After" in resp.headers
            except (aiohttp.ServerDisconnectedError, ConnectionResetError) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            except (aiohttp.ClientError, OSError, TimeoutError, ConfigError,
                    RuntimeError) as e:  # RuntimeError: the session was closed (stopping)
                raise WebhookError(f"{path}: {type(e).__name__}: {e}".rstrip(": ")) from None
            if status == 401 and not refreshed and self.config.invalidate_credentials():
                refreshed = True
                continue
            if 200 <= status < 300:
                try:
                    out = json.loads(payload)
                except ValueError as e:
                    raise WebhookError(f"{path}: the response is not JSON: {e}") from None
                if not isinstance(out, dict):
                    raise WebhookError(f"{path}: the response is not a JSON object")
                return out
            last = f"{path}: HTTP {status}: {payload[:200].decode('utf-8', 'replace').strip()}"
            if status in (429, 500, 504) or retry_after:
                continue
            raise WebhookError(last)
        raise WebhookError(last or f"{path}: no answer")


# ================================================================================ tokens


class TokenAuthenticator:
    """Bearer tokens by ``TokenReview`` (``authentication.k8s.io/v1``), with Go's cache:
    results (authenticated or not) are kept ``ttl_s`` seconds by the token's SHA-256; a
    review that fails, or an unauthenticated status carrying an error, is not cached.
    Concurrent requests with one token share one review."""

    def __init__(self, webhook: WebhookClient, ttl_s: float, *,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 4096) -> None:
        self.webhook = webhook
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_entries = max_entries
        self._cache: dict[bytes, tuple[float, User | None]] = {}
        self._pending: dict[bytes, asyncio.Task[tuple[User | None, str]]] = {}
        self.reviews = 0

    def cached(self, token: str) -> tuple[User | None, str] | None:
        """:meth:`authenticate`'s answer when the cache has it, else None."""
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        hit = self._cache.get(key)
        if hit is not None and self.clock() < hit[0]:
            return (hit[1], "") if hit[1] is not None else (None, "invalid bearer token")
        return None

    async def authenticate(self, token: str) -> tuple[User | None, str]:
        """``(user, "")`` when the token is good; ``(None, why)`` when not."""
        hit = self.cached(token)
        if hit is not None:
            return hit
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        task = self._pending.get(key)
        if task is None:
            # a task of its own: a requester that goes away does not cancel the review
            task = asyncio.get_running_loop().create_task(self._review(key, token))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(task)

    async def _review(self, key: bytes, token: str) -> tuple[User | None, str]:
        self.reviews += 1
        try:
            review = await self.webhook.create(TOKEN_REVIEW_PATH, {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "metadata": {"creationTimestamp": None}, "spec": {"token": token},
                "status": {"user": {}}})
        except WebhookError as e:
            return None, f"token review failed: {e}"
        status = review.get("status")
        status = status if isinstance(status, dict) else {}
        if status.get("authenticated") is not True:
            error = status.get("error")
            if isinstance(error, str) and error:
                return None, error
            self._store(key, None)
            return None, "invalid bearer token"
        info = status.get("user")
        info = info if isinstance(info, dict) else {}
        user = User(str(info.get("username", "")), _strings(info.get("groups")),
                    str(info.get("uid", "") or ""), _extra(info.get("extra")))
        self._store(key, user)
        return user, ""

    def _store(self, key: bytes, user: User | None) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._cache) >= self.max_entries:
            now = self.clock()
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= self.max_entries:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (self.clock() + self.ttl_s, user)


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _extra(value: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        return ()
    return tuple(sorted((str(k), _strings(v)) for k, v in value.items()))


# ================================================================================ authentication


class AuthenticationError(FastMetricsError):
    """No authenticator accepted the request and at least one rejected it (a 401)."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(self.errors))


def _path_unescape(encoded: str) -> str:
    """Go's ``url.PathUnescape``, returning the input when it is malformed."""
    if "%" not in encoded:
        return encoded
    if re.search(r"%(?![0-9A-Fa-f]{2})", encoded):
        return encoded
    return unquote_to_bytes(encoded).decode("utf-8", "surrogateescape")


@dataclass(slots=True)
class _Peer:
    """What the client certificate of one connection proves, under one :class:`AuthConfig`."""

    generation: int
    valid_from: float
    valid_until: float
    proxy_ok: bool = False
    proxy_error: str = ""
    x509_user: User | None = None
    x509_error: str = ""


_NO_CERT: Final = _Peer(-1, float("-inf"), float("inf"))


def _der(cert: Any) -> bytes:
    """DER bytes of a certificate from ``SSLObject.get_unverified_chain()`` (Python 3.13:
    ``_ssl.Certificate``, whose ``public_bytes()`` gives PEM text by default)."""
    if isinstance(cert, bytes):
        return cert
    raw = cert.public_bytes()
    return ssl.PEM_cert_to_DER_cert(raw) if isinstance(raw, str) else bytes(raw)


class Authenticator:
    """The union of SPEC §6.1 over a dynamic :class:`AuthConfig` (``config`` may be replaced
    at any time; connections re-verify their certificate under the new one)."""

    def __init__(self, config: AuthConfig, tokens: TokenAuthenticator | None = None, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.tokens = tokens
        self.wall_clock = wall_clock
        self._peers: weakref.WeakKeyDictionary[object, _Peer] = weakref.WeakKeyDictionary()
        self._proxy_users: dict[tuple[str, tuple[str, ...], str], User] = {}

    # ---------------------------------------------------------------- client certificates

    def _peer(self, transport: Any) -> _Peer:
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:
            return _NO_CERT
        config = self.config
        now = self.wall_clock()
        peer = self._peers.get(ssl_object)
        if peer is not None and peer.generation == config.generation and \
                peer.valid_from <= now < peer.valid_until:
            return peer
        der = ssl_object.getpeercert(True)
        if not der:
            peer = _Peer(config.generation, float("-inf"), float("inf"))
        else:
            chain = getattr(ssl_object, "get_unverified_chain", None)  # Python >= 3.13
            intermediates: list[bytes] = []
            if chain is not None:
                with contextlib.suppress(Exception):
                    intermediates = [_der(c) for c in (chain() or [])[1:]]
            peer = self._verify(config, der, intermediates, now)
        self._peers[ssl_object] = peer
        return peer

    def _verify(self, config: AuthConfig, der: bytes, intermediates: list[bytes],
                now: float) -> _Peer:
        peer = _Peer(config.generation, float("-inf"), float("inf"))
        rh = config.request_header
        if rh is not None and rh.ca is not None:
            try:
                cert = rh.ca.verify(der, intermediates, now)
            except CertificateError as e:
                peer.proxy_error = str(e)
            else:
                peer.valid_from = max(peer.valid_from, cert.not_before)
                peer.valid_until = min(peer.valid_until, cert.not_after)
                if rh.allowed_names and cert.common_name not in rh.allowed_names:
                    peer.proxy_error = (f"x509: subject with cn={cert.common_name} is not in "
                                        "the allowed list")
                else:
                    peer.proxy_ok = True
        if config.client_ca is not None:
            try:
                cert = config.client_ca.verify(der, intermediates, now)
            except CertificateError as e:
                peer.x509_error = str(e)
            else:
                peer.valid_from = max(peer.valid_from, cert.not_before)
                peer.valid_until = min(peer.valid_until, cert.not_after)
                if cert.common_name:
                    peer.x509_user = User(
                        cert.common_name, cert.organizations, "",
                        ((CREDENTIAL_ID_KEY, (f"X509SHA256={cert.sha256_hex}",)),),
                    ).with_authenticated()
        if peer.valid_until == float("inf") and (peer.proxy_error or peer.x509_error):
            peer.valid_until = now + 60.0  # a failure is re-examined after a minute
        return peer

    # ---------------------------------------------------------------- the union

    def _first_pass(self, request: web.BaseRequest, extra_headers: bool
                    ) -> tuple[User | None, list[str], str]:
        """Everything but an uncached TokenReview: ``(user, errors, token)``, where a
        non-empty ``token`` still needs its review."""
        errors: list[str] = []
        peer = self._peer(request.transport)
        headers = request.headers
        if peer is not _NO_CERT:
            if peer.proxy_error:
                errors.append(peer.proxy_error)
            elif peer.proxy_ok:
                rh = self.config.request_header
                if rh is not None:
                    user = self._front_proxy_user(rh, headers, extra_headers)
                    if user is not None:
                        return user, errors, ""
            if peer.x509_error:
                errors.append(peer.x509_error)
            elif peer.x509_user is not None:
                return peer.x509_user, errors, ""
        if self.tokens is not None:
            auth = headers.get("Authorization")
            if auth:
                parts = auth.strip().split(" ", 2)
                if len(parts) >= 2 and parts[0].lower() == "bearer" and parts[1]:
                    hit = self.tokens.cached(parts[1])
                    if hit is None:
                        return None, errors, parts[1]
                    if hit[0] is not None:
                        return hit[0].with_authenticated(), errors, ""
                    errors.append(hit[1])
        return None, errors, ""

    def authenticate_cached(self, request: web.BaseRequest, *,
                            extra_headers: bool = True) -> User | None:
        """:meth:`authenticate` when it needs no TokenReview (None: it does, await that)."""
        user, errors, token = self._first_pass(request, extra_headers)
        if user is not None:
            return user
        if token:
            return None
        if errors:
            raise AuthenticationError(errors)
        return ANONYMOUS_USER

    async def authenticate(self, request: web.BaseRequest, *,
                           extra_headers: bool = True) -> User:
        """The request's user; raises :class:`AuthenticationError` (a 401).
        ``extra_headers=False`` promises that no header starts with an extra prefix (the
        caller looked), which spares a pass over the headers."""
        user, errors, token = self._first_pass(request, extra_headers)
        if user is not None:
            return user
        if token and self.tokens is not None:
            user, why = await self.tokens.authenticate(token)
            if user is not None:
                return user.with_authenticated()
            errors.append(why)
        if errors:
            raise AuthenticationError(errors)
        return ANONYMOUS_USER

    def _front_proxy_user(self, rh: RequestHeaderConfig, headers: CIMultiDictProxy[str],
                          extra_headers: bool) -> User | None:
        """:func:`_front_proxy_user`, the users without extra attributes kept for reuse."""
        if extra_headers:
            return _front_proxy_user(rh, headers, True)
        name = ""
        for h in rh.username_headers:
            name = headers.get(h, "")
            if name:
                break
        if not name:
            return None
        groups = tuple([v for h in rh.group_headers for v in headers.getall(h, ()) if v])
        uid = ""
        for h in rh.uid_headers:
            uid = headers.get(h, "")
            if uid:
                break
        key = (name, groups, uid)
        user = self._proxy_users.get(key)
        if user is None:
            if len(self._proxy_users) >= _PROXY_USERS_SIZE:
                self._proxy_users.clear()
            user = self._proxy_users[key] = User(name, groups, uid).with_authenticated()
        return user


_PROXY_USERS_SIZE: Final = 4096


def _front_proxy_user(rh: RequestHeaderConfig, headers: CIMultiDictProxy[str],
                      extra_headers: bool = True) -> User | None:
    """The user the front proxy names in ``headers`` (Go's ``requestHeaderAuthRequestHandler``),
    ``system:authenticated`` added; None without a user header."""
    name = ""
    for h in rh.username_headers:
        name = headers.get(h, "")
        if name:
            break
    if not name:
        return None
    uid = ""
    for h in rh.uid_headers:
        uid = headers.get(h, "")
        if uid:
            break
    groups = tuple([v for h in rh.group_headers for v in headers.getall(h, ()) if v])
    extra: dict[str, list[str]] = {}
    if extra_headers:
        for prefix in rh.extra_prefixes:
            lp = prefix.lower()
            for k, v in headers.items():
                if k.lower().startswith(lp):
                    extra.setdefault(_path_unescape(k[len(prefix):].lower()), []).append(v)
    return User(name, groups, uid, tuple(sorted((k, tuple(v)) for k, v in extra.items())
                                         ) if extra else ()).with_authenticated()


# ================================================================================ authorization


_MAX_CACHED_ATTR_BYTES: Final = 10_000  # Go's maxControlledAttrCacheSize


def _allow_paths(paths: Sequence[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Go's ``path.NewAuthorizer``: exact paths and ``*``-suffixed prefixes, leading ``/``
    optional. Raises ConfigError for a ``*`` elsewhere."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for p in paths:
        p = p.removeprefix("/")
        if not p:
            exact.add(p)
            continue
        if "*" in p[:-1]:
            raise ConfigError(f"--authorization-always-allow-paths: only trailing * allowed in "
                              f"{go_quote(p)}")
        if p.endswith("*"):
            prefixes.append(p[:-1])
        else:
            exact.add(p)
    return frozenset(exact), tuple(prefixes)


@dataclass(frozen=True, slots=True)
class Decision:
    """An authorization outcome: allowed or not, the reviewer's reason, and an error (the
    review could not be made: a 500)."""

    allowed: bool
    reason: str = ""
    error: str = ""


_ALLOW: Final = Decision(True)


class Authorizer:
    """The union of SPEC §6.2: privileged groups, always-allow paths, then the
    ``SubjectAccessReview`` webhook (None: no opinion, i.e. denied) with its caches."""

    def __init__(self, webhook: WebhookClient | None, *,
                 always_allow_paths: Sequence[str] = ("/healthz", "/readyz", "/livez"),
                 always_allow_groups: Sequence[str] = (MASTERS,),
                 allowed_ttl_s: float = 10.0, denied_ttl_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 8192) -> None:
        self.webhook = webhook
        self.always_allow_groups = frozenset(always_allow_groups)
        self._paths, self._prefixes = _allow_paths(always_allow_paths)
        self.allowed_ttl_s = allowed_ttl_s
        self.denied_ttl_s = denied_ttl_s
        self.clock = clock
        self.max_entries = max_entries
        self._cache: dict[tuple[object, ...], tuple[float, Decision]] = {}
        self._pending: dict[tuple[object, ...], asyncio.Task[Decision]] = {}
        self.reviews = 0

    def path_allowed(self, path: str) -> bool:
        p = path.removeprefix("/")
        return p in self._paths or any(p.startswith(x) for x in self._prefixes)

    def decide_locally(self, user: User, attrs: Attributes) -> Decision | None:
        """The decision without a review (privileged group, allowed path, cached), else
        None."""
        if not self.always_allow_groups.isdisjoint(user.groups):
            return _ALLOW
        if not attrs.resource_request and self.path_allowed(attrs.path):
            return _ALLOW
        if self.webhook is None:
            return Decision(False)
        hit = self._cache.get((user, attrs))
        if hit is not None and self.clock() < hit[0]:
            return hit[1]
        return None

    async def authorize(self, user: User, attrs: Attributes) -> Decision:
        decision = self.decide_locally(user, attrs)
        if decision is not None:
            return decision
        key = (user, attrs)
        task = self._pending.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._review(user, attrs))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(task)

    def review_spec(self, user: User, attrs: Attributes) -> dict[str, Any]:
        """The ``SubjectAccessReview`` spec Go's webhook authorizer sends for this request."""
        spec: dict[str, Any] = {}
        if attrs.resource_request:
            ra = {"namespace": attrs.namespace, "verb": attrs.verb, "group": attrs.api_group,
                  "version": attrs.api_version, "resource": attrs.resource,
                  "subresource": attrs.subresource, "name": attrs.name}
            spec["resourceAttributes"] = {k: v for k, v in ra.items() if v}
        else:
            spec["nonResourceAttributes"] = {"path": attrs.path, "verb": attrs.verb}
        if user.name:
            spec["user"] = user.name
        if user.groups:
            spec["groups"] = list(user.groups)
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        if user.uid:
            spec["uid"] = user.uid
        return spec

    async def _review(self, user: User, attrs: Attributes) -> Decision:
        assert self.webhook is not None
        self.reviews += 1
        try:
            review = await self.webhook.create(SUBJECT_ACCESS_REVIEW_PATH, {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "metadata": {"creationTimestamp": None}, "spec": self.review_spec(user, attrs),
                "status": {"allowed": False}})
        except WebhookError as e:
            log.error("Failed to make webhook authorizer request", extra={"err": str(e)})
            return Decision(False, "", str(e))
        status = review.get("status")
        status = status if isinstance(status, dict) else {}
        allowed = status.get("allowed") is True
        denied = status.get("denied") is True
        reason = str(status.get("reason", "") or "")
        if allowed and denied:
            return Decision(False, reason,
                            "webhook subject access review returned both allow and deny "
                            "response")
        decision = Decision(allowed, reason)
        size = sum(len(x) for x in (attrs.namespace, attrs.verb, attrs.api_group,
                                    attrs.api_version, attrs.resource, attrs.subresource,
                                    attrs.name, attrs.path))
        ttl = self.allowed_ttl_s if allowed else self.denied_ttl_s
        if size < _MAX_CACHED_ATTR_BYTES and ttl > 0:
            if len(self._cache) >= self.max_entries:
                now = self.clock()
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= self.max_entries:
                    del self._cache[next(iter(self._cache))]
            self._cache[(user, attrs)] = (self.clock() + ttl, decision)
        return decision


# ================================================================================ the middleware


_IMPERSONATE_USER: Final = "impersonate-user"
_IMPERSONATE_GROUP: Final = "impersonate-group"
_IMPERSONATE_UID: Final = "impersonate-uid"
_IMPERSONATE_EXTRA: Final = "impersonate-extra-"
_STANDARD_NAMES: Final = ("x-remote-user", "x-remote-uid", "x-remote-group")
_STANDARD_PREFIXES: Final = ("x-remote-extra-",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _impersonation_refusal(user: User, headers: CIMultiDictProxy[str]) -> web.Response | None:
    """Impersonation is not supported: the 403 (or 400) Go's impersonation filter would give
    when the impersonation is not authorized, None without ``Impersonate-*`` headers."""
    target = headers.get("Impersonate-User", "")
    groups = [v for v in headers.getall("Impersonate-Group", ())]
    uid = headers.get("Impersonate-Uid", "")
    extras = [k for k in headers if k.lower().startswith(_IMPERSONATE_EXTRA)]
    if not (target or groups or uid or extras):
        return None
    reason = "impersonation is not supported by fastmetrics"
    if not target:
        asked = ", ".join([*(f"group {go_quote(g)}" for g in groups),
                           *(f"extra {k[len(_IMPERSONATE_EXTRA):]!s}" for k in extras),
                           *([f"uid {go_quote(uid)}"] if uid else [])])
        body = status_json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure",
                            "message": f"requested [{asked}] without impersonating a user",
                            "reason": "BadRequest", "code": 400})
        return web.Response(status=400, body=body,
                            headers={"Content-Type": JSON_CONTENT_TYPE,
                                     "X-Content-Type-Options": "nosniff"})
    sa = target.split(":")
    if len(sa) == 4 and sa[:2] == ["system", "serviceaccount"] and sa[2] and sa[3]:
        attrs = Attributes(True, "impersonate", "", "", "v1", sa[2], "serviceaccounts", "",
                           sa[3])
    else:
        attrs = Attributes(True, "impersonate", "", "", "v1", "", "users", "", target)
    return web.Response(status=403, body=forbidden_body(user.name, attrs, reason),
                        headers={"Content-Type": JSON_CONTENT_TYPE,
                                 "X-Content-Type-Options": "nosniff"})


class Security:
    """Authentication and authorization for the HTTP server: :meth:`middleware` gates every
    request; :meth:`start`/:meth:`stop` run whatever keeps the settings current (ConfigMap
    watch, CA file reloads) and close the review clients."""

    def __init__(self, authenticator: Authenticator, authorizer: Authorizer, *,
                 background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
                 closers: Sequence[Callable[[], Awaitable[None]]] = ()) -> None:
        self.authenticator = authenticator
        self.authorizer = authorizer
        self._background = list(background)
        self._closers = list(closers)
        self._tasks: list[asyncio.Task[None]] = []
        self._sets: _HeaderSets | None = None
        self._attrs_cache: dict[tuple[str, str], Attributes] = {}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for fn in self._background:
            self._tasks.append(loop.create_task(fn(), name="fastmetrics-auth"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for close in self._closers:
            await close()

    async def __aenter__(self) -> Security:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- per request

    def _strip_sets(self, rh: RequestHeaderConfig | None) -> _HeaderSets:
        """Which headers the middleware looks for (lower case) and removes after
        authentication: the standard and configured front-proxy ones, ``Authorization``, the
        impersonation ones (refused); and which prefixes mark extra attributes."""
        sets = self._sets
        if sets is not None and sets.source is rh:
            return sets
        names = {"authorization", *_STANDARD_NAMES}
        extra = {*_STANDARD_PREFIXES}
        if rh is not None:
            names.update(h.lower() for h in (*rh.username_headers, *rh.uid_headers,
                                             *rh.group_headers))
            extra.update(p.lower() for p in rh.extra_prefixes)
        self._sets = _HeaderSets(rh, frozenset(names) | _IMPERSONATE_NAMES,
                                 tuple(sorted(extra | {_IMPERSONATE_EXTRA})),
                                 tuple(sorted(extra)))
        return self._sets

    def _attributes(self, request: web.Request) -> Attributes:
        key = (request.method, request.raw_path)
        attrs = self._attrs_cache.get(key)
        if attrs is None:
            attrs = request_attributes(request.method, request.path, request.query)
            if len(self._attrs_cache) >= _ATTRS_CACHE_SIZE:
                self._attrs_cache.clear()
            self._attrs_cache[key] = attrs
        return attrs

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sets = self._strip_sets(self.authenticator.config.request_header)
        # one pass over the header names: anything to strip, impersonate, or read as extra?
        impersonation = extra = False
        names, prefixes = sets.names, sets.prefixes
        found: list[str] = []
        for k in request.headers:
            lk = k.lower()
            if lk in names or lk.startswith(prefixes):
                found.append(lk)
                if lk.startswith("impersonate-"):
                    impersonation = True
                elif lk.startswith(sets.extra_prefixes):
                    extra = True
        try:
            user = self.authenticator.authenticate_cached(request, extra_headers=extra)
            if user is None:
                user = await self.authenticator.authenticate(request, extra_headers=extra)
        except AuthenticationError as e:
            log.info("Unable to authenticate the request",
                     extra={"path": request.path, "err": str(e)})
            return web.Response(status=401, body=UNAUTHORIZED_BODY,
                                headers={"Content-Type": JSON_CONTENT_TYPE})
        if impersonation:
            refusal = _impersonation_refusal(user, request.headers)
            if refusal is not None:
                return refusal
        try:
            attrs = self._attributes(request)
        except RequestInfoError as e:
            return _internal_error(request, f"failed to create RequestInfo: {e}")
        decision = self.authorizer.decide_locally(user, attrs)
        if decision is None:
            decision = await self.authorizer.authorize(user, attrs)
        if not decision.allowed:
            if decision.error:
                return _internal_error(request, decision.error)
            log.debug("Forbidden", extra={"path": request.path, "user": user.name,
                                          "reason": decision.reason})
            return web.Response(status=403, body=forbidden_body(user.name, attrs,
                                                                decision.reason),
                                headers={"Content-Type": JSON_CONTENT_TYPE,
                                         "X-Content-Type-Options": "nosniff"})
        if found:
            request = _without_headers(request, found)
        request[USER_KEY] = user
        return await handler(request)


@dataclass(frozen=True, slots=True)
class _HeaderSets:
    source: RequestHeaderConfig | None
    names: frozenset[str]
    """Stripped and impersonation header names."""
    prefixes: tuple[str, ...]
    """Stripped and impersonation prefixes."""
    extra_prefixes: tuple[str, ...]
    """Stripped (extra) prefixes."""


_IMPERSONATE_NAMES: Final = frozenset({_IMPERSONATE_USER, _IMPERSONATE_GROUP, _IMPERSONATE_UID})
_ATTRS_CACHE_SIZE: Final = 4096


def _without_headers(request: web.Request, lower_names: Sequence[str]) -> web.Request:
    """``request`` without the headers ``lower_names`` (lower case), also in
    ``raw_headers``.

    ``Request.clone(headers=...)`` would cost ~10 µs per request, half the budget: the
    request's own header view is replaced instead (aiohttp's ``_headers`` and ``_message``; a
    clone when they are not there, should aiohttp change)."""
    kept = request.headers.copy()
    for name in lower_names:
        kept.popall(name, None)
    view = CIMultiDictProxy(kept)
    message = getattr(request, "_message", None)
    cache = getattr(request, "_cache", None)
    if message is None or not hasattr(message, "_replace") or not isinstance(cache, dict) \
            or getattr(request, "_headers", None) is not request.headers:
        return request.clone(headers=view)
    gone = {n.encode("latin-1") for n in lower_names}
    raw = tuple([kv for kv in message.raw_headers if kv[0].lower() not in gone])
    request._message = message._replace(headers=view, raw_headers=raw)
    request._headers = view
    # ``headers`` and ``raw_headers`` are cached properties (aiohttp's ``reify``)
    cache.pop("headers", None)
    cache.pop("raw_headers", None)
    return request


def _internal_error(request: web.BaseRequest, err: str) -> web.Response:
    return web.Response(status=500, body=_internal_error_text(request.raw_path, err),
                        headers={"Content-Type": TEXT_CONTENT_TYPE,
                                 "X-Content-Type-Options": "nosniff"})


def allow_everyone() -> Security:
    """A :class:`Security` that authenticates nothing (everyone is ``system:anonymous``) and
    allows ``system:unauthenticated``: for unit tests and benchmarks of other layers. The
    command line never builds it (:func:`build_security` does)."""
    return Security(Authenticator(AuthConfig()),
                    Authorizer(None, always_allow_groups=(UNAUTHENTICATED, AUTHENTICATED)))


# ================================================================================ dynamic settings


class FileWatch:
    """A file re-read when it changes (inode, size or mtime differ; then the bytes)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self.content = b""

    def read(self) -> bytes:
        """The content now (raises OSError)."""
        st = self.path.stat()
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        self.content = self.path.read_bytes()
        return self.content

    def changed(self) -> bytes | None:
        """The new content when the file changed since the last read, else None (also when it
        cannot be read now: the last content stays in force)."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return None
        try:
            content = self.path.read_bytes()
        except OSError:
            return None
        self._stamp = stamp
        if content == self.content:
            return None
        self.content = content
        return content


def _json_strings(text: str | None, key: str) -> tuple[str, ...]:
    """A ConfigMap value holding a JSON array of strings (Go's ``deserializeStrings``)."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"configmap {AUTH_CONFIGMAP_NAMESPACE}/{AUTH_CONFIGMAP_NAME}: {key} "
                          f"is not a JSON list of strings: {e}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"configmap {AUTH_CONFIGMAP_NAMESPACE}/{AUTH_CONFIGMAP_NAME}: {key} "
                          "is not a JSON list of strings")
    return tuple(value)


class _ConfigMapMeta(msgspec.Struct):
    name: str = ""
    resourceVersion: str = ""


class _ConfigMap(msgspec.Struct):
    metadata: _ConfigMapMeta = msgspec.field(default_factory=_ConfigMapMeta)
    data: dict[str, str] = msgspec.field(default_factory=dict)


class _ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class _ConfigMapList(msgspec.Struct):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[_ConfigMap] = msgspec.field(default_factory=list)


_CM_LIST: Final = msgspec.json.Decoder(_ConfigMapList)
_CM: Final = msgspec.json.Decoder(_ConfigMap)


class AuthConfigMapInformer(Informer[str, dict[str, str]]):
    """Lists and watches ``kube-system/extension-apiserver-authentication`` (its data)."""

    resource = "configmaps"

    def __init__(self, client: KubeClient, **kw: Any) -> None:
        super().__init__(client, f"/api/v1/namespaces/{AUTH_CONFIGMAP_NAMESPACE}/configmaps",
                         params={"fieldSelector": f"metadata.name={AUTH_CONFIGMAP_NAME}"}, **kw)
        self.data: dict[str, str] | None = None

    def _decode_page(self, body: bytes) -> tuple[list[dict[str, str]], str, str]:
        page = _CM_LIST.decode(body)
        return ([cm.data for cm in page.items if cm.metadata.name == AUTH_CONFIGMAP_NAME],
                page.metadata.resourceVersion, page.metadata.continue_)

    def _decode_object(self, raw: msgspec.Raw) -> tuple[dict[str, str], str]:
        cm = _CM.decode(raw)
        return cm.data, cm.metadata.resourceVersion

    def _key(self, value: dict[str, str]) -> str:
        return AUTH_CONFIGMAP_NAME

    def _get(self, key: str) -> dict[str, str] | None:
        return self.data

    def _put(self, key: str, value: dict[str, str]) -> None:
        self.data = value

    def _pop(self, key: str) -> dict[str, str] | None:
        old, self.data = self.data, None
        return old

    def _replace(self, items: list[dict[str, str]]
                 ) -> list[tuple[str, dict[str, str] | None, dict[str, str] | None]] | None:
        old = self.data
        self.data = items[0] if items else None
        if old == self.data:
            return None
        kind = "ADDED" if old is None else ("DELETED" if self.data is None else "MODIFIED")
        return [(kind, old, self.data)]

    def __len__(self) -> int:
        return 0 if self.data is None else 1


class DynamicAuthConfig:
    """Keeps an :class:`Authenticator`'s :class:`AuthConfig` current: CA files from the flags
    re-read when they change (polled every ``interval_s``), the rest from the ConfigMap
    (watched). A bad new CA is logged and the previous one kept."""

    def __init__(self, options: Options, authenticator: Authenticator, *,
                 client: KubeClient | None, interval_s: float = 1.0,
                 informer_kw: Mapping[str, Any] | None = None) -> None:
        self.options = options
        self.authenticator = authenticator
        self.client = client
        self.interval_s = interval_s
        self._client_ca_file = FileWatch(options.client_ca_file) if options.client_ca_file \
            else None
        self._rh_ca_file = (FileWatch(options.requestheader_client_ca_file)
                            if options.requestheader_client_ca_file else None)
        self._client_ca: CertPool | None = None
        self._rh_pool: CertPool | None = None
        self._cm_data: dict[str, str] | None = None
        self._generation = 0
        self.informer: AuthConfigMapInformer | None = None
        self._informer_kw = dict(informer_kw or {})

    @property
    def uses_configmap(self) -> bool:
        return self.client is not None and not self.options.authentication_skip_lookup and (
            self._client_ca_file is None or self._rh_ca_file is None)

    def _from_file(self, watch: FileWatch, flag: str) -> CertPool:
        try:
            pem = watch.read()
        except OSError as e:
            raise ConfigError(f"{flag}: {e.strerror or e}: {watch.path}") from None
        return CertPool(pem, f"{flag} {watch.path}")

    async def load(self) -> None:
        """The first configuration (before serving): the files, then the ConfigMap (SPEC
        §6.1; a failed lookup is fatal unless ``--authentication-tolerate-lookup-failure``).
        Raises ConfigError."""
        o = self.options
        if self._client_ca_file is not None:
            self._client_ca = self._from_file(self._client_ca_file, "--client-ca-file")
        if self._rh_ca_file is not None:
            self._rh_pool = self._from_file(self._rh_ca_file, "--requestheader-client-ca-file")
        if self.uses_configmap:
            assert self.client is not None
            try:
                cm = await self.client.get_json(AUTH_CONFIGMAP)
            except KubeApiError as e:
                if e.status == 404:
                    self._cm_data = {}
                else:
                    self._lookup_failed(e)
            except (aiohttp.ClientError, OSError, TimeoutError, ConfigError) as e:
                self._lookup_failed(e)
            else:
                data = cm.get("data")
                self._cm_data = {str(k): str(v) for k, v in data.items()} \
                    if isinstance(data, dict) else {}
        elif o.authentication_skip_lookup:
            pass
        elif self.client is None:
            log.warning("No authentication kubeconfig: client certificate and request-header "
                        "authentication use the flags only")
        self._apply(initial=True)

    def _lookup_failed(self, e: Exception) -> None:
        where = f"configmap/{AUTH_CONFIGMAP_NAME} in {AUTH_CONFIGMAP_NAMESPACE}"
        if isinstance(e, KubeApiError) and e.status == 403:
            log.warning(
                f"Unable to get {where}. Usually fixed by 'kubectl create rolebinding -n "
                f"{AUTH_CONFIGMAP_NAMESPACE} ROLEBINDING_NAME "
                "--role=extension-apiserver-authentication-reader "
                "--serviceaccount=YOUR_NS:YOUR_SA'")
        if not self.options.authentication_tolerate_lookup_failure:
            raise ConfigError(
                f"unable to load configmap based request-header-client-ca-file: {e}") from None
        log.warning("Error looking up in-cluster authentication configuration; continuing "
                    "without it (set --authentication-tolerate-lookup-failure=false to require "
                    "it)", extra={"err": str(e)})
        self._cm_data = None

    def _apply(self, initial: bool = False) -> None:
        """Build and install the :class:`AuthConfig` from the files and the ConfigMap data.
        Raises ConfigError at start; later a bad ConfigMap is logged and ignored."""
        o = self.options
        data = self._cm_data or {}
        source = f"configmap {AUTH_CONFIGMAP_NAMESPACE}/{AUTH_CONFIGMAP_NAME}"
        try:
            client_ca = self._client_ca
            if self._client_ca_file is None and data.get("client-ca-file"):
                client_ca = CertPool(data["client-ca-file"].encode(),
                                     f"{source} client-ca-file")
            if self._rh_ca_file is not None:
                rh: RequestHeaderConfig | None = RequestHeaderConfig(
                    self._rh_pool, tuple(o.requestheader_allowed_names),
                    tuple(o.requestheader_username_headers),
                    tuple(o.requestheader_uid_headers), tuple(o.requestheader_group_headers),
                    tuple(o.requestheader_extra_headers_prefix))
            elif data.get("requestheader-client-ca-file"):
                rh = RequestHeaderConfig(
                    CertPool(data["requestheader-client-ca-file"].encode(),
                             f"{source} requestheader-client-ca-file"),
                    _json_strings(data.get("requestheader-allowed-names"),
                                  "requestheader-allowed-names"),
                    _json_strings(data.get("requestheader-username-headers"),
                                  "requestheader-username-headers"),
                    _json_strings(data.get("requestheader-uid-headers"),
                                  "requestheader-uid-headers"),
                    _json_strings(data.get("requestheader-group-headers"),
                                  "requestheader-group-headers"),
                    _json_strings(data.get("requestheader-extra-headers-prefix"),
                                  "requestheader-extra-headers-prefix"))
            else:
                rh = None
        except ConfigError as e:
            if initial:
                raise
            log.error("Ignoring a bad authentication configuration", extra={"err": str(e)})
            return
        if initial:
            if client_ca is None:
                log.warning("No client CA (--client-ca-file or the ConfigMap's client-ca-file):"
                            " client certificate authentication won't work")
            if rh is None or rh.ca is None:
                log.warning("No request-header client CA (--requestheader-client-ca-file or the "
                            "ConfigMap's requestheader-client-ca-file): requests through the "
                            "aggregator won't authenticate")
        self._generation += 1
        old = self.authenticator.config
        self.authenticator.config = AuthConfig(client_ca, rh, self._generation)
        if not initial and (old.client_ca_bundle() != self.authenticator.config
                            .client_ca_bundle() or old.request_header != rh):
            log.info("Authentication configuration changed",
                     extra={"generation": self._generation})

    def on_configmap(self, kind: str, old: dict[str, str] | None,
                     new: dict[str, str] | None) -> None:
        self._cm_data = new
        self._apply()

    async def _poll_files(self) -> None:
        for _ in range(1 << 62):
            await asyncio.sleep(self.interval_s)
            changed = False
            for watch, flag in ((self._client_ca_file, "--client-ca-file"),
                                (self._rh_ca_file, "--requestheader-client-ca-file")):
                if watch is None:
                    continue
                content = watch.changed()
                if content is None:
                    continue
                try:
                    pool = CertPool(content, f"{flag} {watch.path}")
                except ConfigError as e:
                    log.error("Ignoring a bad CA file", extra={"err": str(e)})
                    continue
                if watch is self._client_ca_file:
                    self._client_ca = pool
                else:
                    self._rh_pool = pool
                changed = True
                log.info("Reloaded a CA file", extra={"file": str(watch.path)})
            if changed:
                self._apply()

    async def run(self) -> None:
        """Watch the ConfigMap and poll the CA files until cancelled."""
        if self.uses_configmap and self._cm_data is not None:
            assert self.client is not None
            self.informer = AuthConfigMapInformer(self.client, **self._informer_kw)
            self.informer.data = self._cm_data or None
            self.informer.add_listener(self.on_configmap)
            self.informer.start()
        try:
            await self._poll_files()
        finally:
            if self.informer is not None:
                await self.informer.stop()


async def build_security(options: Options, authn: ClientConfig | None,
                         authz: ClientConfig | None, *,
                         reload_interval_s: float = 1.0) -> Security:
    """The :class:`Security` the flags describe (SPEC §8.3): ``authn``/``authz`` are the
    clients for the lookups and TokenReviews, and for the SubjectAccessReviews (None: none
    made). Reads the CA files and the ConfigMap now; raises ConfigError. Call
    :meth:`Security.start` to keep the settings current."""
    closers: list[Callable[[], Awaitable[None]]] = []
    tokens = None
    lookup = None
    if authn is not None:
        token_hook = WebhookClient(authn)
        closers.append(token_hook.close)
        tokens = TokenAuthenticator(token_hook,
                                    options.authentication_token_webhook_cache_ttl_ns / NS_PER_S)
        lookup = KubeClient(authn, request_timeout_s=10.0)
        closers.append(lookup.close)
    authz_hook = None
    if authz is not None:
        authz_hook = WebhookClient(authz)
        closers.append(authz_hook.close)
    else:
        log.warning("No authorization kubeconfig: SubjectAccessReviews won't be made")
    authenticator = Authenticator(AuthConfig(), tokens)
    dynamic = DynamicAuthConfig(options, authenticator, client=lookup,
                                interval_s=reload_interval_s)
    try:
        await dynamic.load()
        authorizer = Authorizer(
            authz_hook, always_allow_paths=options.authorization_always_allow_paths,
            allowed_ttl_s=options.authorization_webhook_cache_authorized_ttl_ns / NS_PER_S,
            denied_ttl_s=options.authorization_webhook_cache_unauthorized_ttl_ns / NS_PER_S)
    except BaseException:
        for close in closers:
            await close()
        raise
    return Security(authenticator, authorizer, background=[dynamic.run], closers=closers)
