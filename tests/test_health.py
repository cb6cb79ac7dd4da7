"""Health checks and endpoint bodies (SPEC §5.9, §10.5 probe vectors)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from fastmetrics.cluster import NodeInfo
from fastmetrics.health import (
    Check,
    HealthState,
    checks_for,
    evaluate,
    evaluate_one,
    healthz_checks,
    livez_checks,
    readyz_checks,
)
from fastmetrics.scrape import Manager, Scraper
from fastmetrics.store import Store

COMMON = ["ping", "log", "poststarthook/max-in-flight-filter",
          "poststarthook/storage-object-count-tracker-hook"]

READYZ_VERBOSE = (
    b"[+]ping ok\n"
    b"[+]log ok\n"
    b"[+]poststarthook/max-in-flight-filter ok\n"
    b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
    b"[+]metric-storage-ready ok\n"
    b"[+]metric-informer-sync ok\n"
    b"[+]metadata-informer-sync ok\n"
    b"[+]shutdown ok\n"
    b"readyz check passed\n"
)


def _names(checks: Sequence[Check]) -> list[str]:
    return [c.name for c in checks]


def _by_name(checks: Sequence[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def test_check_lists_in_spec_order() -> None:
    state = HealthState()
    assert _names(readyz_checks(state)) == [*COMMON, "metric-storage-ready",
                                            "metric-informer-sync", "metadata-informer-sync",
                                            "shutdown"]
    assert _names(livez_checks(state)) == [*COMMON, "metric-collection-timely",
                                           "metadata-informer-sync"]
    assert _names(healthz_checks(state)) == [*COMMON, "metadata-informer-sync"]
    assert list(checks_for(state)) == ["healthz", "livez", "readyz"]


def test_healthy_bodies() -> None:
    state = HealthState()
    assert evaluate("readyz", readyz_checks(state), verbose=True) == (200, READYZ_VERBOSE)
    assert evaluate("readyz", readyz_checks(state), verbose=False) == (200, b"ok")
    assert evaluate("livez", livez_checks(state), verbose=True) == (200, (
        b"[+]ping ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n"
        b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
        b"[+]metric-collection-timely ok\n[+]metadata-informer-sync ok\nlivez check passed\n"))
    assert evaluate("healthz", healthz_checks(state), verbose=True) == (200, (
        b"[+]ping ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n"
        b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
        b"[+]metadata-informer-sync ok\nhealthz check passed\n"))


def test_failure_is_always_verbose_and_withholds_reasons() -> None:
    state = HealthState(storage_ready=lambda: False)
    for verbose in (False, True):
        assert evaluate("readyz", readyz_checks(state), verbose=verbose) == (500, (
            b"[+]ping ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n"
            b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
            b"[-]metric-storage-ready failed: reason withheld\n"
            b"[+]metric-informer-sync ok\n[+]metadata-informer-sync ok\n[+]shutdown ok\n"
            b"readyz check failed\n"))
    # storage does not matter to liveness
    assert evaluate("livez", livez_checks(state), verbose=False) == (200, b"ok")


def test_shutdown_fails_readyz_only() -> None:
    state = HealthState()
    state.begin_shutdown()
    status, body = evaluate("readyz", readyz_checks(state), verbose=False)
    assert status == 500
    assert body.endswith(b"[-]shutdown failed: reason withheld\nreadyz check failed\n")
    assert evaluate("livez", livez_checks(state), verbose=False) == (200, b"ok")
    assert evaluate("healthz", healthz_checks(state), verbose=False) == (200, b"ok")
    assert evaluate_one(_by_name(readyz_checks(state), "shutdown")) == (
        500, b"internal server error: process is shutting down\n")


def test_exclude() -> None:
    state = HealthState(storage_ready=lambda: False)
    checks = readyz_checks(state)
    # excluding the failing check makes it pass; non-verbose is just "ok"
    assert evaluate("readyz", checks, False, ["metric-storage-ready"]) == (200, b"ok")
    assert evaluate("readyz", checks, True, ["metric-storage-ready", "ping"]) == (200, (
        b"[+]ping excluded: ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n"
        b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
        b"[+]metric-storage-ready excluded: ok\n"
        b"[+]metric-informer-sync ok\n[+]metadata-informer-sync ok\n[+]shutdown ok\n"
        b"readyz check passed\n"))


def test_unknown_excludes_warn_sorted_and_quoted() -> None:
    checks = healthz_checks(HealthState())
    status, body = evaluate("healthz", checks, True, ["zeta", "ping", "alpha", "zeta"])
    assert status == 200
    assert body == (
        b"[+]ping excluded: ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n"
        b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
        b"[+]metadata-informer-sync ok\n"
        b'warn: some health checks cannot be excluded: no matches for "alpha","zeta"\n'
        b"healthz check passed\n")
    # non-verbose success hides the warning
    assert evaluate("healthz", checks, False, ["nope"]) == (200, b"ok")
    # a failure shows it
    failing = [Check("ping", lambda: "boom")]
    assert evaluate("livez", failing, False, ["nope"]) == (500, (
        b"[-]ping failed: reason withheld\n"
        b'warn: some health checks cannot be excluded: no matches for "nope"\n'
        b"livez check failed\n"))


def test_per_check_bodies() -> None:
    state = HealthState(storage_ready=lambda: False, pods_synced=lambda: False)
    checks = readyz_checks(state)
    assert evaluate_one(_by_name(checks, "ping")) == (200, b"ok")
    assert evaluate_one(_by_name(checks, "metric-storage-ready")) == (
        500, b"internal server error: no metrics to serve\n")
    assert evaluate_one(_by_name(checks, "metadata-informer-sync")) == (
        500, b"internal server error: 1 informers not started yet: [/v1, Resource=pods]\n")
    state.nodes_synced = lambda: False
    assert evaluate_one(_by_name(checks, "metric-informer-sync")) == (
        500, b"internal server error: 2 informers not started yet: "
             b"[*v1.Node /v1, Resource=pods]\n")


def test_raising_check_fails_instead_of_breaking() -> None:
    def broken() -> str | None:
        raise RuntimeError("kaput")
    status, body = evaluate("healthz", [Check("ping", broken)], False)
    assert (status, body) == (500, b"[-]ping failed: reason withheld\nhealthz check failed\n")
    assert evaluate_one(Check("ping", broken)) == (500, b"internal server error: kaput\n")


# ---------------------------------------------------------------- §10.5 probe vectors

RES_NS = 60 * 1_000_000_000


class _Clock:
    def __init__(self) -> None:
        self.now = 10**15

    def __call__(self) -> int:
        return self.now


async def _manager(clock: _Clock) -> tuple[Manager, Scraper]:
    from fastmetrics.scrape import KubeletClientConfig
    scraper = Scraper(KubeletClientConfig(insecure_tls=True, timeout_ns=1_000_000_000),
                      resolution_ns=RES_NS)
    return Manager(scraper, Store(RES_NS), list, RES_NS, monotonic_ns=clock), scraper


def _timely(manager: Manager) -> tuple[int, bytes]:
    checks = livez_checks(HealthState(collection_timely=manager.timely))
    return evaluate_one(_by_name(checks, "metric-collection-timely"))


async def test_timely_passes_before_any_tick() -> None:
    clock = _Clock()
    manager, scraper = await _manager(clock)
    async with scraper:
        clock.now += 10 * RES_NS
        assert _timely(manager) == (200, b"ok")


async def test_timely_passes_after_a_failed_scrape() -> None:
    clock = _Clock()
    manager, scraper = await _manager(clock)
    async with scraper:
        # a node without addresses: its scrape fails
        manager.nodes_fn = lambda: [NodeInfo("node1", {}, (), 10250, True)]
        await asyncio.wait_for(manager.tick(), 10)
        assert manager.last_result is not None and manager.last_result.errors
        assert manager.last_tick_start is not None
        assert _timely(manager) == (200, b"ok")


@pytest.mark.parametrize(("ago", "ok"), [(RES_NS, True), (2 * RES_NS, False)])
async def test_timely_after_a_tick_that_started_ago(ago: int, ok: bool) -> None:
    clock = _Clock()
    manager, scraper = await _manager(clock)
    async with scraper:
        await asyncio.wait_for(manager.tick(), 10)
        start = manager.last_tick_start
        assert start is not None
        clock.now = start + ago
        if ok:
            assert _timely(manager) == (200, b"ok")
        else:
            assert _timely(manager) == (
                500, b"internal server error: metric collection didn't finish on time\n")
            status, body = evaluate("livez", livez_checks(
                HealthState(collection_timely=manager.timely)), verbose=False)
            assert status == 500
            assert b"[-]metric-collection-timely failed: reason withheld\n" in body


@pytest.mark.parametrize("ready", [False, True])
def test_storage_ready_probe(ready: bool) -> None:
    check = _by_name(readyz_checks(HealthState(storage_ready=lambda: ready)),
                     "metric-storage-ready")
    expected = (200, b"ok") if ready else (500, b"internal server error: no metrics to serve\n")
    assert evaluate_one(check) == expected


def test_storage_ready_probe_on_a_real_store() -> None:
    store = Store(RES_NS)
    check = _by_name(readyz_checks(HealthState(storage_ready=store.ready)),
                     "metric-storage-ready")
    assert evaluate_one(check) == (500, b"internal server error: no metrics to serve\n")
