"""The command line: --version, decode, and the simulator commands (demo, sim) as real processes.

The demo test runs every kubectl command the demo prints, ``kubectl top`` included (the demo
starts fastmetrics against the simulator and registers it as the metrics.k8s.io APIService)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fastmetrics


def _fastmetrics(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastmetrics", *args], capture_output=True, text=True,
        timeout=timeout,
    )


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is not on PATH (required under CI)")
        pytest.skip("kubectl is not on PATH")
    return path


def test_version() -> None:
    r = _fastmetrics("--version")
    assert r.returncode == 0
    assert r.stdout.startswith(f"fastmetrics {fastmetrics.__version__} (")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sim", "--nodes", "0"], "must be at least 1"),
        (["sim", "--nodes", "many"], "not a whole number: 'many'"),
        (["demo", "--pods-per-node", "-3"], "must not be negative"),
        (["sim", "--api-port", "70000"], "not a port number"),
        (["sim", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args: list[str], message: str) -> None:
    r = _fastmetrics(*args)
    assert r.returncode == 2
    assert message in r.stderr


def test_bad_shape_file(tmp_path: Path) -> None:
    shape = tmp_path / "shape.yaml"
    shape.write_text("nodes: 2\npods_per_nod: 3\n")
    r = _fastmetrics("sim", "--shape", str(shape))
    assert r.returncode == 2
    assert "unknown keys ['pods_per_nod']" in r.stderr
    shape.write_text("nodes: [\n")
    r = _fastmetrics("sim", "--shape", str(shape))
    assert r.returncode == 2 and "not valid YAML" in r.stderr


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"simulator exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("simulator did not become ready in time")
        time.sleep(0.1)


def test_sim_serves_kubectl_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubectl = _kubectl()
    ready = tmp_path / "ready.json"
    shape = tmp_path / "shape.yaml"
    shape.write_text("nodes: 2\npods_per_node: 3\ncontainers_per_pod: 1\nseed: 7\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastmetrics", "sim", "--shape", str(shape), "--nodes", "3",
         "--workdir", str(tmp_path / "sim"), "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(ready, proc)
        info = json.loads(ready.read_text())
        assert info["nodes"] == 3 and info["pods"] == 9 and info["pid"] == proc.pid
        r = subprocess.run(
            [kubectl, "--kubeconfig", info["admin_kubeconfig"], "--cache-dir",
             str(tmp_path / "cache"), "get", "nodes", "-o", "name"],
            capture_output=True, text=True, timeout=30,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [f"node/sim-node-0000{i}" for i in range(3)]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_demo_prints_working_kubectl_commands_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    kubectl = _kubectl()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastmetrics", "demo", "--nodes", "2", "--pods-per-node", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        # the banner comes once fastmetrics is ready: two scrapes at the stock 15 s resolution
        deadline = time.monotonic() + 120
        while not any("Press Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline, "demo did not print its banner in time"
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"demo exited early: {proc.communicate()}")
            lines.append(line)
        commands = [line.strip() for line in lines if line.strip().startswith("kubectl ")]
        assert any(c.endswith(" get nodes") for c in commands)
        assert any(c.endswith(" top pod -A") for c in commands), lines
        assert any(c.endswith(" top node") for c in commands), lines
        for command in commands:
            args = command.split()[1:]
            r = subprocess.run([kubectl, "--cache-dir", str(tmp_path / "cache"), *args],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, (command, r.stderr)
            if args[-2:] == ["pod", "-A"] and "top" in args:
                # NAMESPACE NAME CPU(cores) MEMORY(bytes): one row per simulated pod (2 x 2)
                rows = [line.split() for line in r.stdout.strip().splitlines()[1:]]
                assert len(rows) == 4, r.stdout
                assert all(row[2].endswith("m") and row[3].endswith("Mi") for row in rows)
    finally:
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "fastmetrics demo: stopped" in out


def test_server_flags_print_every_error_and_exit_2() -> None:
    r = _fastmetrics("--metric-resolution=5s", "--kubelet-insecure-tls",
                     "--kubelet-certificate-authority=/ca.crt")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 3, r.stderr
    assert "--metric-resolution must be at least 10s, got 5s" in r.stderr
    assert "--kubelet-certificate-authority" in r.stderr


def test_server_unknown_flag_exits_2() -> None:
    r = _fastmetrics("--metric-resolution=15s", "--no-such-flag")
    assert r.returncode == 2
    assert "unknown flag: --no-such-flag" in r.stderr


def test_server_help_lists_metrics_server_flags() -> None:
    r = _fastmetrics("--help")
    assert r.returncode == 0
    for flag in ("--metric-resolution", "--kubelet-insecure-tls", "-l, --node-selector",
                 "--secure-port", "--authorization-always-allow-paths"):
        assert flag in r.stdout
