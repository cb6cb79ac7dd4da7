"""The cluster-scale benchmark (issue 8): fastmetrics against a simulated cluster, from outside.

    python -m bench.scale --nodes 1000 --pods-per-node 110
    python -m bench.scale --nodes 5000 --pods-per-node 30 --ticks 6 --json out.json
    python -m bench.scale --sweep --out bench/scale-results.json     # the RESULTS.md sweep
    python -m bench.scale_plot bench/scale-results.json              # its table and plots

Three kinds of process, as in a real cluster:

* the simulated cluster (``python -m fastmetrics sim``: the kube-apiserver stand-in and one
  HTTPS kubelet per node on its own loopback address 127.x.y.z);
* fastmetrics itself, started exactly as metrics-server's stock manifest runs it
  (``--metric-resolution=15s``, ``--kubelet-use-node-status-port``,
  ``--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname``, ``--cert-dir``,
  a secure port; kubelet certificates verified against the cluster CA), plus
  ``--logging-format=json --v=2`` so that its two lines per tick ("Scrape finished", "Tick
  details") can be read here;
* this process: it watches fastmetrics through ``/proc`` and its own ``/metrics``, and
  applies the API load over TLS with the front-proxy client certificate (``X-Remote-User``,
  ``X-Remote-Group: system:masters``), as the aggregator would.

On a machine with two or more CPUs fastmetrics is pinned to CPU 0 and the simulator and this
process to CPU 1, so fastmetrics' CPU and latency are its own; the load average is reported.

Measured, over a window of ``--ticks`` whole ticks that starts when a tick finishes (after
readiness and ``--warmup-ticks`` more ticks, so TLS handshakes and first decodes are outside):

* fastmetrics CPU seconds per tick (utime + stime from ``/proc/<pid>/stat`` over the window,
  which holds exactly ``--ticks`` ticks and the API load of the same period), and per node;
* RSS (``VmRSS`` at the end, ``VmHWM`` the peak) and per node;
* tick duration from its own ``metrics_server_manager_tick_duration_seconds`` (sum/count
  deltas) and per tick from its log, and the part after the scrape jitter window
  (``min(8 ms x nodes, 4 s)``, which metrics-server spreads requests over);
* time from process start to ``/readyz`` 200;
* age of served data (now - ``timestamp`` of items, once a second);
* latency of an HPA-like load: ``--hpa-rate`` namespaced PodMetrics lists per second, each
  with a label selector ``app=<deployment>`` (open loop, measured from each request's
  scheduled send time, so a stall counts in full), reported overall and for requests sent
  while a tick was running; and of a VPA-like load: every pod, every ``--vpa-interval`` s,
  from a process of its own (reading a 33 MB body would stall the HPA client's loop).

Everything is bounded by ``--budget-s``; every process started here is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NS = 1_000_000_000
API = "/apis/metrics.k8s.io/v1beta1"
PROTOBUF = "application/vnd.kubernetes.protobuf"
JSON_TYPE = "application/json"
APPS = ("web", "api", "worker", "cache", "frontend", "checkout", "search")
"""The sim model's deployments (``app`` label values), in its order."""
PODS_PER_NAMESPACE = 150
"""The sim's namespaces are sized so that one namespace holds about this many pods (an
HPA's list then returns ~20 pods, one deployment's replicas)."""
SWEEP: tuple[tuple[int, int], ...] = (
    (100, 30), (1000, 30), (2000, 30), (5000, 30), (100, 110), (1000, 110),
)
STRETCH: tuple[int, int] = (5000, 110)
_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Targets at 5,000 x 30 (issue 8)
TARGET_MCPU_PER_NODE = 0.07
TARGET_RSS_MIB_PER_NODE = 0.25
TARGET_TICK_AFTER_JITTER_S = 2.0
TARGET_HPA_P99_MS = 10.0


# ============================================================================ /proc


