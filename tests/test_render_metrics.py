"""``/metrics`` is formatted off the event loop from a consistent copy (``ServerMetrics.frozen``).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fastmetrics.auth import allow_everyone
from fastmetrics.health import HealthState
from fastmetrics.monitoring import ServerMetrics
from fastmetrics.server import make_app


def _observed(nodes: int = 300) -> ServerMetrics:
    m = ServerMetrics(15.0, process=False)
    names = [f"node-{i:04d}" for i in range(nodes)]
    rng = np.random.default_rng(5)
    for k in range(3):
        m.observe_requests(names, rng.uniform(0.001, 3.0, nodes), rng.random(nodes) > 0.1,
                           np.full(nodes, 1_767_225_600.0 + k))
    m.observe_tick(0.25)
    m.observe_freshness([0.5, 14.0, 99.0])
    m.set_storage_points(nodes, 2 * nodes)
    return m


def test_frozen_renders_what_was_observed_and_stays_put() -> None:
    m = _observed()
    before = m.render()
    frozen = m.frozen()
    assert frozen.render() == before
    m.observe_requests(["node-0001", "node-new"], [0.5, 0.5], [False, True], [1.0, 2.0])
    m.observe_tick(1.0)
    m.observe_freshness([3.0])
    m.set_storage_points(1, 1)
    assert frozen.render() == before  # the copy does not see later observations
    assert m.render() != before and 'node="node-new"' in m.render().decode()
    assert m.frozen().render() == m.render()


async def test_metrics_are_rendered_in_the_render_executor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m = _observed()
    threads: list[str] = []
    real = ServerMetrics.render

    def spy(self: ServerMetrics) -> bytes:
        threads.append(threading.current_thread().name)
        return real(self)

    expected = m.render()
    monkeypatch.setattr(ServerMetrics, "render", spy)
    app: Any = make_app(HealthState(), m, security=allow_everyone())
    async with TestClient(TestServer(app)) as c:
        r = await c.get("/metrics")
        body = await r.read()
    assert r.status == 200 and body == expected
    assert threads and all(t.startswith("fastmetrics-render") for t in threads)
    assert re.search(rb"metrics_server_kubelet_request_total\{success=\"true\"\} \d+", body)


def test_freshness_counted_elsewhere_is_freshness_observed() -> None:
    values = [0.0, 1.0, 1.2, 3.0, 14.99, 15.0, 700.0, 1e9]
    a, b = ServerMetrics(15.0, process=False), ServerMetrics(15.0, process=False)
    a.observe_freshness(values)
    a.observe_freshness(values[:3])
    for chunk in (values, values[:3]):
        b.add_freshness(*ServerMetrics.freshness_counts(np.array(chunk)))
    assert a.render() == b.render()
    with pytest.raises(ValueError, match="one per bucket"):
        b.add_freshness(np.zeros(3, np.int64), 0.0)
