"""The HTTPS server: health endpoints, ``/metrics``, the path index, TLS and graceful shutdown.

:func:`make_app` builds the aiohttp application (SPEC §5.9, §5.10, §6, §7). Every request
passes :class:`fastmetrics.auth.Security` first (authentication, authorization), then:

* ``/healthz``, ``/livez``, ``/readyz`` and ``/<endpoint>/<check>`` for every check, any method
  (as the Go mux serves them), bodies from :mod:`fastmetrics.health`, with
  ``Content-Type: text/plain; charset=utf-8`` and ``X-Content-Type-Options: nosniff``;
* ``/metrics``: :meth:`ServerMetrics.render` (when metrics are given);
* any path no route matches: outside ``/apis`` a 404 whose body is the ``{"paths":[...]}``
  index (Go's ``json.MarshalIndent(.., "", "  ")`` layout, sorted, every registered literal
  path); under ``/apis`` the 404 ``NotFound`` Status of §5.5;
* one middleware turns any unexpected exception into a 500 ``InternalError`` Status (logged with
  its traceback, never sent).

:func:`serve` starts it over TLS on ``--bind-address:--secure-port`` with the contexts of
:class:`ServingTLS`: the operator's certificate (reloaded when the files change) or a
self-signed one kept in ``--cert-dir`` (:func:`ensure_self_signed`), client certificates
requested and left to :mod:`fastmetrics.auth` to verify; :func:`graceful_shutdown` is the
SIGTERM sequence.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import ipaddress
import json
import logging
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .api.handlers import PREFIX as RESOURCE_PREFIX
from .api.handlers import MetricsAPI, add_routes, render_executor
from .auth import FileWatch, Security, status_json
from .errors import ConfigError
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
    "SECURITY_KEY",
    "ServingTLS",
    "ensure_self_signed",
    "graceful_shutdown",
    "make_app",
    "serve",
    "status_body",
]

log = logging.getLogger("fastmetrics.server")

HEALTH_KEY: Final = web.AppKey("health", HealthState)
CHECKS_KEY: Final = web.AppKey("checks", dict[str, list[Check]])
METRICS_KEY: Final = web.AppKey("metrics", ServerMetrics)
SECURITY_KEY: Final = web.AppKey("security", Security)

CERT_FILE_NAME: Final = "apiserver.crt"
KEY_FILE_NAME: Final = "apiserver.key"

TEXT_HEADERS: Final = {"Content-Type": "text/plain; charset=utf-8",
                       "X-Content-Type-Options": "nosniff"}
JSON_CONTENT_TYPE: Final = "application/json"

NOT_FOUND_MESSAGE: Final = "the server could not find the requested resource"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ================================================================================ bodies


def status_body(code: int, reason: str, message: str, details: dict[str, Any]) -> bytes:
    """A ``metav1.Status`` failure, field order, escaping and trailing newline as the
    apiserver's JSON."""
    return status_json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": message, "reason": reason,
                        "details": details, "code": code})


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
    # a consistent copy taken here, formatted in the render executor (20-70 ms at 5,000 nodes)
    frozen = request.app[METRICS_KEY].frozen()
    body = await asyncio.get_running_loop().run_in_executor(render_executor(), frozen.render)
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


# ================================================================================ the app


def make_app(state: HealthState, metrics: ServerMetrics | None = None, *,
             api: MetricsAPI | None = None, security: Security) -> web.Application:
    """The application: health endpoints, ``/metrics`` (with ``metrics``), the 404 index and,
    with ``api``, the metrics.k8s.io routes; every request passes ``security`` first
    (authentication, authorization: SPEC §6), then the error middleware."""
    app = web.Application(middlewares=[security.middleware, error_middleware])
    if api is not None:
        add_routes(app, api)
    app[HEALTH_KEY] = state
    app[SECURITY_KEY] = security
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


