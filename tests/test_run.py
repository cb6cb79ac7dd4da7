"""`fastmetrics [flags]` as a real process against the simulated cluster in another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _start_sim(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    ready = tmp_path / "ready.json"
    sim = subprocess.Popen(
        [sys.executable, "-m", "fastmetrics", "sim", "--nodes", "3", "--pods-per-node", "4",
         "--workdir", str(tmp_path / "sim"), "--ready-file", str(ready),
         "--stats-interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert sim.poll() is None, sim.communicate()
        assert time.monotonic() < deadline, "simulator not ready in time"
        time.sleep(0.1)
    return sim, json.loads(ready.read_text())


def test_collects_from_every_kubelet_with_manifest_flags(tmp_path: Path) -> None:
    sim, info = _start_sim(tmp_path)
    server: subprocess.Popen[str] | None = None
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "fastmetrics",
             f"--kubeconfig={info['metrics_server_kubeconfig']}",
             "--cert-dir=/tmp", "--secure-port=10250",
             "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
             "--kubelet-use-node-status-port", "--metric-resolution=10s",
             "--kubelet-request-timeout=5s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert server.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 45
        while sum('"Scrape finished"' in line for line in lines) < 2:
            assert time.monotonic() < deadline, "".join(lines)
            line = server.stderr.readline()
            assert line, f"server exited: {''.join(lines)}"
            lines.append(line)
        scrapes = [line for line in lines if '"Scrape finished"' in line]
        assert all("nodes=3 pods=12 failed=0" in line for line in scrapes), scrapes
        assert any('"Storage readiness changed" ready=true' in line for line in lines), lines
    finally:
        if server is not None:
            os.kill(server.pid, signal.SIGTERM)
            server.communicate(timeout=30)
        os.kill(sim.pid, signal.SIGTERM)
        sim.communicate(timeout=30)
    assert server.returncode == 0
    assert sim.returncode == 0
