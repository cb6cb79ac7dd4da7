"""A whole simulated cluster in one process: the kube-apiserver stand-in and the kubelet farm.

``SimulatedCluster`` wires the pieces together (certificates, model, kubelets, apiserver) and
writes two kubeconfigs into its work directory: ``admin.kubeconfig`` (for kubectl, as
``kubernetes-admin`` in ``system:masters``) and ``metrics-server.kubeconfig`` (the token of the
``kube-system/metrics-server`` service account, which the kubelets also accept).
``run_simulator`` runs it until SIGINT/SIGTERM; ``fastmetrics demo`` and ``fastmetrics sim``
call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

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


def _demo_banner(sim: SimulatedCluster) -> str:
    kc = f"kubectl --kubeconfig {sim.admin_kubeconfig}"
    return "\n".join([
        f"fastmetrics demo: a simulated cluster of {len(sim.cluster.nodes)} nodes and "
        f"{len(sim.cluster.pods)} pods is serving at {sim.api.url}",
        f"  kubelets: https://<node InternalIP>:{sim.farm.port}/metrics/resource "
        f"(InternalIPs {sim.cluster.nodes[0].address} ...)",
        "",
        "Try:",
        f"  {kc} get nodes",
        f"  {kc} get pods -A",
        f"  {kc} get --raw /api/v1/nodes/{sim.cluster.nodes[0].name}",
        "",
        "fastmetrics' own API server is not wired into the demo yet (it comes with the collect",
        "and API issues); then `kubectl top` will work against this cluster too.",
        "Press Ctrl-C to stop.",
    ])


async def _run(
    shape: ClusterShape,
    workdir: Path,
    *,
    ready_file: Path | None,
    banner: Callable[[SimulatedCluster], str] | None,
    out: TextIO,
    stats_interval_s: float,
    api_port: int,
    kubelet_port: int,
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
            if ready_file is not None:
                tmp = ready_file.with_suffix(ready_file.suffix + ".tmp")
                tmp.write_text(json.dumps(sim.describe(), indent=2))
                tmp.replace(ready_file)  # readers never see a half-written file
            if banner is not None:
                print(banner(sim), file=out, flush=True)
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
            kubelet_port=kubelet_port,
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
