"""A whole simulated cluster in one process: the kube-apiserver stand-in and the kubelet farm.

``SimulatedCluster`` wires the pieces together (certificates, model, kubelets, apiserver) and
writes two kubeconfigs into its work directory: ``admin.kubeconfig`` (for kubectl, as
``kubernetes-admin`` in ``system:masters``) and ``metrics-server.kubeconfig`` (the token of the
``kube-system/metrics-server`` service account, which the kubelets also accept).
``run_simulator`` runs it until SIGINT/SIGTERM; ``fastmetrics demo`` and ``fastmetrics sim``
call it. The demo also starts fastmetrics itself (a subprocess with the stock manifest flags,
on a free loopback port), registers it as the ``metrics.k8s.io`` APIService and waits until it
is ready, so that ``kubectl top`` works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from .apiserver import ApiServer
from .certs import CertAuthority
from .kubeconfig import write_kubeconfig
from .kubelet import KubeletFarm, raise_nofile_limit
from .model import Cluster, ClusterShape

__all__ = ["SimulatedCluster", "run_simulator"]


class SimulatedCluster:
    """The simulated apiserver and kubelets of ``shape``, their certificates and kubeconfigs."""

    def __init__(
        self,
        shape: ClusterShape,
        workdir: Path,
        *,
        stats_interval_s: float = 10.0,
        bookmark_interval_s: float = 60.0,
        api_port: int = 0,
        kubelet_port: int = 0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        self.cluster = Cluster(shape)
        self.cluster_ca = CertAuthority(pki, "cluster")
        self.front_proxy_ca = CertAuthority(pki, "front-proxy")
        self._kubelet_port = kubelet_port
        self.api = ApiServer(
            self.cluster,
            pki,
            cluster_ca=self.cluster_ca,
            front_proxy_ca=self.front_proxy_ca,
            kubelet_port=lambda _node: self.farm.port,
            port=api_port,
            bookmark_interval=bookmark_interval_s,
        )
        self.farm = KubeletFarm(
            self.cluster,
            self.cluster_ca,
            kubelet_port,
            tokens=[self.api.metrics_server_token],
            stats_interval_s=stats_interval_s,
            cert_dir=pki / "kubelets",
        )
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.metrics_server_kubeconfig = self.workdir / "metrics-server.kubeconfig"

    async def start(self) -> None:
        raise_nofile_limit()
        await self.farm.start()
        try:
            await self.api.start()
        except BaseException:
            await self.farm.stop()
            raise
        write_kubeconfig(
            self.admin_kubeconfig, self.api.url, self.api.ca_file, token=self.api.admin_token,
            user_name="kubernetes-admin", context_name="sim-admin",
        )
        write_kubeconfig(
            self.metrics_server_kubeconfig, self.api.url, self.api.ca_file,
            token=self.api.metrics_server_token, user_name="metrics-server",
            context_name="sim-metrics-server",
        )

    async def stop(self) -> None:
        try:
            await self.api.stop()
        finally:
            await self.farm.stop()

    async def __aenter__(self) -> SimulatedCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> dict[str, Any]:
        """Where everything is, as written to ``--ready-file``."""
        return {
            "api_url": self.api.url,
            "ca_file": str(self.api.ca_file),
            "admin_kubeconfig": str(self.admin_kubeconfig),
            "metrics_server_kubeconfig": str(self.metrics_server_kubeconfig),
            "admin_token": self.api.admin_token,
            "metrics_server_token": self.api.metrics_server_token,
            "front_proxy_ca_file": str(self.front_proxy_ca.cert_file),
            "kubelet_port": self.farm.port,
            "nodes": len(self.cluster.nodes),
            "pods": len(self.cluster.pods),
            "pid": os.getpid(),
        }


def _demo_banner(sim: SimulatedCluster, fastmetrics_url: str | None = None) -> str:
    kc = f"kubectl --kubeconfig {sim.admin_kubeconfig}"
    lines = [
        f"fastmetrics demo: a simulated cluster of {len(sim.cluster.nodes)} nodes and "
        f"{len(sim.cluster.pods)} pods is serving at {sim.api.url}",
        f"  kubelets: https://<node InternalIP>:{sim.farm.port}/metrics/resource "
        f"(InternalIPs {sim.cluster.nodes[0].address} ...)",
    ]
    if fastmetrics_url is not None:
        lines.append(f"  fastmetrics: {fastmetrics_url} (the metrics.k8s.io APIService; "
                     f"log in {sim.workdir / 'fastmetrics.log'})")
    lines += [
        "",
        "Try:",
        f"  {kc} get nodes",
        f"  {kc} get pods -A",
        f"  {kc} get --raw /api/v1/nodes/{sim.cluster.nodes[0].name}",
    ]
    if fastmetrics_url is not None:
        lines += [f"  {kc} top node", f"  {kc} top pod -A"]
    lines += ["", "Press Ctrl-C to stop."]
    return "\n".join(lines)


DEMO_READY_TIMEOUT_S = 90.0
"""How long the demo waits for fastmetrics' /readyz (two scrapes at the stock 15 s)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fastmetrics_command(sim: SimulatedCluster, port: int, *, metric_resolution: str = "15s",
                        kubelet_request_timeout: str | None = None,
                        extra_args: Sequence[str] = ()) -> list[str]:
    """fastmetrics with the stock manifest flags, on loopback ``port``, certs in the workdir
    (tests pass a shorter resolution and timeout, and maybe more flags)."""
    cmd = [
        sys.executable, "-m", "fastmetrics",
        f"--kubeconfig={sim.metrics_server_kubeconfig}",
        f"--cert-dir={sim.workdir / 'fastmetrics-certs'}",
        f"--secure-port={port}", "--bind-address=127.0.0.1",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port", f"--metric-resolution={metric_resolution}",
    ]
    if kubelet_request_timeout is not None:
        cmd.append(f"--kubelet-request-timeout={kubelet_request_timeout}")
    cmd += extra_args
    return cmd


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fastmetrics exited with status {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"{url}/readyz", ssl=False,
                                       timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"fastmetrics was not ready within {timeout_s:.0f} s")
            await asyncio.sleep(0.5)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def start_fastmetrics(sim: SimulatedCluster, stack: contextlib.ExitStack,
                            timeout_s: float = DEMO_READY_TIMEOUT_S, *,
                            metric_resolution: str = "15s",
                            kubelet_request_timeout: str | None = None,
                            extra_args: Sequence[str] = ()) -> str:
    """Start fastmetrics against ``sim`` (log in ``<workdir>/fastmetrics.log``), wait until
    ready, register it as the APIService; returns its URL. The process is stopped when
    ``stack`` closes. Used by the demo and the end-to-end tests (which may add flags)."""
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    command = fastmetrics_command(sim, port, metric_resolution=metric_resolution,
                                  kubelet_request_timeout=kubelet_request_timeout,
                                  extra_args=extra_args)
    with (sim.workdir / "fastmetrics.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    stack.callback(_stop_process, proc)
    await _wait_ready(url, proc, timeout_s)
    sim.api.register_api_service(url=url, insecure_skip_tls_verify=True)
    return url


async def _run(
    shape: ClusterShape,
    workdir: Path,
    *,
    ready_file: Path | None,
    banner: Callable[[SimulatedCluster, str | None], str] | None,
    out: TextIO,
    stats_interval_s: float,
    api_port: int,
    kubelet_port: int,
    with_fastmetrics: bool = False,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with SimulatedCluster(
            shape, workdir, stats_interval_s=stats_interval_s, api_port=api_port,
            kubelet_port=kubelet_port,
        ) as sim:
            with contextlib.ExitStack() as processes:
                if ready_file is not None:
                    tmp = ready_file.with_suffix(ready_file.suffix + ".tmp")
                    tmp.write_text(json.dumps(sim.describe(), indent=2))
                    tmp.replace(ready_file)  # readers never see a half-written file
                if banner is not None:
                    url = None
                    if with_fastmetrics:
                        print("fastmetrics demo: starting fastmetrics and waiting until it is "
                              "ready (two scrapes) ...", file=out, flush=True)
                        starting = asyncio.ensure_future(start_fastmetrics(sim, processes))
                        stopping = asyncio.ensure_future(stop.wait())
                        await asyncio.wait({starting, stopping},
                                           return_when=asyncio.FIRST_COMPLETED)
                        if stop.is_set():
                            starting.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await starting
                            return
                        stopping.cancel()
                        try:
                            url = starting.result()
                        except RuntimeError as e:
                            print(f"fastmetrics demo: {e} (see {sim.workdir / 'fastmetrics.log'})"
                                  "; `kubectl top` will not work", file=out, flush=True)
                    print(banner(sim, url), file=out, flush=True)
                await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_simulator(
    shape: ClusterShape,
    *,
    workdir: Path | None = None,
    ready_file: Path | None = None,
    demo: bool = False,
    stats_interval_s: float = 10.0,
    api_port: int = 0,
    kubelet_port: int = 0,
    out: TextIO = sys.stdout,
) -> int:
    """Run the simulated cluster until SIGINT or SIGTERM; returns the exit status."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fm-sim-")))
        coro = _run(
            shape, workdir, ready_file=ready_file, banner=_demo_banner if demo else None,
            out=out, stats_interval_s=stats_interval_s, api_port=api_port,
            kubelet_port=kubelet_port, with_fastmetrics=demo,
        )
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            asyncio.run(coro)
        else:
            uvloop.run(coro)
        if demo:
            print("fastmetrics demo: stopped", file=out, flush=True)
    return 0
