"""The HTTPS server: health endpoints, ``/metrics``, the path index, TLS and graceful shutdown.

:func:`make_app` builds the aiohttp application (SPEC §5.9, §5.10, §7):

* ``/healthz``, ``/livez``, ``/readyz`` and ``/<endpoint>/<check>`` for every check, any method
  (as the Go mux serves them), bodies from :mod:`fastmetrics.health`, with
  ``Content-Type: text/plain; charset=utf-8`` and ``X-Content-Type-Options: nosniff``;
* ``/metrics``: :meth:`ServerMetrics.render` (when metrics are given);
* any path no route matches: outside ``/apis`` a 404 whose body is the ``{"paths":[...]}``
  index (Go's ``json.MarshalIndent(.., "", "  ")`` layout, sorted, every registered literal
  path); under ``/apis`` the 404 ``NotFound`` Status of §5.5;
* one middleware turns any unexpected exception into a 500 ``InternalError`` Status (logged with
  its traceback, never sent).

:func:`serve` starts it over TLS on ``--bind-address:--secure-port`` with the operator's
certificate or a self-signed one kept in ``--cert-dir`` (:func:`ensure_self_signed`);
:func:`graceful_shutdown` is the SIGTERM sequence.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .api.handlers import PREFIX as RESOURCE_PREFIX
from .api.handlers import MetricsAPI, add_routes
from .health import ENDPOINTS, Check, HealthState, checks_for, evaluate, evaluate_one
from .monitoring import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .monitoring import ServerMetrics
from .options import Options

__all__ = [
    "CERT_FILE_NAME",
    "CHECKS_KEY",
    "HEALTH_KEY",
    "KEY_FILE_NAME",
    "METRICS_KEY",
    "RequestHeaderAuth",
    "ensure_self_signed",
    "graceful_shutdown",
    "make_app",
    "serve",
    "ssl_context",
    "status_body",
]

log = logging.getLogger("fastmetrics.server")

HEALTH_KEY: Final = web.AppKey("health", HealthState)
CHECKS_KEY: Final = web.AppKey("checks", dict[str, list[Check]])
METRICS_KEY: Final = web.AppKey("metrics", ServerMetrics)

CERT_FILE_NAME: Final = "apiserver.crt"
KEY_FILE_NAME: Final = "apiserver.key"

TEXT_HEADERS: Final = {"Content-Type": "text/plain; charset=utf-8",
                       "X-Content-Type-Options": "nosniff"}
JSON_CONTENT_TYPE: Final = "application/json"

NOT_FOUND_MESSAGE: Final = "the server could not find the requested resource"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ================================================================================ bodies


def status_body(code: int, reason: str, message: str, details: dict[str, Any]) -> bytes:
    """A ``metav1.Status`` failure, field order and trailing newline as the apiserver's JSON."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "details": details, "code": code}
    return json.dumps(status, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _status(code: int, reason: str, message: str, details: dict[str, Any]) -> web.Response:
    return web.Response(status=code, body=status_body(code, reason, message, details),
                        headers={"Content-Type": JSON_CONTENT_TYPE})


def _text(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, headers=TEXT_HEADERS)


# ================================================================================ handlers


def _root_handler(endpoint: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        checks = request.app[CHECKS_KEY][endpoint]
        status, body = evaluate(endpoint, checks, "verbose" in request.query,
                                request.query.getall("exclude", []))
        return _text(status, body)
    return handler


def _check_handler(check: Check) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        status, body = evaluate_one(check)
        return _text(status, body)
    return handler


async def _metrics(request: web.Request) -> web.StreamResponse:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def listed_paths(app: web.Application) -> list[str]:
    """Every literal path the app serves, sorted (Go's ``PathRecorderMux.ListedPaths``)."""
    paths = {info["path"] for res in app.router.resources()
             if "path" in (info := res.get_info())
             and not info["path"].startswith(RESOURCE_PREFIX + "/")}
    return sorted(paths)


async def _not_found(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path == "/apis" or path.startswith("/apis/"):
        return _status(404, "NotFound", NOT_FOUND_MESSAGE, {})
    body = json.dumps({"paths": listed_paths(request.app)}, indent=2).encode()
    return web.Response(status=404, body=body, headers={"Content-Type": JSON_CONTENT_TYPE})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A path no route matches gets the 404 of SPEC §5.10 (whatever routes are added later);
    any unexpected exception becomes a 500 ``InternalError`` Status; HTTP exceptions pass."""
    if isinstance(request.match_info.http_exception, web.HTTPNotFound):
        return await _not_found(request)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as e:
        log.error("Request failed", exc_info=True,
                  extra={"method": request.method, "path": request.path})
        text = str(e) or type(e).__name__
        return _status(500, "InternalError", f"Internal error occurred: {text}",
                       {"causes": [{"message": text}]})


# ================================================================================ authentication


@dataclass(frozen=True)
class RequestHeaderAuth:
    """The front-proxy (request-header) authenticator of SPEC §6.1.

    ``ca_pem`` is the request-header client CA (None: unavailable, every gated request is
    401); the TLS context verifies client certificates against it (:func:`ssl_context`), so a
    peer certificate present on the connection has been verified. ``allowed_names`` empty
    accepts any CN.
    """

    ca_pem: bytes | None
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)

    def authenticate(self, request: web.Request) -> tuple[str, list[str]] | None:
        """``(user, groups)`` from a verified front-proxy request, else None."""
        if self.ca_pem is None or request.transport is None:
            return None
        cert = request.transport.get_extra_info("peercert")
        if not cert:
            return None
        cn = next((value for rdn in cert.get("subject", ()) for key, value in rdn
                   if key == "commonName"), None)
        if cn is None or (self.allowed_names and cn not in self.allowed_names):
            return None
        user = next((v for h in self.username_headers for v in request.headers.getall(h, [])
                     if v), "")
        if not user:
            return None
        groups = [v for h in self.group_headers for v in request.headers.getall(h, [])]
        return user, groups


USER_KEY: Final = "fastmetrics.user"
UNAUTHORIZED_BODY: Final = (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                            b'"message":"Unauthorized","reason":"Unauthorized","code":401}\n')


def _gated(path: str) -> bool:
    return path == "/apis" or path.startswith(("/apis/", "/openapi/"))


def auth_middleware(auth: RequestHeaderAuth | None) -> Callable[..., Awaitable[Any]]:
    """Requests to ``/apis`` and ``/openapi`` must come through the front proxy (401
    otherwise); other paths (health, ``/metrics``, ``/version``) pass."""
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _gated(request.path):
            who = auth.authenticate(request) if auth is not None else None
            if who is None:
                return web.Response(status=401, body=UNAUTHORIZED_BODY,
                                    headers={"Content-Type": JSON_CONTENT_TYPE})
            request[USER_KEY] = who
        return await handler(request)
    return middleware


def make_app(state: HealthState, metrics: ServerMetrics | None = None, *,
             api: MetricsAPI | None = None, auth: RequestHeaderAuth | None = None,
             authenticate: bool = True) -> web.Application:
    """The application: health endpoints, ``/metrics`` (with ``metrics``), the 404 index and,
    with ``api``, the metrics.k8s.io routes behind the front-proxy gate (``auth``; None
    answers 401). ``authenticate=False`` removes the gate (unit tests only)."""
    middlewares: list[Any] = [error_middleware]
    if api is not None and authenticate:
        middlewares.insert(0, auth_middleware(auth))
    app = web.Application(middlewares=middlewares)
    if api is not None:
        add_routes(app, api)
    app[HEALTH_KEY] = state
    checks = checks_for(state)
    app[CHECKS_KEY] = checks
    for endpoint in ENDPOINTS:
        app.router.add_route("*", f"/{endpoint}", _root_handler(endpoint))
        for check in checks[endpoint]:
            app.router.add_route("*", f"/{endpoint}/{check.name}", _check_handler(check))
    if metrics is not None:
        app[METRICS_KEY] = metrics
        app.router.add_route("*", "/metrics", _metrics)
    return app


# ================================================================================ TLS


_GO_TLS_VERSIONS: Final = {
    "VersionTLS10": ssl.TLSVersion.TLSv1,
    "VersionTLS11": ssl.TLSVersion.TLSv1_1,
    "VersionTLS12": ssl.TLSVersion.TLSv1_2,
    "VersionTLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's TLS 1.0-1.2 suite names -> OpenSSL names (TLS 1.3 suites are not configurable in Go
# either, so they are accepted and ignored).
_GO_CIPHERS: Final = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
}


def _cert_valid(cert_file: Path, key_file: Path, now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        return False
    pem = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.PEM
    return bool(cert.public_key().public_bytes(enc, pem) == key.public_key().public_bytes(enc, pem))


def ensure_self_signed(cert_dir: str | os.PathLike[str],
                       hostnames: Sequence[str] = ()) -> tuple[Path, Path]:
    """``<cert_dir>/apiserver.crt`` and ``apiserver.key``: reused when present, parseable,
    current and matching; else generated as client-go's ``GenerateSelfSignedCertKey`` does (a
    ``localhost-ca@<unix>`` CA signing a ``localhost@<unix>`` serving cert, RSA 2048, one year;
    the cert file holds the serving cert then the CA). SANs: ``localhost``, ``127.0.0.1`` and
    ``hostnames`` (default: this host's name)."""
    directory = Path(cert_dir)
    cert_file, key_file = directory / CERT_FILE_NAME, directory / KEY_FILE_NAME
    now = dt.datetime.now(dt.UTC)
    if _cert_valid(cert_file, key_file, now):
        log.info("Reusing the self-signed serving certificate", extra={"cert": str(cert_file)})
        return cert_file, key_file
    names = ["localhost", *(hostnames or [socket.gethostname()])]
    dns = list(dict.fromkeys(n for n in names if n))
    stamp = int(now.timestamp())
    not_before = now - dt.timedelta(hours=1)
    not_after = now + dt.timedelta(days=365)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"localhost-ca@{stamp}")])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(not_before).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=True,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
              encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        f"localhost@{stamp}")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    cert_file.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    key_bytes = key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    log.info("Generated self-signed cert", extra={"cert": str(cert_file), "key": str(key_file)})
    return cert_file, key_file


