"""Running fastmetrics as the server (``fastmetrics [flags]``).

The informers sync first (SPEC §2.1: nothing listens before); then one tick per
``--metric-resolution`` scrapes every selected kubelet and stores the result (on a thread and
event loop of its own: :class:`fastmetrics.scrape.CollectorThread`), while the HTTPS server
(:mod:`fastmetrics.server`) serves the health endpoints, ``/metrics``, the path index and the
``metrics.k8s.io`` API, every request authenticated and authorized (:mod:`fastmetrics.auth`: CAs
from the flags or the ``kube-system/extension-apiserver-authentication`` ConfigMap, TokenReviews
and SubjectAccessReviews with the ``--authentication-kubeconfig`` and
``--authorization-kubeconfig`` clients, each defaulting to the ``--kubeconfig`` one, i.e.
in-cluster when that is empty too).

SIGTERM (or SIGINT): ``/readyz`` fails at once, the server keeps serving for
``--shutdown-delay-duration``, stops accepting, lets in-flight requests finish; the tick loop
stops and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .api.handlers import MetricsAPI
from .auth import build_security
from .cluster import ClientConfig, ClusterState, NodeInfo, load_client_config
from .errors import ConfigError
from .health import HealthState
from .log import setup_logging
from .monitoring import ServerMetrics
from .options import Options
from .scrape import CollectorThread, KubeletClientConfig, Scraper
from .selectors import parse_label_selector
from .server import ServingTLS, graceful_shutdown, make_app, serve
from .store import Store

__all__ = ["kubelet_client_config", "review_clients", "run_server"]

log = logging.getLogger("fastmetrics.server")

NS_PER_S = 1_000_000_000

SWITCH_INTERVAL_S = 0.001
"""How long a thread holding the GIL keeps it once another waits (CPython's default: 5 ms)."""


def kubelet_client_config(options: Options, client: ClientConfig,
                          workdir: Path) -> KubeletClientConfig:
    """The kubelet client from the apiserver client and the --kubelet-* flags (SPEC §2.4)."""
    apiserver_ca = client.ca_file
    if apiserver_ca is None and client.ca_data:
        # the scraper loads its trust anchor from a file: keep inline CA data in one
        path = workdir / "apiserver-ca.crt"
        path.write_bytes(client.ca_data)
        apiserver_ca = str(path)
    return KubeletClientConfig(
        preferred_address_types=options.kubelet_preferred_address_types,
        port=options.kubelet_port,
        use_node_status_port=options.kubelet_use_node_status_port,
        insecure_tls=options.kubelet_insecure_tls,
        ca_file=options.kubelet_certificate_authority or None,
        apiserver_ca_file=apiserver_ca,
        client_cert_file=options.kubelet_client_certificate or None,
        client_key_file=options.kubelet_client_key or None,
        completely_insecure=options.deprecated_kubelet_completely_insecure,
        timeout_ns=options.kubelet_request_timeout_ns,
        token_provider=client.bearer_token,
    )


def review_clients(options: Options, client: ClientConfig
                   ) -> tuple[ClientConfig, ClientConfig]:
    """The clients for authentication (ConfigMap lookups, TokenReviews) and authorization
    (SubjectAccessReviews): ``--authentication-kubeconfig`` and ``--authorization-kubeconfig``,
    else ``client`` (``--kubeconfig``, or in-cluster). Raises ConfigError."""
    authn = (load_client_config(options.authentication_kubeconfig)
             if options.authentication_kubeconfig else client)
    authz = (load_client_config(options.authorization_kubeconfig)
             if options.authorization_kubeconfig else client)
    return authn, authz


def _server_address(options: Options, port: int) -> str:
    """``<advertise ip>:<port>`` for ``GET /apis`` (the bind address, else this host's IP)."""
    host = options.bind_address
    if not host or ipaddress.ip_address(host).is_unspecified:
        host = "127.0.0.1"
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET,
                                                         socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            host = s.getsockname()[0]
    return f"{host}:{port}"


async def _serve(options: Options, workdir: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for flag, value in options.ignored:
        log.debug("Flag accepted for compatibility, not applied", extra={"flag": flag,
                                                                         "value": value})
    client = load_client_config(options.kubeconfig or None)
    node_selector = parse_label_selector(options.node_selector)
    async with ClusterState(client, gc_freeze=True) as state:
        wait = asyncio.ensure_future(stop.wait())
        synced = asyncio.ensure_future(state.wait_synced())
        await asyncio.wait({wait, synced}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            synced.cancel()
            return 0
        wait.cancel()
        log.info("Informers synced", extra={"nodes": state.node_count, "pods": state.pod_count})

        def nodes() -> list[NodeInfo]:
            return [n for n in state.nodes() if node_selector.matches(n.labels)]

        resolution_ns = options.metric_resolution_ns
        store = Store(resolution_ns)
        metrics = ServerMetrics(resolution_ns / NS_PER_S)
        # the tick loop scrapes on a thread and event loop of its own: this loop serves
        collector = CollectorThread(
            Scraper(kubelet_client_config(options, client, workdir), resolution_ns=resolution_ns),
            store, nodes, resolution_ns, metrics, loop_factory=_loop_factory())
        try:
            health = HealthState(
                storage_ready=store.ready,
                nodes_synced=state.node_informer.synced.is_set,
                pods_synced=state.pod_informer.synced.is_set,
                collection_timely=collector.timely,
            )
            api = MetricsAPI(state, lambda: store.snapshot, node_selector, metrics,
                             _server_address(options, options.secure_port))
            security = await build_security(options, *review_clients(options, client))
            try:
                tls = ServingTLS(options, client_cas=lambda: security.authenticator.config
                                 .client_ca_bundle())
                runner = await serve(make_app(health, metrics, api=api, security=security),
                                     options, tls=tls)
            except OSError as e:
                await security.stop()
                log.error("Failed to start the secure server", extra={"err": str(e)})
                return 1
            except BaseException:
                await security.stop()
                raise
            await security.start()
            reloading = asyncio.ensure_future(tls.run())
            collector.start()
            ticking = asyncio.ensure_future(collector.wait())
            waiting = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait({ticking, waiting},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                await graceful_shutdown(runner, health,
                                        options.shutdown_delay_duration_ns / NS_PER_S)
                await collector.stop()
                waiting.cancel()
                reloading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reloading
                await security.stop()
            if ticking in done:
                ticking.result()  # the tick loop failed: let the exception end the process
            else:
                ticking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticking
        finally:
            if not collector.started:  # close what the scraper holds (else the thread did)
                await collector.manager.scraper.close()
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when installed (as the server's), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_server(options: Options) -> int:
    """Run with validated ``options`` until SIGTERM or SIGINT; returns the exit status."""
    setup_logging(options.verbosity, options.logging_format)
    # the collector thread's Python work gives the GIL up to a waiting request after this
    # long (CPython's default is 5 ms)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # scratch files go under --cert-dir when it is writable: with the manifests'
    # readOnlyRootFilesystem it may be the only writable place
    scratch = options.cert_dir if os.access(options.cert_dir, os.W_OK | os.X_OK) else None
    with tempfile.TemporaryDirectory(prefix="fastmetrics-", dir=scratch) as tmp:
        coro = _serve(options, Path(tmp))
        try:
            try:
                import uvloop
            except ImportError:  # pragma: no cover
                return asyncio.run(coro)
            return uvloop.run(coro)
        except ConfigError as e:
            print(f"Error: {e}", file=sys.stderr)
            return 2