def proc_cpu_s(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TCK


def proc_run_delay_s(pid: int) -> float:
    """Seconds the process's main thread (fastmetrics' event loop) spent runnable but waiting
    for a CPU (``/proc/<pid>/schedstat``): other work on the same core."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_mem_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def loadavg() -> tuple[float, float, float]:
    a, b, c = open("/proc/loadavg").read().split()[:3]  # noqa: SIM115
    return float(a), float(b), float(c)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PHYS_PAGES") * _PAGE / 2**30
    return (f"{os.cpu_count()} x {cpu}, {mem_gib:.0f} GiB, Linux {platform.release()}, "
            f"{platform.python_implementation()} {platform.python_version()}")


def pin(pid: int, cpus: set[int]) -> bool:
    try:
        os.sched_setaffinity(pid, cpus)
        return True
    except (AttributeError, OSError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; by pid, only the process started here."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


# ============================================================================ results


@dataclass
class Tick:
    end_s: float
    """Wall-clock Unix seconds when the tick finished (from the log line)."""
    duration_s: float
    nodes: int
    pods: int
    failed: int
    max_jitter_s: float | None = None
    """The longest jitter sleep drawn in the tick ("Tick details", -v=2)."""
    timeouts: int = 0
    fm_busy: float = 0.0
    """Share of one CPU fastmetrics used while the tick ran (from /proc, 0.25 s samples)."""
    sim_busy: float = 0.0
    """The same for the simulator (kubelets and apiserver)."""
    fm_wait: float = 0.0
    """Share of the tick fastmetrics' loop was runnable but waiting for its CPU."""

    @property
    def start_s(self) -> float:
        return self.end_s - self.duration_s


@dataclass
class Window:
    """One measured window: /proc and /metrics samples at its ends, its ticks."""

    c0: float
    s0: float
    h0: tuple[float, float]
    start: float
    c1: float = 0.0
    s1: float = 0.0
    h1: tuple[float, float] = (0.0, 0.0)
    end: float = 0.0
    ticks: list[Tick] = field(default_factory=list)
    rss_peak: float = 0.0


@dataclass
class Result:
    nodes: int
    pods_per_node: int
    containers_per_pod: int
    resolution_s: float
    date: str
    machine: str
    implementation: str
    pinned: bool
    namespaces: int
    hpa_rate: float
    vpa_interval_s: float
    accept: str
    sim_pid: int = 0
    fastmetrics_pid: int = 0
    ticks: int = 0
    sim_ready_s: float = 0.0
    ready_s: float | None = None
    cpu_s_per_tick: float = 0.0
    """With the API load (the loaded window)."""
    mcpu_per_node: float = 0.0
    idle_cpu_s_per_tick: float | None = None
    """Collection alone (the window before the load starts)."""
    idle_mcpu_per_node: float | None = None
    idle_tick_durations_s: list[float] = field(default_factory=list)
    idle_tick_after_jitter_s: list[float] = field(default_factory=list)
    rss_mib: float = 0.0
    hwm_mib: float = 0.0
    rss_mib_per_node: float = 0.0
    tick_mean_s: float = 0.0
    tick_max_s: float = 0.0
    jitter_window_s: float = 0.0
    tick_after_jitter_max_s: float = 0.0
    tick_after_jitter_s: list[float] = field(default_factory=list)
    timeouts_per_tick: list[int] = field(default_factory=list)
    busy_during_ticks: list[tuple[float, float, float]] = field(default_factory=list)
    """Per loaded tick: (fastmetrics, simulator) share of one CPU while it ran, and the share
    of the tick fastmetrics' loop waited for its CPU (other work on the same core)."""
    idle_busy_during_ticks: list[tuple[float, float, float]] = field(default_factory=list)
    tick_durations_s: list[float] = field(default_factory=list)
    failed_per_tick: list[int] = field(default_factory=list)
    pods_served: int = 0
    hpa_requests: int = 0
    hpa_errors: int = 0
    hpa_skipped: int = 0
    hpa_items_median: float = 0.0
    hpa_p50_ms: float | None = None
    hpa_p99_ms: float | None = None
    hpa_max_ms: float | None = None
    hpa_in_tick_requests: int = 0
    hpa_in_tick_p99_ms: float | None = None
    hpa_in_tick_max_ms: float | None = None
    hpa_p99_by_tick_ms: list[float | None] = field(default_factory=list)
    """Per loaded tick: p99 of the HPA lists sent while it ran."""
    hpa_max_by_tick_ms: list[float | None] = field(default_factory=list)
    hpa_slow: list[tuple[float, float]] = field(default_factory=list)
    """HPA requests slower than 100 ms: (scheduled send, s from the window start; ms)."""
    tick_spans: list[tuple[float, float]] = field(default_factory=list)
    """The loaded window's ticks: (start, end), s from the window start."""
    vpa_at: list[float] = field(default_factory=list)
    """When each VPA list was sent, s from the window start."""
    vpa_client_pid: int = 0
    """The VPA-like client's process (stopped by the harness)."""
    harness_lag_max_ms: float | None = None
    """This harness's own event-loop lag over the loaded window, at most (HPA latency is
    measured from each request's scheduled send time: a stall here would count as
    fastmetrics' latency; this shows how much of it could be the harness's)."""
    vpa_requests: int = 0
    vpa_ms: list[float] = field(default_factory=list)
    vpa_mb: float = 0.0
    age_median_s: float | None = None
    age_max_s: float | None = None
    sim_cpu_s_per_tick: float = 0.0
    loadavg_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loadavg_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    log_warnings: int = 0
    log_errors: int = 0
    log_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    error: str | None = None

    def check(self) -> list[tuple[str, str, bool]]:
        """(target, measured, met) at the issue's targets (meaningful at 5,000 x 30)."""
        out = [
            (f"CPU < {TARGET_MCPU_PER_NODE} mCPU/node", f"{self.mcpu_per_node:.4f}",
             self.mcpu_per_node < TARGET_MCPU_PER_NODE),
            (f"RSS < {TARGET_RSS_MIB_PER_NODE} MiB/node", f"{self.rss_mib_per_node:.3f}",
             self.rss_mib_per_node < TARGET_RSS_MIB_PER_NODE),
            (f"tick after jitter < {TARGET_TICK_AFTER_JITTER_S:g} s",
             f"{self.tick_after_jitter_max_s:.2f}",
             self.tick_after_jitter_max_s < TARGET_TICK_AFTER_JITTER_S),
        ]
        p99 = self.hpa_in_tick_p99_ms
        out.append((f"HPA p99 during ticks < {TARGET_HPA_P99_MS:g} ms",
                    "n/a" if p99 is None else f"{p99:.2f}",
                    p99 is not None and p99 < TARGET_HPA_P99_MS))
        return out


# ============================================================================ processes


def _env() -> dict[str, str]:
    """The children import the same fastmetrics as this process (a source tree, an editable
    or a regular install)."""
    import fastmetrics

    env = dict(os.environ)
    where = str(Path(fastmetrics.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH", "")) if p)
    return env


def implementation() -> str:
    from fastmetrics.decode import Decoder, DecoderC

    return "compiled" if DecoderC is not None and Decoder is DecoderC else "pure Python"


def namespaces_for(nodes: int, pods_per_node: int) -> list[str]:
    n = max(5, nodes * pods_per_node // PODS_PER_NAMESPACE)
    return [f"ns-{i:04d}" for i in range(n)]


def hpa_targets(nodes: int, pods_per_node: int, namespaces: list[str]
                ) -> list[tuple[str, str, int]]:
    """Every (namespace, app) pair that has pods in the simulated cluster, with its pod count:
    the sim model puts pod j of node i in namespace ``(i * pods_per_node + j) % N`` with
    ``app = APPS[j % 7]`` (``fastmetrics.sim.model.Cluster._build``)."""
    counts: dict[tuple[int, int], int] = {}
    n_ns = len(namespaces)
    for i in range(nodes):
        base = i * pods_per_node
        for j in range(pods_per_node):
            key = ((base + j) % n_ns, j % len(APPS))
            counts[key] = counts.get(key, 0) + 1
    return [(namespaces[k], APPS[a], c) for (k, a), c in sorted(counts.items())]


def start_sim(args: argparse.Namespace, workdir: Path, namespaces: list[str]
              ) -> tuple[subprocess.Popen[bytes], Path]:
    shape = workdir / "shape.json"  # JSON is YAML
    shape.write_text(json.dumps({
        "nodes": args.nodes, "pods_per_node": args.pods_per_node,
        "containers_per_pod": args.containers_per_pod, "namespaces": namespaces,
    }))
    ready = workdir / "sim-ready.json"
    cmd = [sys.executable, "-m", "fastmetrics", "sim", "--shape", str(shape),
           "--workdir", str(workdir / "sim"), "--ready-file", str(ready),
           "--stats-interval", str(args.stats_interval)]
    with (workdir / "sim.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_env())
    return proc, ready


def fastmetrics_command(info: dict[str, Any], workdir: Path, port: int,
                        resolution_s: float) -> list[str]:
    """metrics-server's stock manifest flags (plus JSON logs for this harness to read)."""
    return [
        sys.executable, "-m", "fastmetrics",
        f"--kubeconfig={info['metrics_server_kubeconfig']}",
        f"--cert-dir={workdir / 'fastmetrics-certs'}",
        f"--secure-port={port}", "--bind-address=127.0.0.1",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port", f"--metric-resolution={resolution_s:g}s",
        "--logging-format=json", "--v=2",
    ]


# ============================================================================ the run


class LogTail:
    """Reads fastmetrics' JSON log as it grows: ticks, warnings, errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.buf = b""
        self.ticks: list[Tick] = []
        self.warnings = 0
        self.errors = 0
        self.samples: list[str] = []
        self.other_samples: list[str] = []
        """Distinct lines that are not JSON log records (tracebacks, stray prints)."""

    def poll(self) -> list[Tick]:
        new: list[Tick] = []
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return new
        self.pos += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            try:
                rec = json.loads(raw)
            except ValueError:
                # not a JSON log record (a traceback, uvloop's own print): an error
                if raw.strip():
                    self.errors += 1
                    line = raw.decode(errors="replace")[:300]
                    if len(self.other_samples) < 8 and line not in self.other_samples:
                        self.other_samples.append(line)
                continue
            if not isinstance(rec, dict):
                continue
            msg = rec.get("msg", "")
            if msg == "Scrape finished":
                t = Tick(float(rec["ts"]) / 1000, float(rec.get("duration_s", 0)),
                         int(rec.get("nodes", 0)), int(rec.get("pods", 0)),
                         int(rec.get("failed", 0)))
                self.ticks.append(t)
                new.append(t)
            elif msg == "Tick details" and self.ticks:
                self.ticks[-1].max_jitter_s = float(rec.get("max_jitter_ms", 0)) / 1000
                self.ticks[-1].timeouts = int(rec.get("timeouts", 0))
            elif "err" in rec and rec.get("v") is None:
                self.errors += 1
                self._sample(raw.decode(errors="replace"))
            elif msg.startswith("Failed") or "timeout" in msg.lower():
                self.warnings += 1
                self._sample(raw.decode(errors="replace"))
        return new

    def _sample(self, line: str) -> None:
        if len(self.samples) < 5:
            self.samples.append(line[:300])


async def _wait_file(path: Path, proc: subprocess.Popen[bytes], deadline: float,
                     what: str) -> dict[str, Any]:
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready in time")
        await asyncio.sleep(0.1)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _client_ssl(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # fastmetrics' self-signed serving cert
    ctx.load_cert_chain(cert, key)
    return ctx


def _front_proxy_pair(sim_workdir: Path) -> tuple[Path, Path]:
    certs = sorted((sim_workdir / "pki").glob("front-proxy-client-*.crt"))
    if not certs:
        raise RuntimeError(f"no front-proxy client certificate under {sim_workdir / 'pki'}")
    return certs[0], certs[0].with_suffix(".key")


def parse_tick_histogram(text: str | bytes) -> tuple[float, float]:
    """(sum, count) of fastmetrics' tick-duration histogram in its ``/metrics`` text. Found
    with ``find``, not line by line: at 5,000 nodes the text is 6.6 MB, and splitting it into
    lines stalled this process's loop (and so the HPA timings) for ~60-80 ms per sample."""
    data = text.encode() if isinstance(text, str) else text

    def value(name: bytes) -> float:
        key = name + b" "  # the _sum and _count lines carry no labels
        if data.startswith(key):
            at = 0
        else:
            at = data.find(b"\n" + key)
            if at < 0:
                return 0.0
            at += 1
        end = data.find(b"\n", at)
        return float(data[at + len(key):end if end >= 0 else len(data)])

    return (value(b"metrics_server_manager_tick_duration_seconds_sum"),
            value(b"metrics_server_manager_tick_duration_seconds_count"))


def parse_rfc3339(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC).timestamp()


class Load:
    """The HPA-like and VPA-like load and the data-age probe, against fastmetrics over TLS."""

    HEADERS = {"X-Remote-User": "bench-scale", "X-Remote-Group": "system:masters"}
    MAX_IN_FLIGHT = 512

    def __init__(self, session: Any, base: str, targets: list[tuple[str, str, int]],
                 args: argparse.Namespace, rng: random.Random,
                 client_cert: tuple[Path, Path]) -> None:
        self.s = session
        self.client_cert = client_cert
        self.base = base
        self.targets = targets
        self.args = args
        self.rng = rng
        self.accept = PROTOBUF if args.accept == "protobuf" else JSON_TYPE
        # (scheduled wall time, latency s, ok, bytes)
        self.hpa: list[tuple[float, float, bool, int]] = []
        self.skipped = 0
        self.vpa: list[tuple[float, float, int]] = []
        self.ages: list[float] = []
        self.items: list[int] = []
        self.in_flight = 0
        self.pending: dict[int, float] = {}
        """In-flight HPA requests: their scheduled send time (monotonic)."""
        self.errors: list[str] = []
        self.vpa_pid = 0
        self.lags: list[tuple[float, float]] = []
        """(wall time the harness's loop should have woken, s late) for lags over 2 ms."""

    def oldest_pending_s(self) -> float:
        return time.monotonic() - min(self.pending.values(), default=time.monotonic())

    def _hpa_path(self) -> str:
        ns, app, _ = self.rng.choice(self.targets)
        return f"{API}/namespaces/{ns}/pods?labelSelector=app%3D{app}"

    async def _one_hpa(self, sched_wall: float, sched_mono: float, path: str) -> None:
        self.in_flight += 1
        self.pending[id(path)] = sched_mono
        try:
            async with self.s.get(self.base + path, headers={**self.HEADERS,
                                                             "Accept": self.accept}) as r:
                body = await r.read()
                ok = r.status == 200
                if not ok and len(self.errors) < 5:
                    self.errors.append(f"HPA {r.status}: {body[:200]!r}")
        except Exception as e:  # a failed request is a data point, not the end of the run
            ok, body = False, b""
            if len(self.errors) < 5:
                self.errors.append(f"HPA {type(e).__name__}: {e}")
        finally:
            self.in_flight -= 1
            self.pending.pop(id(path), None)
        self.hpa.append((sched_wall, time.monotonic() - sched_mono, ok, len(body)))

    async def hpa_loop(self, stop: asyncio.Event) -> None:
        rate = self.args.hpa_rate
        if rate <= 0:
            return
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        w0 = time.time()
        i = 0
        while not stop.is_set():
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            if self.in_flight >= self.MAX_IN_FLIGHT:
                self.skipped += 1
            else:
                task = asyncio.ensure_future(self._one_hpa(w0 + i / rate, due, self._hpa_path()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=30)

    async def vpa_loop(self, stop: asyncio.Event) -> None:
        """The VPA-like client, in a process of its own (``--vpa-client``): reading a 33 MB
        body here stalled this process's loop for ~180 ms (measured with ``lag_loop``), which
        the open-loop HPA latency then counted against fastmetrics. Its lines are read here;
        it is stopped by its pid when the window ends."""
        interval = self.args.vpa_interval
        if interval <= 0:
            return
        cert, key = self.client_cert
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.scale", "--vpa-client", self.base,
            "--vpa-cert", str(cert), "--vpa-key", str(key), "--vpa-interval", f"{interval:g}",
            "--accept", self.args.accept, "--budget-s", f"{self.args.budget_s:g}",
            stdout=asyncio.subprocess.PIPE, env=_env(), cwd=str(ROOT))
        self.vpa_pid = proc.pid
        reading = asyncio.ensure_future(self._read_vpa(proc))
        try:
            await stop.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    await proc.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reading, 5)

    async def _read_vpa(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            d = json.loads(line)
            if d.get("status") == 200:
                self.vpa.append((d["wall"], d["s"], d["bytes"]))
            elif len(self.errors) < 5:
                self.errors.append(f"VPA {d.get('status')}: {d.get('error', '')}")

    async def lag_loop(self, stop: asyncio.Event) -> None:
        """This process's own event-loop lag: how late a 5 ms sleep wakes (lags over 2 ms are
        kept). The HPA latency counts from each request's scheduled send time, so a stall of
        this loop (reading a 33 MB VPA body, say) would be counted against fastmetrics."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            due_wall, due = time.time() + 0.005, loop.time() + 0.005
            await asyncio.sleep(0.005)
            late = loop.time() - due
            if late > 0.002:
                self.lags.append((due_wall, late))

    async def age_loop(self, stop: asyncio.Event) -> None:
        """Once a second: a JSON list; age of each item's timestamp at receipt."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                break
            try:
                async with self.s.get(self.base + self._hpa_path(),
                                      headers={**self.HEADERS, "Accept": JSON_TYPE}) as r:
                    if r.status != 200:
                        continue
                    doc = json.loads(await r.read())
                now = time.time()
                items = doc.get("items", [])
                self.items.append(len(items))
                for it in items:
                    if it.get("timestamp"):
                        self.ages.append(now - parse_rfc3339(it["timestamp"]))
            except Exception as e:
                if len(self.errors) < 5:
                    self.errors.append(f"age probe {type(e).__name__}: {e}")


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def run_one(args: argparse.Namespace, workdir: Path) -> Result:
    import aiohttp

    budget_end = time.monotonic() + args.budget_s
    started = time.monotonic()
    namespaces = namespaces_for(args.nodes, args.pods_per_node)
    impl = implementation()
    two_cpus = len(os.sched_getaffinity(0)) >= 2 and not args.no_pin
    res = Result(
        nodes=args.nodes, pods_per_node=args.pods_per_node,
        containers_per_pod=args.containers_per_pod, resolution_s=args.resolution,
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), machine=machine(),
        implementation=impl, pinned=two_cpus, namespaces=len(namespaces),
        hpa_rate=args.hpa_rate, vpa_interval_s=args.vpa_interval, accept=args.accept,
        loadavg_start=loadavg(),
    )
    cpus = sorted(os.sched_getaffinity(0))
    if two_cpus:
        pin(0, {cpus[1]})  # this process (and the load) with the simulator; undone at the end
    sim, ready_file = start_sim(args, workdir, namespaces)
    res.sim_pid = sim.pid
    fm: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        if two_cpus:
            pin(sim.pid, {cpus[1]})
        _progress(f"simulator starting: {args.nodes} nodes x {args.pods_per_node} pods x "
                  f"{args.containers_per_pod} containers, {len(namespaces)} namespaces "
                  f"(pid {sim.pid})")
        t0 = time.monotonic()
        info = await _wait_file(ready_file, sim, budget_end, "the simulator")
        res.sim_ready_s = time.monotonic() - t0
        _progress(f"simulator ready in {res.sim_ready_s:.1f} s ({info['pods']} pods)")
        port = free_port()
        base = f"https://127.0.0.1:{port}"
        cmd = fastmetrics_command(info, workdir, port, args.resolution)
        log_path = workdir / "fastmetrics.log"
        with log_path.open("wb") as log:
            fm = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=_env())
        fm_start = time.monotonic()
        res.fastmetrics_pid = fm.pid
        if two_cpus:
            pin(fm.pid, {cpus[0]})
        _progress(f"fastmetrics started (pid {fm.pid}, {impl}, "
                  f"{'pinned to CPU ' + str(cpus[0]) if two_cpus else 'not pinned'})")
        tail = LogTail(log_path)
        cert, key = _front_proxy_pair(Path(info["metrics_server_kubeconfig"]).parent)
        conn = aiohttp.TCPConnector(ssl=_client_ssl(cert, key), limit=64)
        timeout = aiohttp.ClientTimeout(total=120)
        no_cert = ssl.create_default_context()
        no_cert.check_hostname = False
        no_cert.verify_mode = ssl.CERT_NONE
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=no_cert),
                                      timeout=timeout) as plain:
            # ---- readiness (as the kubelet's probe: no client certificate)
            while True:
                if fm.poll() is not None:
                    raise RuntimeError(f"fastmetrics exited with status {fm.returncode}; see "
                                       f"{log_path}")
                if time.monotonic() > budget_end:
                    raise TimeoutError("fastmetrics not ready within the budget")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with plain.get(base + "/readyz",
                                           timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            break
                tail.poll()
                await asyncio.sleep(0.2)
            res.ready_s = time.monotonic() - fm_start
            tail.poll()
            _progress(f"fastmetrics ready after {res.ready_s:.1f} s "
                      f"({len(tail.ticks)} ticks so far)")

            targets = hpa_targets(args.nodes, args.pods_per_node, namespaces)
            load = Load(session, base, targets, args, random.Random(args.seed), (cert, key))
            stop = asyncio.Event()
            loops: list[asyncio.Future[None]] = []

            async def next_tick() -> Tick:
                limit = time.monotonic() + 3 * args.resolution + 120
                while True:
                    if time.monotonic() > limit:
                        raise TimeoutError(
                            f"no 'Scrape finished' line in {log_path} for "
                            f"{3 * args.resolution + 120:.0f} s")
                    if fm is not None and fm.poll() is not None:
                        raise RuntimeError(f"fastmetrics exited with status {fm.returncode}")
                    if time.monotonic() > budget_end:
                        raise TimeoutError("budget exhausted while waiting for a tick")
                    new = tail.poll()
                    if new:
                        return new[-1]
                    await asyncio.sleep(0.1)

            async def sample_metrics() -> tuple[float, float]:
                # with the front-proxy identity, else as the probe does
                for s in (session, plain):
                    async with s.get(base + "/metrics", headers=Load.HEADERS) as r:
                        if r.status == 200:
                            return parse_tick_histogram(await r.read())
                raise RuntimeError(f"GET /metrics: {r.status}")

            samples: list[tuple[float, float, float, float]] = []

            async def sample_cpu() -> None:
                """(wall time, fastmetrics CPU s, simulator CPU s) every 0.25 s, to tell
                which process a slow tick waited for."""
                assert fm is not None
                while fm.poll() is None and sim.poll() is None:
                    samples.append((time.time(), proc_cpu_s(fm.pid), proc_cpu_s(sim.pid),
                                    proc_run_delay_s(fm.pid)))
                    await asyncio.sleep(0.25)

            sampler = asyncio.ensure_future(sample_cpu())

            async def dump_stalls() -> None:
                """When an HPA request has waited over a second: what fastmetrics' threads
                are doing (``py-spy dump``), a few times per run."""
                assert fm is not None and args.dump_stalls is not None
                spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                dumps = 0
                with args.dump_stalls.open("w") as out:
                    while dumps < 5 and not stop.is_set() and fm.poll() is None:
                        await asyncio.sleep(0.2)
                        waited = load.oldest_pending_s()
                        if waited < 1.0:
                            continue
                        proc = await asyncio.create_subprocess_exec(
                            spy_bin, "dump", "--pid", str(fm.pid),
                            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                        text, _ = await asyncio.wait_for(proc.communicate(), 30)
                        out.write(f"=== {time.strftime('%H:%M:%S')} oldest HPA request "
                                  f"waiting {waited:.1f} s; ticks so far {len(tail.ticks)}\n")
                        out.write(text.decode(errors="replace") + "\n")
                        out.flush()
                        dumps += 1
                        await asyncio.sleep(3)

            if args.dump_stalls is not None:
                loops.append(asyncio.ensure_future(dump_stalls()))

            def busy(t: Tick) -> tuple[float, float, float]:
                """Share of one CPU fastmetrics and the simulator used during tick ``t``, and
                the share of it fastmetrics' loop spent waiting for its CPU."""
                inside = [x for x in samples if t.start_s <= x[0] <= t.end_s]
                if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
                    return 0.0, 0.0, 0.0
                span = inside[-1][0] - inside[0][0]
                return ((inside[-1][1] - inside[0][1]) / span,
                        (inside[-1][2] - inside[0][2]) / span,
                        (inside[-1][3] - inside[0][3]) / span)

            async def window_of(ticks: int, label: str, loaded: bool) -> Window:
                """``ticks`` whole ticks, from right after one finished (readiness follows
                the second tick at once, so a window may start at readiness)."""
                assert fm is not None
                w = Window(c0=proc_cpu_s(fm.pid), s0=proc_cpu_s(sim.pid),
                           h0=await sample_metrics(), start=time.time())
                mark = len(load.hpa)
                while len(w.ticks) < ticks:
                    t = await next_tick()
                    w.ticks.append(t)
                    rss, _ = proc_mem_mib(fm.pid)
                    w.rss_peak = max(w.rss_peak, rss)
                    cpu = proc_cpu_s(fm.pid) - w.c0
                    t.fm_busy, t.sim_busy, t.fm_wait = busy(t)
                    line = (f"{label} tick {len(w.ticks)}/{ticks}: {t.duration_s:.2f} s "
                            f"(during it: fastmetrics ran {t.fm_busy:.0%} and waited for its "
                            f"CPU {t.fm_wait:.0%}, sim ran {t.sim_busy:.0%}), {t.pods} pods, "
                            f"{t.failed} failed | "
                            f"fastmetrics CPU {cpu / len(w.ticks):.2f} s/tick, RSS {rss:.0f} MiB")
                    if loaded:
                        recent = sorted(x[1] for x in load.hpa[mark:])
                        p99 = percentile(recent, 0.99)
                        line += (f" | HPA {len(recent)} req, p99 "
                                 f"{'-' if p99 is None else f'{p99 * 1e3:.1f}'} ms")
                    _progress(f"{line} | load {loadavg()[0]:.2f}")
                w.c1, w.s1 = proc_cpu_s(fm.pid), proc_cpu_s(sim.pid)
                w.h1 = await sample_metrics()
                w.end = time.time()
                return w

            try:
                base_ticks = len(tail.ticks)
                while len(tail.ticks) < base_ticks + args.warmup_ticks:
                    t = await next_tick()
                    _progress(f"warm-up tick: {t.duration_s:.2f} s, {t.pods} pods, "
                              f"{t.failed} failed")
                idle = None
                if args.idle_ticks:
                    # scraping alone: what the collection costs without any API load
                    idle = await window_of(args.idle_ticks, "collect-only", loaded=False)
                # then the same with the HPA-like and VPA-like load applied
                loops += [asyncio.ensure_future(f(stop)) for f in
                          (load.hpa_loop, load.vpa_loop, load.age_loop, load.lag_loop)]
                if args.py_spy:
                    spy = subprocess.Popen(
                        [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                         "record", "--pid", str(fm.pid), "--nonblocking",
                         "--rate", "50", "--duration",
                         str(int(args.ticks * args.resolution)),
                         "--format", args.py_spy_format, "-o", str(args.py_spy)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                loaded = await window_of(args.ticks, "loaded", loaded=True)
            finally:
                stop.set()
                sampler.cancel()
                await asyncio.gather(*loops, sampler, return_exceptions=True)
            c0, c1, s0, s1, h0, h1 = (loaded.c0, loaded.c1, loaded.s0, loaded.s1, loaded.h0,
                                      loaded.h1)
            window, rss_peak = loaded.ticks, loaded.rss_peak
            w_start, w_end = loaded.start, loaded.end
            if idle is not None:
                res.idle_cpu_s_per_tick = (idle.c1 - idle.c0) / len(idle.ticks)
                res.idle_mcpu_per_node = (res.idle_cpu_s_per_tick / args.resolution
                                          / args.nodes * 1e3)
                res.idle_tick_durations_s = [round(t.duration_s, 3) for t in idle.ticks]
                res.idle_tick_after_jitter_s = [
                    round(max(0.0, t.duration_s - (t.max_jitter_s if t.max_jitter_s is not None
                                                   else min(0.008 * args.nodes, 4.0))), 3)
                    for t in idle.ticks]
                rss_peak = max(rss_peak, idle.rss_peak)
                res.idle_busy_during_ticks = [
                    (round(t.fm_busy, 2), round(t.sim_busy, 2), round(t.fm_wait, 2))
                    for t in idle.ticks]
            rss, hwm = proc_mem_mib(fm.pid)
            tail.poll()
        # ---- figures
        n = args.nodes
        res.ticks = len(window)
        res.cpu_s_per_tick = (c1 - c0) / res.ticks
        res.mcpu_per_node = res.cpu_s_per_tick / args.resolution / n * 1e3
        res.sim_cpu_s_per_tick = (s1 - s0) / res.ticks
        res.rss_mib, res.hwm_mib = rss, hwm
        res.rss_mib_per_node = max(rss, rss_peak) / n
        dc = h1[1] - h0[1]
        res.tick_mean_s = (h1[0] - h0[0]) / dc if dc else 0.0
        res.tick_durations_s = [round(t.duration_s, 3) for t in window]
        res.tick_max_s = max(res.tick_durations_s)
        res.jitter_window_s = min(0.008 * n, 4.0)
        # the work the jitter does not hide: tick time minus the longest jitter sleep drawn
        # (from "Tick details"; the jitter window when the line is missing)
        res.tick_after_jitter_s = [
            round(max(0.0, t.duration_s - (t.max_jitter_s if t.max_jitter_s is not None
                                           else res.jitter_window_s)), 3) for t in window]
        res.tick_after_jitter_max_s = max(res.tick_after_jitter_s)
        res.timeouts_per_tick = [t.timeouts for t in window]
        res.busy_during_ticks = [(round(t.fm_busy, 2), round(t.sim_busy, 2), round(t.fm_wait, 2))
                                 for t in window]
        res.failed_per_tick = [t.failed for t in window]
        res.pods_served = window[-1].pods
        in_window = [h for h in load.hpa if w_start <= h[0] <= w_end]
        if args.requests_out is not None:  # every HPA request: when it was due, how long
            with args.requests_out.open("w") as out:
                out.write("kind\tscheduled_wall_s\tlatency_ms\tok\tbytes\n")
                out.writelines(f"hpa\t{h[0]:.4f}\t{h[1] * 1e3:.2f}\t{int(h[2])}\t{h[3]}\n"
                               for h in load.hpa)
                out.writelines(f"vpa\t{v[0]:.4f}\t{v[1] * 1e3:.2f}\t1\t{v[2]}\n"
                               for v in load.vpa)
                out.writelines(f"tick\t{t.start_s:.4f}\t{(t.end_s - t.start_s) * 1e3:.2f}\t1\t"
                               f"{t.pods}\n" for t in tail.ticks)
                out.writelines(f"harness_lag\t{w:.4f}\t{late * 1e3:.2f}\t1\t0\n"
                               for w, late in load.lags)
        res.hpa_requests = len(in_window)
        res.hpa_errors = sum(1 for h in in_window if not h[2])
        res.hpa_skipped = load.skipped
        lat = sorted(h[1] * 1e3 for h in in_window)
        res.hpa_p50_ms = percentile(lat, 0.5)
        res.hpa_p99_ms = percentile(lat, 0.99)
        res.hpa_max_ms = lat[-1] if lat else None
        res.vpa_client_pid = load.vpa_pid
        res.harness_lag_max_ms = round(max((late for w, late in load.lags
                                            if w_start <= w <= w_end), default=0.0) * 1e3, 2)
        # requests scheduled while a tick was running (tick intervals from the log)
        spans = [(t.start_s, t.end_s) for t in tail.ticks]
        during = sorted(h[1] * 1e3 for h in in_window
                        if any(a <= h[0] <= b for a, b in spans))
        res.hpa_in_tick_requests = len(during)
        for t in window:  # per tick, to set a tick's latency beside its CPU contention
            lat_t = sorted(h[1] * 1e3 for h in in_window if t.start_s <= h[0] <= t.end_s)
            p = percentile(lat_t, 0.99)
            res.hpa_p99_by_tick_ms.append(None if p is None else round(p, 2))
            res.hpa_max_by_tick_ms.append(round(lat_t[-1], 2) if lat_t else None)
        # when the slow ones were sent, against the ticks (seconds from the window start)
        res.hpa_slow = [(round(h[0] - w_start, 2), round(h[1] * 1e3, 1)) for h in in_window
                        if h[1] > 0.1][:3000]
        res.tick_spans = [(round(t.start_s - w_start, 2), round(t.end_s - w_start, 2))
                          for t in window]
        res.hpa_in_tick_p99_ms = percentile(during, 0.99)
        res.hpa_in_tick_max_ms = during[-1] if during else None
        res.vpa_requests = len(load.vpa)
        res.vpa_at = [round(v[0] - w_start, 2) for v in load.vpa]
        res.vpa_ms = [round(v[1] * 1e3, 1) for v in load.vpa]
        res.vpa_mb = max((v[2] for v in load.vpa), default=0) / 1e6
        ages = sorted(load.ages)
        res.age_median_s = percentile(ages, 0.5)
        res.age_max_s = ages[-1] if ages else None
        res.hpa_items_median = percentile(sorted(load.items), 0.5) or 0.0
        res.loadavg_end = loadavg()
        res.log_warnings, res.log_errors = tail.warnings, tail.errors
        res.log_samples = tail.other_samples + tail.samples + load.errors
        return res
    finally:
        if two_cpus:
            pin(0, set(cpus))
        if spy is not None:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(spy, 5)
        if fm is not None:
            stop_process(fm)
        stop_process(sim)
        res.wall_s = time.monotonic() - started


# ============================================================================ output


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def table(results: Sequence[Result]) -> str:
    """The markdown table of a run or a sweep."""
    head = ("| nodes x pods | pods served | ready s | CPU s/tick: collect only / with API load "
            "| mCPU per node: collect only / with load | RSS MiB (peak) | MiB per node | "
            "tick s: mean / max | max tick after jitter s: collect only / with load | "
            "HPA lists/s: p50 / p99 / p99 during ticks / max ms | VPA all-pod list ms (MB) | "
            "data age median / max s | failed nodes/tick | sim CPU s/tick | load avg |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.nodes:,} x {r.pods_per_node} | failed: {r.error} |")
            continue
        vpa = ", ".join(f"{v:.0f}" for v in r.vpa_ms) or "-"
        idle_after = max(r.idle_tick_after_jitter_s, default=None)
        lines.append(
            f"| {r.nodes:,} x {r.pods_per_node} | {r.pods_served:,} | {_f(r.ready_s, '.1f')} | "
            f"{_f(r.idle_cpu_s_per_tick)} / {r.cpu_s_per_tick:.2f} | "
            f"{_f(r.idle_mcpu_per_node, '.4f')} / {r.mcpu_per_node:.4f} | {r.rss_mib:.0f} "
            f"({r.hwm_mib:.0f}) | {r.rss_mib_per_node:.3f} | {r.tick_mean_s:.2f} / "
            f"{r.tick_max_s:.2f} | {_f(idle_after)} / {r.tick_after_jitter_max_s:.2f} | "
            f"{r.hpa_rate:g}: {_f(r.hpa_p50_ms)} / {_f(r.hpa_p99_ms)} / "
            f"{_f(r.hpa_in_tick_p99_ms)} / {_f(r.hpa_max_ms, '.1f')} | {vpa} ({r.vpa_mb:.1f}) | "
            f"{_f(r.age_median_s, '.1f')} / {_f(r.age_max_s, '.1f')} | "
            f"{max(r.failed_per_tick, default=0)} | {r.sim_cpu_s_per_tick:.2f} | "
            f"{r.loadavg_start[0]:.1f}-{r.loadavg_end[0]:.1f} |")
    return "\n".join(lines)


def report(results: Sequence[Result]) -> str:
    out = [table(results), ""]
    for r in results:
        if r.error:
            continue
        if r.idle_tick_durations_s:
            out.append(f"{r.nodes:,} x {r.pods_per_node}, collect only: ticks "
                       f"{r.idle_tick_durations_s} s, after the longest jitter sleep "
                       f"{r.idle_tick_after_jitter_s} s; while ticking (fastmetrics ran, sim ran, "
                       f"fastmetrics waited for its CPU) {r.idle_busy_during_ticks}")
        out.append(f"{r.nodes:,} x {r.pods_per_node}, with load: ticks {r.tick_durations_s} s, "
                   "after "
                   f"the longest jitter sleep {r.tick_after_jitter_s} s (jitter window "
                   f"{r.jitter_window_s:g} s); while ticking (fastmetrics ran, sim ran, "
                   f"fastmetrics waited for its CPU) {r.busy_during_ticks}; HPA p99 / max "
                   f"per tick {list(zip(r.hpa_p99_by_tick_ms, r.hpa_max_by_tick_ms, strict=True))}"
                   f" ms; timeouts per tick "
                   f"{r.timeouts_per_tick}; "
                   f"HPA {r.hpa_requests} requests "
                   f"({r.hpa_in_tick_requests} during ticks, {r.hpa_errors} failed, "
                   f"{r.hpa_skipped} not sent), median {r.hpa_items_median:g} pods per list; "
                   f"this harness's loop lag at most {_f(r.harness_lag_max_ms, '.1f')} ms; "
                   f"log: {r.log_warnings} warnings, {r.log_errors} errors")
        for s in r.log_samples[:3]:
            out.append(f"    {s}")
        if (r.nodes, r.pods_per_node) == (5000, 30):
            for target, measured, met in r.check():
                out.append(f"    target {target}: {measured} -> {'met' if met else 'MISSED'}")
    return "\n".join(out)


def _run_point(args: argparse.Namespace) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="fm-scale-"))
    try:
        try:
            import uvloop
            return uvloop.run(run_one(args, workdir))
        except ImportError:  # pragma: no cover
            return asyncio.run(run_one(args, workdir))
    finally:
        if args.keep_workdir:
            print(f"workdir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def vpa_client(args: argparse.Namespace) -> int:
    """``--vpa-client BASE``: every ``--vpa-interval`` s (the first after 5 s) list every pod
    and print one JSON line (``wall``, ``s``, ``bytes``, ``status``); until SIGTERM or
    ``--budget-s``. Niced: the load generator's CPU is the harness's too."""
    with contextlib.suppress(OSError):
        os.nice(5)
    import aiohttp

    accept = PROTOBUF if args.accept == "protobuf" else JSON_TYPE
    headers = {**Load.HEADERS, "Accept": accept}

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.call_later(args.budget_s, stop.set)
        conn = aiohttp.TCPConnector(ssl=_client_ssl(args.vpa_cert, args.vpa_key), limit=1)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
            delay = min(5.0, args.vpa_interval)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
                w, t0 = time.time(), time.monotonic()
                out: dict[str, Any] = {"wall": w}
                try:
                    async with s.get(args.vpa_client + API + "/pods", headers=headers) as r:
                        body = await r.read()
                        out.update(s=time.monotonic() - t0, bytes=len(body), status=r.status)
                        if r.status != 200:
                            out["error"] = body[:200].decode(errors="replace")
                except Exception as e:  # a failed request is a data point
                    out.update(status=None, error=f"{type(e).__name__}: {e}")
                print(json.dumps(out), flush=True)
                delay = max(0.0, args.vpa_interval - (time.monotonic() - t0))

    asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--containers-per-pod", type=int, default=2)
    p.add_argument("--ticks", type=int, default=4, help="ticks in the measured window")
    p.add_argument("--idle-ticks", type=int, default=2,
                   help="ticks measured before the API load starts (collection alone; "
                        "default 2, 0: none)")
    p.add_argument("--warmup-ticks", type=int, default=1,
                   help="ticks after readiness before the window (default 1; 0: the window "
                        "starts at readiness, right after the second tick)")
    p.add_argument("--resolution", type=float, default=15.0,
                   help="--metric-resolution in seconds (default 15, the stock value)")
    p.add_argument("--stats-interval", type=float, default=10.0,
                   help="simulated kubelets' stats refresh, seconds (default 10)")
    p.add_argument("--hpa-rate", type=float, default=100.0,
                   help="HPA-like lists per second (default 100: 1,500 HPAs at a 15 s sync)")
    p.add_argument("--vpa-interval", type=float, default=60.0,
                   help="seconds between VPA-like all-pod lists (default 60, the VPA "
                        "recommender's interval; 0: none)")
    p.add_argument("--accept", choices=("protobuf", "json"), default="protobuf",
                   help="the load's Accept type (default protobuf, as HPA and VPA use)")
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--budget-s", type=float, default=900.0, help="limit per cluster size")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--sweep", action="store_true",
                   help="run every size of the RESULTS.md sweep (--nodes/--pods-per-node are "
                        "ignored); add --stretch for 5,000 x 110")
    p.add_argument("--stretch", action="store_true", help="with --sweep: also 5,000 x 110")
    p.add_argument("--json", "--out", dest="json", type=Path, default=None,
                   help="write the results (a list) as JSON here; a sweep appends each point "
                        "as it finishes")
    p.add_argument("--py-spy", type=Path, default=None, metavar="FILE",
                   help="profile fastmetrics with py-spy over the window into FILE")
    p.add_argument("--py-spy-format", default="flamegraph",
                   choices=("flamegraph", "raw", "speedscope"))
    p.add_argument("--dump-stalls", type=Path, default=None, metavar="FILE",
                   help="when an HPA request has waited > 1 s, write 'py-spy dump' of "
                        "fastmetrics into FILE (at most 5 times)")
    p.add_argument("--requests-out", type=Path, default=None, metavar="FILE",
                   help="write every HPA and VPA request (scheduled wall time, latency) and "
                        "every tick (start, duration) to FILE as tab-separated values, to "
                        "line stalls up with logs")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--vpa-client", default=None, help=argparse.SUPPRESS)
    p.add_argument("--vpa-cert", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--vpa-key", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.vpa_client:
        return vpa_client(args)
    problems = []
    if args.nodes < 1 or args.pods_per_node < 0 or args.containers_per_pod < 1:
        problems.append("--nodes and --containers-per-pod must be >= 1, --pods-per-node >= 0")
    if args.ticks < 1 or args.warmup_ticks < 0 or args.idle_ticks < 0:
        problems.append("--ticks must be >= 1, --warmup-ticks and --idle-ticks >= 0")
    if args.resolution <= 0 or args.hpa_rate < 0 or args.vpa_interval < 0:
        problems.append("--resolution must be > 0; --hpa-rate and --vpa-interval >= 0")
    if args.pods_per_node == 0:
        problems.append("--pods-per-node 0 leaves nothing to serve")
    if problems:
        p.error("; ".join(problems))

    from fastmetrics.scrape import raise_nofile_limit

    raise_nofile_limit()

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop the processes

    signal.signal(signal.SIGTERM, on_sigterm)
    points = list(SWEEP) + ([STRETCH] if args.stretch else []) if args.sweep else [
        (args.nodes, args.pods_per_node)]
    results: list[Result] = []
    for nodes, ppn in points:
        point = argparse.Namespace(**{**vars(args), "nodes": nodes, "pods_per_node": ppn})
        try:
            r = _run_point(point)
        except (RuntimeError, TimeoutError, OSError) as e:
            _progress(f"{nodes} x {ppn} failed: {type(e).__name__}: {e}")
            r = Result(nodes, ppn, args.containers_per_pod, args.resolution,
                       dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), machine(),
                       "", False, 0, args.hpa_rate, args.vpa_interval, args.accept,
                       error=f"{type(e).__name__}: {e}")
        results.append(r)
        if args.json is not None:
            args.json.write_text(json.dumps([asdict(x) for x in results], indent=1))
        print()
        print(report([r]), flush=True)
    if len(results) > 1:
        print()
        print(report(results))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
