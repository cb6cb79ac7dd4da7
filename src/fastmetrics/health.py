"""The health endpoints' logic: ``/healthz``, ``/livez``, ``/readyz`` (SPEC §5.9).

Pure and synchronous, so it is tested without a server. A :class:`Check` is a name and a
function returning ``None`` (ok) or the error text. :func:`readyz_checks`, :func:`livez_checks`
and :func:`healthz_checks` build metrics-server's three lists, in its order and with its names,
from a :class:`HealthState`. :func:`evaluate` renders an endpoint's response exactly as
``k8s.io/apiserver/pkg/server/healthz`` does (``handleRootHealth``):

* success: 200 ``ok``, or with ``verbose`` one ``[+]<name> ok`` line per check (``[+]<name>
  excluded: ok`` for an excluded one) and ``<endpoint> check passed\\n``;
* failure (always verbose): 500, failing checks as ``[-]<name> failed: reason withheld`` and the
  final line ``<endpoint> check failed\\n`` (Go's ``http.Error`` appends the newline);
* ``exclude`` names that match no check are ignored, but the verbose (and failure) body gets
  ``warn: some health checks cannot be excluded: no matches for "a","b"\\n`` (sorted, Go-quoted)
  before the final line.

:func:`evaluate_one` is a per-check path (``/readyz/<name>``): ``ok``, or 500
``internal server error: <err>\\n``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from .log import go_quote

__all__ = [
    "ENDPOINTS",
    "Check",
    "HealthState",
    "checks_for",
    "evaluate",
    "evaluate_one",
    "healthz_checks",
    "livez_checks",
    "readyz_checks",
]

log = logging.getLogger("fastmetrics.health")

ENDPOINTS: Final = ("healthz", "livez", "readyz")

NODE_INFORMER: Final = "*v1.Node"
"""How client-go names the typed Node informer in "informers not started yet" errors."""
POD_INFORMER: Final = "/v1, Resource=pods"
"""How client-go names the metadata Pod informer (its ``GroupVersionResource.String()``)."""

ERR_NO_METRICS: Final = "no metrics to serve"
ERR_NOT_TIMELY: Final = "metric collection didn't finish on time"
ERR_SHUTTING_DOWN: Final = "process is shutting down"


@dataclass(frozen=True, slots=True)
class Check:
    """One named health check: ``fn()`` returns None when healthy, else the error text."""

    name: str
    fn: Callable[[], str | None]


def _always() -> bool:
    return True


@dataclass(slots=True)
class HealthState:
    """What the checks look at. The callables are read on every probe; ``shutting_down`` is
    flipped when SIGTERM arrives (``/readyz`` fails from then on)."""

    storage_ready: Callable[[], bool] = _always
    """The store's ``ready()`` (SPEC §4.4)."""
    nodes_synced: Callable[[], bool] = _always
    pods_synced: Callable[[], bool] = _always
    collection_timely: Callable[[], bool] = _always
    """The manager's ``timely()``."""
    shutting_down: bool = False
    shutdown_started_ns: int | None = field(default=None, repr=False)

    def begin_shutdown(self) -> None:
        if not self.shutting_down:
            self.shutting_down = True
            self.shutdown_started_ns = time.monotonic_ns()


def _not_started(names: Sequence[str]) -> str | None:
    if not names:
        return None
    # Go's fmt %v of a []string: "[a b]"
    return f"{len(names)} informers not started yet: [{' '.join(names)}]"


def _common(state: HealthState) -> list[Check]:
    del state
    return [
        Check("ping", lambda: None),
        Check("log", lambda: None),
        Check("poststarthook/max-in-flight-filter", lambda: None),
        Check("poststarthook/storage-object-count-tracker-hook", lambda: None),
    ]


def _metadata_informer_sync(state: HealthState) -> Check:
    # the metadata informer factory holds the Pod informer only
    return Check("metadata-informer-sync",
                 lambda: _not_started([] if state.pods_synced() else [POD_INFORMER]))


def readyz_checks(state: HealthState) -> list[Check]:
    """``/readyz``'s checks in metrics-server's order."""

    def storage() -> str | None:
        return None if state.storage_ready() else ERR_NO_METRICS

    def informers() -> str | None:
        names = [name for name, ok in ((NODE_INFORMER, state.nodes_synced),
                                       (POD_INFORMER, state.pods_synced)) if not ok()]
        return _not_started(names)

    def shutdown() -> str | None:
        return ERR_SHUTTING_DOWN if state.shutting_down else None

    return [
        *_common(state),
        Check("metric-storage-ready", storage),
        Check("metric-informer-sync", informers),
        _metadata_informer_sync(state),
        Check("shutdown", shutdown),
    ]


def livez_checks(state: HealthState) -> list[Check]:
    """``/livez``'s checks in metrics-server's order."""

    def timely() -> str | None:
        return None if state.collection_timely() else ERR_NOT_TIMELY

    return [
        *_common(state),
        Check("metric-collection-timely", timely),
        _metadata_informer_sync(state),
    ]


def healthz_checks(state: HealthState) -> list[Check]:
    """``/healthz``'s checks in metrics-server's order."""
    return [*_common(state), _metadata_informer_sync(state)]


def checks_for(state: HealthState) -> dict[str, list[Check]]:
    """Every endpoint's check list, by endpoint name (``ENDPOINTS``)."""
    return {"healthz": healthz_checks(state), "livez": livez_checks(state),
            "readyz": readyz_checks(state)}


def _run(check: Check) -> str | None:
    try:
        return check.fn()
    except Exception as e:  # a broken check is a failing check, never a broken endpoint
        log.exception("Health check raised", extra={"check": check.name})
        return str(e) or type(e).__name__


def evaluate(endpoint: str, checks: Sequence[Check], verbose: bool,
             exclude: Sequence[str] = ()) -> tuple[int, bytes]:
    """The status and body of ``/<endpoint>`` (``verbose``: the query has a ``verbose`` key;
    ``exclude``: every ``exclude`` value)."""
    excluded = set(exclude)
    lines: list[str] = []
    failed: list[str] = []
    details: list[str] = []
    for check in checks:
        if check.name in excluded:
            excluded.discard(check.name)
            lines.append(f"[+]{check.name} excluded: ok\n")
            continue
        err = _run(check)
        if err is None:
            lines.append(f"[+]{check.name} ok\n")
        else:
            # the reason stays out of the public body; it goes to the log
            lines.append(f"[-]{check.name} failed: reason withheld\n")
            details.append(f"[-]{check.name} failed: {err}\n")
            failed.append(check.name)
    if excluded:
        names = ",".join(go_quote(name) for name in sorted(excluded))
        lines.append(f"warn: some health checks cannot be excluded: no matches for {names}\n")
        log.debug("Cannot exclude some health checks, no health checks are installed matching",
                  extra={"checks": names})
    if failed:
        log.debug("Health check failed", extra={"endpoint": endpoint, "checks": ",".join(failed),
                                               "details": "".join(details)})
        return 500, f"{''.join(lines)}{endpoint} check failed\n".encode()
    if not verbose:
        return 200, b"ok"
    return 200, f"{''.join(lines)}{endpoint} check passed\n".encode()


def evaluate_one(check: Check) -> tuple[int, bytes]:
    """The status and body of ``/<endpoint>/<check>``."""
    err = _run(check)
    if err is None:
        return 200, b"ok"
    return 500, f"internal server error: {err}\n".encode()
