"""The cluster-scale benchmark harness (``python -m bench.scale``) on a tiny cluster, so that it
cannot rot: the simulator, fastmetrics with the stock 15 s resolution and the load run as real
processes, two ticks are measured, and every figure the report is built from is checked for
being present and plausible; both processes are gone afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="the harness reads /proc (Linux)")


def test_scale_harness_tiny_cluster(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    cmd = [sys.executable, "-m", "bench.scale", "--nodes", "5", "--pods-per-node", "3",
           "--ticks", "2", "--warmup-ticks", "0", "--idle-ticks", "1", "--hpa-rate", "20",
           "--vpa-interval", "7", "--budget-s", "200", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # progress while running, a table at the end
    assert "fastmetrics ready after" in proc.stdout
    assert "| 5 x 3 | 15 |" in proc.stdout

    [r] = json.loads(out.read_text())
    assert r["error"] is None
    assert (r["nodes"], r["pods_per_node"], r["resolution_s"]) == (5, 3, 15.0)
    assert r["ticks"] == 2 and len(r["tick_durations_s"]) == 2
    assert r["pods_served"] == 15  # every pod of the cluster has usage
    assert r["failed_per_tick"] == [0, 0]
    # readiness needs two ticks at the stock resolution
    assert 14.0 < r["ready_s"] < 60.0
    assert 0.0 < r["cpu_s_per_tick"] < 15.0
    # collection alone first (one tick), then with the API load
    # (a 5-node tick alone can cost less than /proc's 10 ms clock tick: 0 is a valid reading)
    assert 0.0 <= r["idle_cpu_s_per_tick"] < 15.0 and len(r["idle_tick_durations_s"]) == 1
    assert r["idle_mcpu_per_node"] == pytest.approx(r["idle_cpu_s_per_tick"] / 15 / 5 * 1e3)
    assert "collect-only tick 1/1" in proc.stdout and "loaded tick 2/2" in proc.stdout
    assert r["mcpu_per_node"] == pytest.approx(r["cpu_s_per_tick"] / 15 / 5 * 1e3)
    assert 10.0 < r["rss_mib"] <= r["hwm_mib"] + 1
    assert 0.0 < r["tick_mean_s"] < 10.0
    assert max(r["tick_durations_s"]) == r["tick_max_s"]
    # the HPA-like load ran over TLS with the front-proxy identity and got answers
    assert r["hpa_requests"] >= 20 * 15  # two ticks' worth at 20/s, at least one tick's
    assert r["hpa_errors"] == 0
    assert r["hpa_items_median"] >= 1
    assert 0.0 < r["hpa_p50_ms"] <= r["hpa_p99_ms"] <= r["hpa_max_ms"]
    assert r["vpa_requests"] >= 1 and r["vpa_mb"] > 0
    # served data is at most a resolution plus the kubelet's stats interval and a tick old
    assert 0.0 <= r["age_median_s"] <= r["age_max_s"] < 15 + 10 + 5
    assert r["machine"] and r["date"]
    # every process the harness started was stopped
    # the harness measured its own loop lag (it would count against fastmetrics' latency)
    assert r["harness_lag_max_ms"] is not None and r["harness_lag_max_ms"] >= 0
    # every process the harness started was stopped (the VPA client runs as its own process)
    for pid in (r["sim_pid"], r["fastmetrics_pid"], r["vpa_client_pid"]):
        assert pid > 0
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie_or_other(pid)


def test_tick_histogram_found_in_metrics_text() -> None:
    from bench.scale import parse_tick_histogram

    text = ("# HELP metrics_server_manager_tick_duration_seconds ...\n"
            'metrics_server_manager_tick_duration_seconds_bucket{le="1"} 3\n'
            "metrics_server_manager_tick_duration_seconds_sum 12.5\n"
            "metrics_server_manager_tick_duration_seconds_count 3\n"
            "metrics_server_kubelet_request_total 9\n")
    assert parse_tick_histogram(text) == (12.5, 3.0)
    assert parse_tick_histogram(text.encode()) == (12.5, 3.0)
    first = ("metrics_server_manager_tick_duration_seconds_sum 2\n"
             "metrics_server_manager_tick_duration_seconds_count 1")  # no trailing newline
    assert parse_tick_histogram(first) == (2.0, 1.0)
    assert parse_tick_histogram("") == (0.0, 0.0)


def _is_zombie_or_other(pid: int) -> bool:
    """A pid that still exists belongs to another process now (reused) or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z" or (
        b"fastmetrics" not in cmdline and b"bench.scale" not in cmdline)


def test_scale_rejects_bad_arguments() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.scale", "--nodes", "0", "--ticks", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "--nodes" in proc.stderr and "--ticks" in proc.stderr
