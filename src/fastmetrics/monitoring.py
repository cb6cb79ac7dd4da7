"""The server's own Prometheus metrics (SPEC §7), rendered in text format 0.0.4.

``ServerMetrics`` holds the six ``metrics_server_*`` families with metrics-server's names,
types, labels, bucket boundaries and HELP texts (``[ALPHA] `` prefix), plus the standard
``process_*`` families read from ``/proc``. It renders them itself: the per-node series
(request duration histogram and last request time, labelled ``node``) live in numpy arrays
indexed by a node slot (``node name -> slot``, never deleted, as metrics-server never deletes
them), so 5,000 nodes cost a few arrays rather than 70,000 sample objects.

Rendering follows client_golang's text writer: families sorted by name, series sorted by label
value, values formatted like Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` (``1.764e+09``),
``le`` after the other labels, and a family with no series left out altogether (so
``metrics_server_storage_points`` appears only after the first store, and
``metrics_server_kubelet_request_total{success="false"}`` only after the first failure).

Observing runs on the event loop's thread; nothing here locks. To render elsewhere (the
server formats ``/metrics`` in a worker thread: 20-70 ms at 5,000 nodes), take
:meth:`ServerMetrics.frozen` on the loop's thread, a consistent copy, and render that.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "FRESHNESS_BUCKETS",
    "ServerMetrics",
    "exponential_buckets",
    "go_float",
    "tick_buckets",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of :meth:`ServerMetrics.render`'s body."""

ALPHA = "[ALPHA] "

FRESHNESS = "metrics_server_api_metric_freshness_seconds"
REQUEST_DURATION = "metrics_server_kubelet_request_duration_seconds"
REQUEST_TOTAL = "metrics_server_kubelet_request_total"
LAST_REQUEST_TIME = "metrics_server_kubelet_last_request_time_seconds"
TICK_DURATION = "metrics_server_manager_tick_duration_seconds"
STORAGE_POINTS = "metrics_server_storage_points"

HELP = {
    FRESHNESS: "Freshness of metrics exported",
    REQUEST_DURATION: "Duration of requests to Kubelet API in seconds",
    REQUEST_TOTAL: "Number of requests sent to Kubelet API",
    LAST_REQUEST_TIME: "Time of last request performed to Kubelet API since unix epoch in seconds",
    TICK_DURATION: "The total time spent collecting and storing metrics in seconds.",
    STORAGE_POINTS: "Number of metrics points stored.",
}
"""HELP text of each ``metrics_server_*`` family, without the ``[ALPHA] `` prefix."""

DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Prometheus' default histogram buckets (client_golang ``DefBuckets``)."""


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """client_golang's ``ExponentialBuckets``: ``start``, then each bucket times ``factor``.

    Computed by repeated multiplication, as Go does, so the float values are Go's exactly.
    """
    if count < 1 or start <= 0 or factor <= 1:
        raise ValueError("exponential_buckets needs count >= 1, start > 0 and factor > 1")
    out = []
    b = float(start)
    for _ in range(count):
        out.append(b)
        b *= factor
    return tuple(out)


FRESHNESS_BUCKETS = exponential_buckets(1, 1.364, 20)
"""``metrics_server_api_metric_freshness_seconds`` buckets: 1, 1.364, 1.8604960000000004, ..."""


def tick_buckets(resolution_s: float) -> tuple[float, ...]:
    """Tick-duration buckets: the default buckets adjusted to the resolution (SPEC §7).

    metrics-server's ``BucketsForScrapeDuration``: above the largest default bucket (10 s)
    append the halfway point, R, 1.5 R and 2 R (R = 15 s gives ... 10, 12.5, 15, 22.5, 30);
    below it insert R in order unless it lies within the smallest bucket (0.005) of a neighbour;
    at exactly 10 s the defaults are returned unchanged.
    """
    buckets = list(DEFAULT_BUCKETS)
    top = buckets[-1]
    r = float(resolution_s)
    if r > top:
        buckets += [top + (r - top) / 2, r, r * 1.5, r * 2.0]
    elif r < top:
        # the first bucket above r (Go's range loop leaves the last one when none is)
        i = next((k for k, b in enumerate(buckets) if b > r), len(buckets) - 1)
        bucket = buckets[i]
        if bucket - r < buckets[0] or (i > 0 and r - buckets[i - 1] < buckets[0]):
            return tuple(buckets)
        buckets.insert(i, r)
    return tuple(buckets)


