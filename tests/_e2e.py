"""The end-to-end stack shared by the e2e tests: the simulated cluster on a background thread's
event loop (so a test can reach into its model) and fastmetrics as a subprocess with the stock
manifest flags, registered as the metrics.k8s.io APIService (``fastmetrics.sim.run``'s own
``start_fastmetrics``, as the demo does)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastmetrics.sim.model import ClusterShape
from fastmetrics.sim.run import SimulatedCluster, start_fastmetrics

T = TypeVar("T")

READY_TIMEOUT_S = 60.0


class LoopThread:
    """An asyncio loop on a daemon thread; ``run`` waits for a coroutine run on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 90.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Stack:
    sim: SimulatedCluster
    url: str
    """fastmetrics' base URL (https://127.0.0.1:PORT)."""
    workdir: Path

    @property
    def log(self) -> str:
        return (self.workdir / "sim" / "fastmetrics.log").read_text()


@contextlib.contextmanager
def running_stack(workdir: Path, shape: ClusterShape | None = None) -> Iterator[Stack]:
    """Start the simulated cluster and fastmetrics (10 s resolution, 5 s kubelet timeout),
    wait until fastmetrics is ready; stop both (by pid for fastmetrics) on exit."""
    shape = shape or ClusterShape(nodes=3, pods_per_node=4, containers_per_pod=2)
    lt = LoopThread()
    sim = SimulatedCluster(shape, workdir / "sim", stats_interval_s=1.0)
    try:
        lt.run(sim.start())
        with contextlib.ExitStack() as processes:
            url = lt.run(start_fastmetrics(sim, processes, READY_TIMEOUT_S,
                                           metric_resolution="10s",
                                           kubelet_request_timeout="5s"))
            yield Stack(sim, url, workdir)
    finally:
        with contextlib.suppress(Exception):
            lt.run(sim.stop())
        lt.close()