def ssl_context(options: Options, client_ca: bytes | None = None) -> ssl.SSLContext:
    """The serving TLS context from the secure-serving flags; with ``client_ca`` (PEM) client
    certificates are requested (optional) and verified against it."""
    if options.tls_cert_file and options.tls_private_key_file:
        cert_file, key_file = Path(options.tls_cert_file), Path(options.tls_private_key_file)
    else:
        cert_file, key_file = ensure_self_signed(options.cert_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _GO_TLS_VERSIONS.get(options.tls_min_version, ssl.TLSVersion.TLSv1_2)
    if ctx.minimum_version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ciphers = [_GO_CIPHERS[c] for c in options.tls_cipher_suites if c in _GO_CIPHERS]
    if ciphers:
        ctx.set_ciphers(":".join(ciphers))
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=client_ca.decode())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# ================================================================================ serving


async def serve(app: web.Application, options: Options, *,
                ssl_ctx: ssl.SSLContext | None = None) -> web.AppRunner:
    """Start ``app`` over TLS on ``--bind-address:--secure-port``; returns the started runner
    (``runner.addresses`` has the bound address; stop it with :func:`graceful_shutdown` or
    ``runner.cleanup()``)."""
    ctx = ssl_ctx if ssl_ctx is not None else ssl_context(options)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=options.request_timeout_ns / 1e9)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.bind_address or None, options.secure_port,
                           ssl_context=ctx, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("Serving securely", extra={"address": f"{options.bind_address}:"
                                                   f"{options.secure_port}"})
    return runner


async def graceful_shutdown(runner: web.AppRunner, state: HealthState,
                            delay_s: float) -> None:
    """SIGTERM: ``/readyz`` fails at once (``shutdown``), the server keeps serving for
    ``delay_s`` (``--shutdown-delay-duration``), then stops accepting connections and lets
    in-flight requests finish."""
    state.begin_shutdown()
    log.info("Shutting down", extra={"delay": delay_s})
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    await runner.cleanup()