# --------------------------------------------------------------------------------------------
# Go float formatting and escaping
# --------------------------------------------------------------------------------------------


def go_float(v: float) -> str:
    """Format ``v`` as client_golang's text writer does (Go ``FormatFloat(v, 'g', -1, 64)``).

    Shortest round-trip digits (Python's ``repr`` digits); the exponent form ``d.ddde+XX`` iff
    the decimal exponent is < -4 or >= 6; ``+Inf``, ``-Inf``, ``NaN``; ``-0`` written as ``0``.
    """
    v = float(v)
    if v == 0.0:
        return "0"
    if v != v:
        return "NaN"
    if v == math.inf:
        return "+Inf"
    if v == -math.inf:
        return "-Inf"
    if 1e-4 <= abs(v) < 1e6:  # fixed-point: repr is already Go's form, less a trailing ".0"
        r = repr(v)
        return r[:-2] if r.endswith(".0") else r
    r = repr(v)
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mantissa, is_exp, exp_text = r.partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    if is_exp:
        digits = (int_part + frac_part).rstrip("0") or "0"
        exp = int(exp_text)
    elif int_part != "0":
        digits = (int_part + frac_part).rstrip("0")
        exp = len(int_part) - 1
    else:  # unreachable for |v| < 1e-4 (repr uses the exponent form there); kept for safety
        significant = frac_part.lstrip("0")
        exp = len(significant) - len(frac_part) - 1
        digits = significant.rstrip("0")
    head = digits[0] if len(digits) == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{head}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _go_count(n: int) -> str:
    """``go_float(float(n))`` for a non-negative integer count (the common, fast case)."""
    if n < 1_000_000:
        return str(n)
    return go_float(float(n))


def _escape_label(s: str) -> str:
    if "\\" in s or '"' in s or "\n" in s:
        return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return s


