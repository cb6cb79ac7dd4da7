"""The HTTPS server: routes, headers, the 404 index, the 500 Status middleware, TLS serving."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.x509.oid import NameOID

from fastmetrics.auth import allow_everyone
from fastmetrics.health import HealthState
from fastmetrics.monitoring import CONTENT_TYPE, ServerMetrics
from fastmetrics.options import Options
from fastmetrics.server import (
    _ACCEPT_ANY,
    CERT_FILE_NAME,
    KEY_FILE_NAME,
    ServingTLS,
    ensure_self_signed,
    graceful_shutdown,
    make_app,
    serve,
    status_body,
)
from fastmetrics.sim.certs import CertAuthority, KeyPair

TEXT = "text/plain; charset=utf-8"


@pytest.fixture
def state() -> HealthState:
    return HealthState()


@pytest.fixture
async def client(state: HealthState) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = make_app(state, ServerMetrics(60.0, process=False), security=allow_everyone())

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("something broke")

    app.router.add_get("/apis/boom", boom)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_health_endpoints(client: TestClient[web.Request, web.Application],
                                state: HealthState) -> None:
    for endpoint in ("healthz", "livez", "readyz"):
        r = await client.get(f"/{endpoint}")
        assert r.status == 200
        assert await r.read() == b"ok"
        assert r.headers["Content-Type"] == TEXT
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = await client.get("/readyz?verbose")
    assert (r.status, await r.read()) == (200, (
        b"[+]ping ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n"
        b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
        b"[+]metric-storage-ready ok\n[+]metric-informer-sync ok\n"
        b"[+]metadata-informer-sync ok\n[+]shutdown ok\nreadyz check passed\n"))
    r = await client.get("/readyz/poststarthook/max-in-flight-filter")
    assert (r.status, await r.read(), r.headers["Content-Type"]) == (200, b"ok", TEXT)
    # any method, as the Go mux
    r = await client.post("/livez")
    assert (r.status, await r.read()) == (200, b"ok")

    state.storage_ready = lambda: False
    r = await client.get("/readyz?exclude=ping&exclude=nothing")
    assert r.status == 500
    assert r.headers["Content-Type"] == TEXT
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert await r.read() == (
        b"[+]ping excluded: ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n"
        b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
        b"[-]metric-storage-ready failed: reason withheld\n[+]metric-informer-sync ok\n"
        b"[+]metadata-informer-sync ok\n[+]shutdown ok\n"
        b'warn: some health checks cannot be excluded: no matches for "nothing"\n'
        b"readyz check failed\n")
    r = await client.get("/readyz/metric-storage-ready")
    assert (r.status, await r.read()) == (500, b"internal server error: no metrics to serve\n")
    r = await client.get("/readyz?exclude=metric-storage-ready")
    assert (r.status, await r.read()) == (200, b"ok")


async def test_metrics(client: TestClient[web.Request, web.Application]) -> None:
    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE
    body = await r.text()
    assert "# TYPE metrics_server_manager_tick_duration_seconds histogram" in body


async def test_unknown_paths(client: TestClient[web.Request, web.Application]) -> None:
    for path in ("/", "/nope", "/readyz/", "/readyz/nope", "/api", "/metricsx"):
        r = await client.get(path)
        assert r.status == 404, path
        assert r.headers["Content-Type"] == "application/json"
        body = await r.read()
        paths = json.loads(body)["paths"]
        assert paths == sorted(paths)
        assert {"/healthz", "/livez", "/readyz", "/metrics", "/readyz/shutdown",
                "/livez/metric-collection-timely",
                "/healthz/poststarthook/max-in-flight-filter"} <= set(paths)
        assert body.startswith(b'{\n  "paths": [\n    "/')  # Go's json.MarshalIndent layout
        assert body.endswith(b'"\n  ]\n}')
    for path in ("/apis/metrics.k8s.io/v1beta1/nope", "/apis/x"):
        r = await client.get(path)
        assert r.status == 404
        assert r.headers["Content-Type"] == "application/json"
        assert await r.read() == (
            b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
            b'"message":"the server could not find the requested resource",'
            b'"reason":"NotFound","details":{},"code":404}\n')


async def test_unexpected_exception_is_a_500_status(
        client: TestClient[web.Request, web.Application],
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="fastmetrics.server"):
        r = await client.get("/apis/boom")
    assert r.status == 500
    assert r.headers["Content-Type"] == "application/json"
    body = await r.read()
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"Internal error occurred: something broke","reason":"InternalError",'
        b'"details":{"causes":[{"message":"something broke"}]},"code":500}\n')
    assert b"Traceback" not in body
    assert any(rec.exc_info for rec in caplog.records)
    assert json.loads(status_body(500, "InternalError", "x", {}))["code"] == 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_self_signed_tls_serving(tmp_path: Path) -> None:
    cert_dir = tmp_path / "certs"
    port = _free_port()
    options = Options(bind_address="127.0.0.1", secure_port=port, cert_dir=str(cert_dir))
    state = HealthState()
    runner = await serve(make_app(state, security=allow_everyone()), options)
    try:
        cert_file = cert_dir / CERT_FILE_NAME
        assert cert_file.exists() and (cert_dir / KEY_FILE_NAME).exists()
        assert (cert_dir / KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600
        leaf = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        ctx = ssl.create_default_context(cafile=str(cert_file))
        async with aiohttp.ClientSession() as session:
            for host in ("127.0.0.1", "localhost"):
                async with session.get(f"https://{host}:{port}/readyz?verbose",
                                       ssl=ctx) as r:
                    assert r.status == 200
                    assert (await r.read()).endswith(b"[+]shutdown ok\nreadyz check passed\n")
            # TLS only
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
                    await r.read()
        # SIGTERM sequence: readyz fails during the delay, then the port closes
        shutdown = asyncio.ensure_future(graceful_shutdown(runner, state, 0.5))
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/readyz", ssl=ctx) as r:
                assert r.status == 500
                assert (await r.read()).endswith(
                    b"[-]shutdown failed: reason withheld\nreadyz check failed\n")
            async with session.get(f"https://127.0.0.1:{port}/livez", ssl=ctx) as r:
                assert r.status == 200
        await asyncio.wait_for(shutdown, 10)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        await runner.cleanup()


def test_self_signed_cert_reuse(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, ["pod-1"])
    first = cert.read_bytes(), key.read_bytes()
    leaf = x509.load_pem_x509_certificates(first[0])[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "pod-1"]
    # reused while valid
    assert ensure_self_signed(tmp_path, ["pod-1"]) == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == first
    # a broken pair is replaced
    key.write_bytes(b"garbage")
    ensure_self_signed(tmp_path, ["pod-1"])
    assert cert.read_bytes() != first[0]
    ssl.create_default_context().load_cert_chain(cert, key)


async def test_operator_certificate_is_used(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path / "own")
    port = _free_port()
    options = Options(bind_address="127.0.0.1", secure_port=port,
                      cert_dir=str(tmp_path / "unused"), tls_cert_file=str(cert),
                      tls_private_key_file=str(key), tls_min_version="VersionTLS13")
    runner = await serve(make_app(HealthState(), security=allow_everyone()), options)
    try:
        assert not (tmp_path / "unused").exists()
        ctx = ssl.create_default_context(cafile=str(cert))
        async with (aiohttp.ClientSession() as session,
                    session.get(f"https://localhost:{port}/livez", ssl=ctx) as r):
            assert (r.status, await r.read()) == (200, b"ok")
        old = ssl.create_default_context(cafile=str(cert))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"https://localhost:{port}/livez", ssl=old) as r:
                    await r.read()
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ client certificates, rotation


async def _peer_der(request: web.Request) -> web.Response:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(True) if ssl_object is not None else None
    return web.Response(text=f"{len(der) if der else 0}")


async def _peer_app_runner(options: Options, tls: ServingTLS) -> web.AppRunner:
    app = make_app(HealthState(), security=allow_everyone())
    app.router.add_get("/peer", _peer_der)
    return await serve(app, options, tls=tls)


def _client(ca: Path, pair: KeyPair | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if pair is not None:
        ctx.load_cert_chain(pair.cert_file, pair.key_file)
    return ctx


async def _served_cert(port: int, ca: Path) -> x509.Certificate:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client(ca),
                                              server_hostname="localhost")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()


async def test_any_client_certificate_reaches_the_application(tmp_path: Path) -> None:
    """Go asks for a client certificate and verifies it in the authenticators: a certificate
    from an unknown CA completes the handshake (and gets its 401 there)."""
    assert _ACCEPT_ANY.available, _ACCEPT_ANY.reason
    serving = CertAuthority(tmp_path / "pki", "serving")
    pair = serving.issue("srv", "localhost", dns_names=("localhost",), server=True)
    stranger = CertAuthority(tmp_path / "pki", "nobody-knows-me").issue("c", "x", client=True)
    port = _free_port()
    options = Options(bind_address="127.0.0.1", secure_port=port,
                      tls_cert_file=str(pair.cert_file), tls_private_key_file=str(pair.key_file))
    tls = ServingTLS(options)
    assert tls.accepts_any_client_cert
    assert tls.context.verify_mode == ssl.CERT_OPTIONAL
    runner = await _peer_app_runner(options, tls)
    try:
        async with aiohttp.ClientSession() as session:
            for ctx, expect in ((_client(serving.cert_file, stranger), True),
                                (_client(serving.cert_file), False)):
                async with session.get(f"https://localhost:{port}/peer", ssl=ctx) as r:
                    assert r.status == 200
                    assert (int(await r.text()) > 0) is expect
    finally:
        await runner.cleanup()


async def test_serving_certificate_rotation(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path / "pki", "serving")
    first = ca.issue("one", "one", dns_names=("localhost",), server=True)
    second = ca.issue("two", "two", dns_names=("localhost",), server=True)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(first.cert_file.read_bytes())
    key.write_bytes(first.key_file.read_bytes())
    port = _free_port()
    options = Options(bind_address="127.0.0.1", secure_port=port, tls_cert_file=str(cert),
                      tls_private_key_file=str(key))
    tls = ServingTLS(options, interval_s=0.05)
    runner = await _peer_app_runner(options, tls)
    polling = asyncio.ensure_future(tls.run())
    try:
        cn = NameOID.COMMON_NAME
        assert (await _served_cert(port, ca.cert_file)).subject.get_attributes_for_oid(
            cn)[0].value == "one"
        # half way through a rotation (new certificate, old key): the old pair stays
        cert.write_bytes(second.cert_file.read_bytes())
        await asyncio.sleep(0.3)
        assert tls.reloads == 0
        assert (await _served_cert(port, ca.cert_file)).subject.get_attributes_for_oid(
            cn)[0].value == "one"
        key.write_bytes(second.key_file.read_bytes())
        for _ in range(200):
            if tls.reloads:
                break
            await asyncio.sleep(0.05)
        assert tls.reloads == 1
        assert (await _served_cert(port, ca.cert_file)).subject.get_attributes_for_oid(
            cn)[0].value == "two"
    finally:
        polling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await polling
        await runner.cleanup()


async def test_openssl_verification_when_the_hook_is_off(tmp_path: Path) -> None:
    """Without the verify hook OpenSSL checks client certificates against the union of the
    CAs: an unknown CA fails the handshake; a CA change applies to the next handshake."""
    pki = tmp_path / "pki"
    serving = CertAuthority(pki, "serving")
    pair = serving.issue("srv", "localhost", dns_names=("localhost",), server=True)
    trusted, later = CertAuthority(pki, "trusted"), CertAuthority(pki, "later")
    good = trusted.issue("good", "good", client=True)
    newer = later.issue("newer", "newer", client=True)
    bundle = {"pem": trusted.cert_pem}
    port = _free_port()
    options = Options(bind_address="127.0.0.1", secure_port=port,
                      tls_cert_file=str(pair.cert_file), tls_private_key_file=str(pair.key_file))
    tls = ServingTLS(options, client_cas=lambda: bundle["pem"], accept_any_client_cert=False)
    assert not tls.accepts_any_client_cert
    runner = await _peer_app_runner(options, tls)
    try:
        async with aiohttp.ClientSession() as session:
            async def peer(pair: KeyPair | None) -> int:
                async with session.get(f"https://localhost:{port}/peer",
                                       ssl=_client(serving.cert_file, pair)) as r:
                    return int(await r.text())
            assert await peer(good) > 0
            assert await peer(None) == 0
            with pytest.raises(aiohttp.ClientError):
                await peer(newer)
            bundle["pem"] = trusted.cert_pem + later.cert_pem
            assert await peer(newer) > 0
    finally:
        await runner.cleanup()
