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

from fastmetrics.health import HealthState
from fastmetrics.monitoring import CONTENT_TYPE, ServerMetrics
from fastmetrics.options import Options
from fastmetrics.server import (
    CERT_FILE_NAME,
    KEY_FILE_NAME,
    ensure_self_signed,
    graceful_shutdown,
    make_app,
    serve,
    status_body,
)

TEXT = "text/plain; charset=utf-8"


@pytest.fixture
def state() -> HealthState:
    return HealthState()


@pytest.fixture
async def client(state: HealthState) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = make_app(state, ServerMetrics(60.0, process=False))

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
    runner = await serve(make_app(state), options)
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
    runner = await serve(make_app(HealthState()), options)
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