def _escape_help(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n")


def _header(name: str, help_text: str, type_: str) -> str:
    return f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {type_}\n"


# --------------------------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------------------------


class _Histogram:
    """An unlabelled histogram: counts per bucket (the last is +Inf), sum and count."""

    __slots__ = ("bounds", "counts", "le", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        if self.bounds.ndim != 1 or np.any(np.diff(self.bounds) <= 0):
            raise ValueError("histogram buckets must be strictly increasing")
        self.counts = np.zeros(len(bounds) + 1, np.int64)
        self.sum = 0.0
        self.le = [go_float(b) for b in bounds] + ["+Inf"]

    def observe(self, value: float) -> None:
        # Prometheus buckets are upper-inclusive: v goes to the first bucket with bound >= v
        self.counts[int(np.searchsorted(self.bounds, value, side="left"))] += 1
        self.sum += float(value)

    def copy(self) -> _Histogram:
        out = _Histogram.__new__(_Histogram)
        out.bounds, out.counts, out.le, out.sum = self.bounds, self.counts.copy(), self.le, self.sum
        return out

    def render(self, name: str) -> str:
        cum = np.cumsum(self.counts).tolist()
        lines = [
            f'{name}_bucket{{le="{le}"}} {_go_count(c)}\n'
            for le, c in zip(self.le, cum, strict=True)
        ]
        lines.append(f"{name}_sum {go_float(self.sum)}\n")
        lines.append(f"{name}_count {_go_count(cum[-1])}\n")
        return "".join(lines)


class _NodeSeries:
    """The per-node families: request duration histogram and last request time, by slot."""

    __slots__ = ("_order", "bounds", "counts", "escaped", "last", "le", "names", "slots", "sums")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self.le = [go_float(b) for b in bounds] + ["+Inf"]
        self.slots: dict[str, int] = {}
        """Node name -> slot; never deleted (metrics-server keeps series of gone nodes)."""
        self.names: list[str] = []
        self.escaped: list[str] = []
        cap = 64
        self.counts = np.zeros((cap, len(bounds) + 1), np.int64)
        """Per slot: non-cumulative counts per bucket (the last column is +Inf)."""
        self.sums = np.zeros(cap, np.float64)
        self.last = np.zeros(cap, np.float64)
        """Per slot: Unix seconds of the end of the last request (integer-valued)."""
        self._order: list[int] | None = []

    def copy(self) -> _NodeSeries:
        out = _NodeSeries.__new__(_NodeSeries)
        n = len(self.names)
        out.bounds, out.le = self.bounds, self.le
        out.slots, out.names, out.escaped = dict(self.slots), list(self.names), list(self.escaped)
        out.counts, out.sums, out.last = self.counts[:n].copy(), self.sums[:n].copy(), \
            self.last[:n].copy()
        out._order = None if self._order is None else list(self._order)
        return out

    def slots_for(self, nodes: Sequence[str]) -> npt.NDArray[np.intp]:
        slots = self.slots
        out = np.empty(len(nodes), np.intp)
        for i, name in enumerate(nodes):
            s = slots.get(name)
            if s is None:
                s = self._add(name)
            out[i] = s
        return out

    def _add(self, name: str) -> int:
        s = len(self.names)
        if s == self.sums.shape[0]:
            cap = 2 * s
            counts = np.zeros((cap, self.counts.shape[1]), np.int64)
            counts[:s] = self.counts
            self.counts = counts
            self.sums = np.concatenate([self.sums, np.zeros(cap - s, np.float64)])
            self.last = np.concatenate([self.last, np.zeros(cap - s, np.float64)])
        self.slots[name] = s
        self.names.append(name)
        self.escaped.append(_escape_label(name))
        self._order = None
        return s

    def order(self) -> list[int]:
        """Slots sorted by node name (client_golang sorts series by label value)."""
        if self._order is None:
            self._order = sorted(range(len(self.names)), key=self.names.__getitem__)
        return self._order

    def observe(
        self,
        nodes: Sequence[str],
        duration_s: npt.NDArray[np.float64],
        end_time_s: npt.NDArray[np.float64],
    ) -> None:
        if len(nodes) == 0:
            return
        slots = self.slots_for(nodes)
        b = np.searchsorted(self.bounds, duration_s, side="left")
        np.add.at(self.counts, (slots, b), 1)
        np.add.at(self.sums, slots, duration_s)
        self.last[slots] = end_time_s

    def render_duration(self, name: str) -> str:
        n = len(self.names)
        if n == 0:
            return ""
        order = self.order()
        cum = np.cumsum(self.counts[:n], axis=1)
        big = bool(cum[:, -1].max(initial=0) >= 1_000_000)
        cum_rows = cum.tolist()
        sums = self.sums[:n].tolist()
        esc = self.escaped
        le = self.le
        prefix = f'{name}_bucket{{node="'
        mids = [f'",le="{x}"}} ' for x in le]
        sum_name = f'{name}_sum{{node="'
        count_name = f'{name}_count{{node="'
        parts: list[str] = []
        add = parts.append
        fmt = _go_count if big else str
        for s in order:
            e = esc[s]
            row = cum_rows[s]
            for mid, c in zip(mids, row, strict=True):
                add(f"{prefix}{e}{mid}{fmt(c)}\n")
            add(f'{sum_name}{e}"}} {go_float(sums[s])}\n')
            add(f'{count_name}{e}"}} {fmt(row[-1])}\n')
        return "".join(parts)

    def render_last(self, name: str) -> str:
        n = len(self.names)
        if n == 0:
            return ""
        esc = self.escaped
        last = self.last[:n].tolist()
        prefix = f'{name}{{node="'
        return "".join(f'{prefix}{esc[s]}"}} {go_float(last[s])}\n' for s in self.order())


# --------------------------------------------------------------------------------------------
# Process metrics (client_golang's process collector, from /proc)
# --------------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _boot_time_s() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _max_fds() -> float | None:
    try:
        with open("/proc/self/limits", "rb") as f:
            for line in f:
                if line.startswith(b"Max open files"):
                    soft = line.split()[3]
                    return math.inf if soft == b"unlimited" else float(soft)
    except OSError:
        pass
    return None


def _process_metrics() -> str:
    """The ``process_*`` families, as client_golang's process collector writes them."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    # fields after the command name (which may contain spaces and parentheses)
    fields = stat[stat.rfind(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    start_ticks = int(fields[19])
    vsize, rss_pages = int(fields[20]), int(fields[21])
    out = [
        _header("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                "counter"),
        f"process_cpu_seconds_total {go_float((utime + stime) / _CLK_TCK)}\n",
    ]
    max_fds = _max_fds()
    if max_fds is not None:
        out += [_header("process_max_fds", "Maximum number of open file descriptors.", "gauge"),
                f"process_max_fds {go_float(max_fds)}\n"]
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = -1
    if open_fds >= 0:
        out += [_header("process_open_fds", "Number of open file descriptors.", "gauge"),
                f"process_open_fds {go_float(open_fds)}\n"]
    out += [
        _header("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge"),
        f"process_resident_memory_bytes {go_float(rss_pages * _PAGE)}\n",
    ]
    btime = _boot_time_s()
    if btime is not None:
        out += [
            _header("process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.", "gauge"),
            f"process_start_time_seconds {go_float(btime + start_ticks / _CLK_TCK)}\n",
        ]
    out += [
        _header("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge"),
        f"process_virtual_memory_bytes {go_float(vsize)}\n",
    ]
    return "".join(out)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


class ServerMetrics:
    """The server's own metrics: observed by the scraper, manager and API; rendered at /metrics.

    ``resolution_s`` (``--metric-resolution``) shapes the tick-duration buckets.
    ``process=False`` leaves the ``process_*`` families out (tests).
    """

    def __init__(self, resolution_s: float, *, process: bool = True) -> None:
        self.resolution_s = float(resolution_s)
        self.process = process
        self._freshness = _Histogram(FRESHNESS_BUCKETS)
        self._tick = _Histogram(tick_buckets(resolution_s))
        self._nodes = _NodeSeries(DEFAULT_BUCKETS)
        self._requests: dict[str, int] = {}
        """success label value ("true"/"false") -> count; a key exists once incremented."""
        self._storage: tuple[int, int] | None = None

    # ------------------------------------------------------------------ observing

    def observe_requests(
        self,
        nodes: Sequence[str],
        duration_s: npt.ArrayLike,
        success: npt.ArrayLike,
        end_time_s: npt.ArrayLike,
    ) -> None:
        """Record one tick's node scrapes: per node its request duration (HTTP request plus
        decode, no jitter), whether it succeeded, and the Unix seconds when it ended."""
        dur = np.asarray(duration_s, dtype=np.float64)
        ok = np.asarray(success, dtype=np.bool_)
        end = np.floor(np.asarray(end_time_s, dtype=np.float64))
        if not dur.shape[0] == ok.shape[0] == end.shape[0] == len(nodes):
            raise ValueError("observe_requests: arrays must have one entry per node")
        if len(nodes) == 0:
            return
        self._nodes.observe(nodes, dur, end)
        n_ok = int(np.count_nonzero(ok))
        if n_ok:
            self._requests["true"] = self._requests.get("true", 0) + n_ok
        if n_ok < len(nodes):
            self._requests["false"] = self._requests.get("false", 0) + len(nodes) - n_ok

    def observe_tick(self, duration_s: float) -> None:
        """Record one tick's duration (scrape + store), in seconds."""
        self._tick.observe(duration_s)

    def observe_freshness(self, seconds: npt.ArrayLike) -> None:
        """Record ``now - timestamp`` (seconds) of every item a get/list returned."""
        self.add_freshness(*self.freshness_counts(seconds))

    @staticmethod
    def freshness_counts(seconds: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], float]:
        """The freshness histogram's bucket counts and sum for ``seconds``, computed anywhere
        (it reads nothing of a ServerMetrics); :meth:`add_freshness` records them. For a
        150,000-pod list this takes the ~2 ms of bucketing off the event loop."""
        values = np.asarray(seconds, dtype=np.float64).reshape(-1)
        bounds = np.asarray(FRESHNESS_BUCKETS, dtype=np.float64)
        idx = np.searchsorted(bounds, values, side="left")
        return np.bincount(idx, minlength=bounds.shape[0] + 1), float(values.sum())

    def add_freshness(self, counts: npt.NDArray[np.int64], total_s: float) -> None:
        """Record what :meth:`freshness_counts` computed."""
        if counts.shape != self._freshness.counts.shape:
            raise ValueError("freshness counts: one per bucket (and +Inf) expected")
        self._freshness.counts += counts
        self._freshness.sum += total_s

    def set_storage_points(self, nodes: int, containers: int) -> None:
        """After each store: nodes and containers that have a baseline (a prev point)."""
        self._storage = (int(nodes), int(containers))

    # ------------------------------------------------------------------ reading (tests, tools)

    def request_count(self, success: bool) -> int:
        """``metrics_server_kubelet_request_total{success=...}`` (0 before the first)."""
        return self._requests.get("true" if success else "false", 0)

    @property
    def tick_count(self) -> int:
        return int(self._tick.counts.sum())

    # ------------------------------------------------------------------ rendering

    def frozen(self) -> ServerMetrics:
        """A copy of everything observed so far, for rendering in another thread while this
        one keeps observing (a copy of a few arrays: ~0.1 ms at 5,000 nodes)."""
        out = ServerMetrics.__new__(ServerMetrics)
        out.resolution_s, out.process = self.resolution_s, self.process
        out._freshness, out._tick = self._freshness.copy(), self._tick.copy()
        out._nodes = self._nodes.copy()
        out._requests, out._storage = dict(self._requests), self._storage
        return out

    def render(self) -> bytes:
        """Everything in Prometheus text format 0.0.4 (``CONTENT_TYPE``)."""
        parts: list[str] = []
        if self.process:
            parts.append(_process_metrics())
        h = HELP
        parts.append(_header(FRESHNESS, ALPHA + h[FRESHNESS], "histogram"))
        parts.append(self._freshness.render(FRESHNESS))
        last = self._nodes.render_last(LAST_REQUEST_TIME)
        if last:
            parts.append(_header(LAST_REQUEST_TIME, ALPHA + h[LAST_REQUEST_TIME], "gauge"))
            parts.append(last)
        durations = self._nodes.render_duration(REQUEST_DURATION)
        if durations:
            parts.append(_header(REQUEST_DURATION, ALPHA + h[REQUEST_DURATION], "histogram"))
            parts.append(durations)
        if self._requests:
            parts.append(_header(REQUEST_TOTAL, ALPHA + h[REQUEST_TOTAL], "counter"))
            for label in sorted(self._requests):
                parts.append(
                    f'{REQUEST_TOTAL}{{success="{label}"}} {_go_count(self._requests[label])}\n'
                )
        parts.append(_header(TICK_DURATION, ALPHA + h[TICK_DURATION], "histogram"))
        parts.append(self._tick.render(TICK_DURATION))
        if self._storage is not None:
            nodes, containers = self._storage
            parts.append(_header(STORAGE_POINTS, ALPHA + h[STORAGE_POINTS], "gauge"))
            parts.append(f'{STORAGE_POINTS}{{type="container"}} {_go_count(containers)}\n')
            parts.append(f'{STORAGE_POINTS}{{type="node"}} {_go_count(nodes)}\n')
        return "".join(parts).encode()