class _AcceptAnyClientCert:
    """Makes an ``ssl.SSLContext`` ask for a client certificate and accept whichever one is
    presented, leaving the verification to :mod:`fastmetrics.auth` (as Go's
    ``tls.RequestClientCert``).

    Python's ``ssl`` has no verify callback, and with ``CERT_OPTIONAL`` OpenSSL fails the
    handshake for a certificate from an unknown CA, where Go answers 401. So this installs,
    through ctypes, an OpenSSL certificate-verify callback that accepts, on the ``SSL_CTX``
    behind the context (the first field of CPython's ``PySSLContext``). It is used only when
    the OpenSSL library ``_ssl`` runs on answers by the expected symbols and version and the
    pointer reads back the context's own settings; otherwise :attr:`available` is False and
    :class:`ServingTLS` lets OpenSSL verify against the CA bundles instead (unknown CAs then
    fail the handshake)."""

    SSL_VERIFY_PEER: Final = 1

    def __init__(self) -> None:
        self.reason = ""
        self._set: Any = None
        self._callback: Any = None
        try:
            import _ssl
            if sys.implementation.name != "cpython":
                raise OSError(f"not CPython ({sys.implementation.name})")
            lib = ctypes.CDLL(_ssl.__file__)
            version = lib.OpenSSL_version_num
            version.argtypes, version.restype = [], ctypes.c_ulong
            if version() != ssl.OPENSSL_VERSION_NUMBER:
                raise OSError("the OpenSSL found is not the one the ssl module uses")
            callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
            self._set = lib.SSL_CTX_set_cert_verify_callback
            self._set.argtypes = [ctypes.c_void_p, callback_type, ctypes.c_void_p]
            self._set.restype = None
            self._get_mode = lib.SSL_CTX_get_verify_mode
            self._get_mode.argtypes, self._get_mode.restype = [ctypes.c_void_p], ctypes.c_int
            self._get_options = lib.SSL_CTX_get_options
            self._get_options.argtypes = [ctypes.c_void_p]
            self._get_options.restype = ctypes.c_uint64
            self._callback = callback_type(lambda _store, _arg: 1)
        except (OSError, AttributeError, ImportError) as e:
            self.reason = str(e) or type(e).__name__
            self._set = None

    @property
    def available(self) -> bool:
        return self._set is not None

    def apply(self, ctx: ssl.SSLContext) -> bool:
        """Install on ``ctx`` (sets ``CERT_OPTIONAL``); False when it could not be done."""
        if self._set is None:
            return False
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not ptr or ptr % 8:
            self.reason = "unexpected ssl.SSLContext layout"
            return False
        if self._get_mode(ptr) != self.SSL_VERIFY_PEER or \
                self._get_options(ptr) != int(ctx.options):
            self.reason = "the SSL_CTX pointer does not read back the context's settings"
            return False
        self._set(ptr, self._callback, None)
        return True


_ACCEPT_ANY: Final = _AcceptAnyClientCert()


