"""Running fastmetrics as the server (``fastmetrics [flags]``).

The informers sync first (SPEC §2.1: nothing listens before); then one tick per
``--metric-resolution`` scrapes every selected kubelet and stores the result, while the HTTPS
server (:mod:`fastmetrics.server`) serves the health endpoints, ``/metrics`` and the path index.
The ``metrics.k8s.io`` resources are not served yet; the process says so at start.

SIGTERM (or SIGINT): ``/readyz`` fails at once, the server keeps serving for
``--shutdown-delay-duration``, stops accepting, lets in-flight requests finish; the tick loop
stops and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from pathlib import Path

from .cluster import ClientConfig, ClusterState, NodeInfo, load_client_config
from .errors import ConfigError
from .health import HealthState
from .log import setup_logging
from .monitoring import ServerMetrics
from .options import Options
from .scrape import KubeletClientConfig, Manager, Scraper
from .selectors import parse_label_selector
from .server import graceful_shutdown, make_app, serve
from .store import Store

__all__ = ["kubelet_client_config", "run_server"]

log = logging.getLogger("fastmetrics.server")

NS_PER_S = 1_000_000_000


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
    log.warning("The metrics.k8s.io API is not built yet: serving health endpoints and "
                "/metrics only")
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
        async with Scraper(kubelet_client_config(options, client, workdir),
                           resolution_ns=resolution_ns) as scraper:
            manager = Manager(scraper, store, nodes, resolution_ns, metrics)
            health = HealthState(
                storage_ready=store.ready,
                nodes_synced=state.node_informer.synced.is_set,
                pods_synced=state.pod_informer.synced.is_set,
                collection_timely=manager.timely,
            )
            try:
                runner = await serve(make_app(health, metrics), options)
            except OSError as e:
                log.error("Failed to start the secure server", extra={"err": str(e)})
                return 1
            ticking = asyncio.ensure_future(manager.run())
            waiting = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait({ticking, waiting},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                await graceful_shutdown(runner, health,
                                        options.shutdown_delay_duration_ns / NS_PER_S)
                manager.stop()
                waiting.cancel()
            if ticking in done:
                ticking.result()  # the tick loop failed: let the exception end the process
            else:
                ticking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticking
    return 0


def run_server(options: Options) -> int:
    """Run with validated ``options`` until SIGTERM or SIGINT; returns the exit status."""
    setup_logging(options.verbosity, options.logging_format)
    with tempfile.TemporaryDirectory(prefix="fastmetrics-") as tmp:
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