class ServingTLS:
    """The serving TLS contexts from the secure-serving flags (SPEC §8.2, §6.4).

    * The certificate is ``--tls-cert-file``/``--tls-private-key-file``, re-read when the files
      change (polled every ``interval_s`` by :meth:`run`, as cert-manager rotates them), or a
      self-signed one kept in ``--cert-dir`` (:func:`ensure_self_signed`).
    * ``--tls-min-version`` and ``--tls-cipher-suites`` (Go names mapped to OpenSSL's), ALPN
      ``http/1.1``.
    * Client certificates are requested and accepted whatever their issuer (see
      :class:`_AcceptAnyClientCert`); :mod:`fastmetrics.auth` verifies them. Where that hook
      is unavailable (or ``accept_any_client_cert=False``) OpenSSL verifies them against
      ``client_cas()`` (the union of the client and request-header CAs), re-read when it
      changes.

    :attr:`context` goes to the listening socket; every handshake switches (SNI callback) to
    the newest context, so a rotation applies to new connections without a restart.
    """

    def __init__(self, options: Options, *, client_cas: Callable[[], bytes] | None = None,
                 interval_s: float = 1.0, accept_any_client_cert: bool = True) -> None:
        self.options = options
        self.interval_s = interval_s
        self._client_cas = client_cas
        self._watches: tuple[FileWatch, FileWatch] | None = None
        if options.tls_cert_file and options.tls_private_key_file:
            self.cert_file = Path(options.tls_cert_file)
            self.key_file = Path(options.tls_private_key_file)
            self._watches = (FileWatch(self.cert_file), FileWatch(self.key_file))
            for w in self._watches:
                try:
                    w.read()
                except OSError as e:
                    flag = ("--tls-cert-file" if w.path == self.cert_file
                            else "--tls-private-key-file")
                    raise ConfigError(f"{flag}: {e.strerror or e}: {w.path}") from None
        else:
            self.cert_file, self.key_file = ensure_self_signed(options.cert_dir)
        self.accepts_any_client_cert = accept_any_client_cert and _ACCEPT_ANY.available
        if accept_any_client_cert and not _ACCEPT_ANY.available:
            log.warning("Client certificates from unknown CAs will fail the TLS handshake "
                        "(instead of a 401): the OpenSSL verify hook is unavailable",
                        extra={"reason": _ACCEPT_ANY.reason})
        self._ca_bundle = b""
        self.reloads = 0
        self.context = self._build()
        self.context.sni_callback = self._sni
        self._current = self.context

    def _build(self) -> ssl.SSLContext:
        o = self.options
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _GO_TLS_VERSIONS.get(o.tls_min_version, ssl.TLSVersion.TLSv1_2)
        if ctx.minimum_version < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ciphers = [_GO_CIPHERS[c] for c in o.tls_cipher_suites if c in _GO_CIPHERS]
        if ciphers:
            ctx.set_ciphers(":".join(ciphers))
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the serving certificate {self.cert_file} and key "
                              f"{self.key_file}: {e}") from None
        ctx.set_alpn_protocols(["http/1.1"])
        if self.accepts_any_client_cert and not _ACCEPT_ANY.apply(ctx):
            self.accepts_any_client_cert = False
            log.warning("Client certificates from unknown CAs will fail the TLS handshake "
                        "(instead of a 401): the OpenSSL verify hook could not be installed",
                        extra={"reason": _ACCEPT_ANY.reason})
        if not self.accepts_any_client_cert:
            self._ca_bundle = self._client_cas() if self._client_cas is not None else b""
            ctx.verify_mode = ssl.CERT_OPTIONAL
            if self._ca_bundle:
                ctx.load_verify_locations(cadata=self._ca_bundle.decode())
        return ctx

    def _sni(self, ssl_object: ssl.SSLObject, server_name: str | None,
             ctx: ssl.SSLContext) -> None:
        if not self.accepts_any_client_cert and self._client_cas is not None and \
                self._client_cas() != self._ca_bundle:
            self._rebuild("client CAs changed")
        current = self._current
        if current is not ctx:
            ssl_object.context = current

    def _rebuild(self, why: str) -> bool:
        try:
            self._current = self._build()
        except (ConfigError, ssl.SSLError, ValueError) as e:
            log.error("Keeping the previous TLS settings", extra={"why": why, "err": str(e)})
            return False
        self.reloads += 1
        log.info("TLS settings reloaded", extra={"why": why})
        return True

    def reload(self) -> bool:
        """Check the certificate files (and the CA bundle) now; True when the settings were
        rebuilt."""
        changed = False
        if self._watches is not None:
            # both files are always checked (no short-circuit), so each one's stamp is current
            changed = any([w.changed() is not None for w in self._watches])
        if not self.accepts_any_client_cert and self._client_cas is not None and \
                self._client_cas() != self._ca_bundle:
            changed = True
        if not changed:
            return False
        if not self._rebuild("certificate files changed"):
            # the pair may be half written: try again at the next poll
            if self._watches is not None:
                for w in self._watches:
                    w.content = b""
            return False
        return True

    async def run(self) -> None:
        """Poll for changes until cancelled."""
        for _ in range(1 << 62):
            await asyncio.sleep(self.interval_s)
            self.reload()


# ================================================================================ serving


async def serve(app: web.Application, options: Options, *,
                tls: ServingTLS | None = None) -> web.AppRunner:
    """Start ``app`` over TLS on ``--bind-address:--secure-port``; returns the started runner
    (``runner.addresses`` has the bound address; stop it with :func:`graceful_shutdown` or
    ``runner.cleanup()``)."""
    ctx = (tls if tls is not None else ServingTLS(options)).context
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
