"""The command line: --version, decode, and the simulator commands (demo, sim) as real processes.

The demo test runs every kubectl command the demo prints, ``kubectl top`` included (the demo
starts fastmetrics against the simulator and registers it as the metrics.k8s.io APIService).
The server's start-up errors (one line each, exit 2), its behaviour with an unreachable
apiserver, and its -v levels and JSON logging run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

import fastmetrics

DATA = Path(__file__).parent / "data"
KLOG = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


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


def test_server_help_lists_every_metrics_server_flag() -> None:
    """Every flag of metrics-server v0.9's ``--help`` (tests/data/metrics-server-flags.txt)."""
    flags = [line.strip() for line in (DATA / "metrics-server-flags.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(flags) > 100
    r = _fastmetrics("--help")
    assert r.returncode == 0
    listed = set(re.findall(r"--[a-z0-9-]+", r.stdout))
    assert [f for f in flags if f not in listed] == []


# --------------------------------------------------------------------------------------------
# Start-up errors: one line each naming the flag and the file, exit 2, before any connection
# --------------------------------------------------------------------------------------------


def _pem_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from fastmetrics.sim.certs import CertAuthority

    pair = CertAuthority(tmp_path / name, f"{name}-ca").issue(name, "localhost", server=True,
                                                              dns_names=("localhost",))
    return pair.cert_file, pair.key_file


def test_unreadable_and_bad_files_are_one_line_each(tmp_path: Path) -> None:
    cert_a, _ = _pem_pair(tmp_path, "a")
    _, key_b = _pem_pair(tmp_path, "b")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    # the apiserver address is never dialled: these fail first
    r = _fastmetrics(
        "--kubeconfig=/nonexistent/kubeconfig", f"--tls-cert-file={cert_a}",
        f"--tls-private-key-file={key_b}", f"--client-ca-file={garbage}",
        f"--requestheader-client-ca-file={tmp_path / 'missing.crt'}",
        f"--kubelet-certificate-authority={tmp_path}",
        f"--kubelet-client-certificate={cert_a}", f"--kubelet-client-key={garbage}",
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert lines == [
        f'Error: --tls-private-key-file: the private key in "{key_b}" does not match the '
        f'certificate in "{cert_a}" (--tls-cert-file)',
        f'Error: --kubelet-client-key: "{garbage}" holds no PEM private key fastmetrics can read',
        f'Error: --client-ca-file: "{garbage}" holds no PEM certificate',
        f'Error: --requestheader-client-ca-file: cannot read "{tmp_path / "missing.crt"}": '
        "no such file or directory",
        f'Error: --kubelet-certificate-authority: cannot read "{tmp_path}": is a directory',
        'Error: --kubeconfig: cannot read "/nonexistent/kubeconfig": no such file or directory',
    ], r.stderr


def test_cert_dir_must_be_usable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _fastmetrics("--kubeconfig=/nonexistent", f"--cert-dir={blocker / 'certs'}")
    assert r.returncode == 2
    assert f'Error: --cert-dir: cannot create "{blocker / "certs"}": not a directory (the ' \
           "self-signed serving certificate is written there" in r.stderr
    # with a serving certificate given, --cert-dir is not used
    cert, key = _pem_pair(tmp_path, "serving")
    r = _fastmetrics(f"--cert-dir={blocker / 'certs'}", f"--tls-cert-file={cert}",
                     f"--tls-private-key-file={key}", "--kubeconfig=/nonexistent")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        'Error: --kubeconfig: cannot read "/nonexistent": no such file or directory']


def test_secure_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = _fastmetrics(f"--secure-port={port}", "--bind-address=127.0.0.1",
                         f"--cert-dir={tmp_path}", "--kubeconfig=/nonexistent")
    assert r.returncode == 2
    assert f"Error: --secure-port: cannot listen on 127.0.0.1:{port}: address already in use " \
           "(with hostNetwork the kubelet holds 10250" in r.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {server}\n"
        "    insecure-skip-tls-verify: true\n"
        "users:\n- name: u\n  user:\n    token: t\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n")
    return path


class _Stderr:
    """A process's stderr lines, read by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while not predicate(list(self.lines)):
            assert self.proc.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, "\n".join(self.lines)
            time.sleep(0.05)
        return list(self.lines)

    def stop(self) -> int:
        """SIGTERM by pid; the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self._thread.join(timeout=10)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        return status


def _start(*args: str) -> _Stderr:
    proc = subprocess.Popen([sys.executable, "-m", "fastmetrics", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return _Stderr(proc)


def test_unreachable_apiserver_keeps_retrying_with_a_warning_per_attempt(tmp_path: Path) -> None:
    """As metrics-server's informers: no exit, one warning per failed list naming the resource
    and the address, backing off; nothing listens meanwhile; SIGTERM ends it cleanly."""
    dead = _closed_port()
    port = _closed_port()
    proc = _start(f"--kubeconfig={_kubeconfig(tmp_path / 'kc', f'https://127.0.0.1:{dead}')}",
                  f"--cert-dir={tmp_path / 'certs'}", f"--secure-port={port}",
                  "--bind-address=127.0.0.1", "--authentication-skip-lookup")
    try:
        def failures(lines: list[str]) -> list[str]:
            return [line for line in lines if '"List or watch failed, backing off"' in line]

        lines = proc.wait_for(lambda ls: len(failures(ls)) >= 4, timeout=30)
        for line in failures(lines):
            assert line.startswith("W"), line
            assert 'op="list"' in line and f"127.0.0.1:{dead}" in line, line
            assert re.search(r"delay_s=[0-9.]+$", line), line
        assert {re.search(r'resource="(\w+)"', line)[1]  # type: ignore[index]
                for line in failures(lines)} == {"nodes", "pods"}
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        status = proc.stop()
    assert status == 0, "\n".join(proc.lines)


# --------------------------------------------------------------------------------------------
# -v levels and --logging-format against the simulated cluster
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_info(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("sim")
    ready = tmp / "ready.json"
    sim = subprocess.Popen(
        [sys.executable, "-m", "fastmetrics", "sim", "--nodes", "3", "--pods-per-node", "2",
         "--workdir", str(tmp / "work"), "--ready-file", str(ready), "--stats-interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(ready, sim)
        yield json.loads(ready.read_text())
    finally:
        os.kill(sim.pid, signal.SIGTERM)
        sim.communicate(timeout=30)


def _collect(sim_info: dict[str, Any], tmp_path: Path, *extra: str) -> _Stderr:
    return _start(f"--kubeconfig={sim_info['metrics_server_kubeconfig']}",
                  f"--cert-dir={tmp_path / 'certs'}", f"--secure-port={_closed_port()}",
                  "--bind-address=127.0.0.1", "--kubelet-use-node-status-port",
                  "--kubelet-preferred-address-types=InternalIP", "--metric-resolution=10s",
                  "--kubelet-request-timeout=5s", *extra)


def test_v0_is_quiet_per_tick(sim_info: dict[str, Any], tmp_path: Path) -> None:
    proc = _collect(sim_info, tmp_path)
    try:
        # two ticks (10 s apart) make the storage ready: logged once, at -v=0
        lines = proc.wait_for(
            lambda ls: any('"Storage readiness changed" ready=true' in line for line in ls), 45)
    finally:
        status = proc.stop()
    assert status == 0
    assert not [line for line in lines if "Scrape finished" in line or "Scraped node" in line
                or "Tick details" in line], lines
    assert all(KLOG.match(line) for line in lines), lines


def test_v2_summarises_each_tick(sim_info: dict[str, Any], tmp_path: Path) -> None:
    proc = _collect(sim_info, tmp_path, "--v=2")
    try:
        lines = proc.wait_for(lambda ls: any("Tick details" in line for line in ls), 30)
    finally:
        status = proc.stop()
    assert status == 0
    finished = [line for line in lines if '"Scrape finished"' in line]
    assert len(finished) == 1, lines
    # pods with rates after one tick: only those whose containers started recently (fresh)
    assert re.search(r'"Scrape finished" duration_s=[0-9.]+ nodes=3 pods=[0-6] failed=0$',
                     finished[0]), finished
    details = [line for line in lines if '"Tick details"' in line]
    assert re.search(r'"Tick details" scraped=3 nodes_with_baseline=0 containers_with_baseline='
                     r'\d+ dropped_pods=0 skipped_samples=0 timeouts=0 max_jitter_ms=\d+$',
                     details[0]), details
    assert not [line for line in lines if "Scraped node" in line]


def test_v4_json_has_a_line_per_node(sim_info: dict[str, Any], tmp_path: Path) -> None:
    proc = _collect(sim_info, tmp_path, "-v=4", "--logging-format=json")
    try:
        lines = proc.wait_for(lambda ls: any('"Scrape finished"' in line for line in ls), 30)
    finally:
        status = proc.stop()
    assert status == 0
    objs = [json.loads(line) for line in lines]  # every line is one JSON object
    by_msg: dict[str, list[dict[str, Any]]] = {}
    for obj in objs:
        assert {"ts", "caller", "msg"} <= obj.keys(), obj
        by_msg.setdefault(obj["msg"], []).append(obj)
    (finished,) = by_msg["Scrape finished"]
    assert (finished["v"], finished["nodes"], finished["failed"]) == (1, 3, 0)
    scraped = by_msg["Scraped node"]
    assert sorted(o["node"] for o in scraped) == [f"sim-node-0000{i}" for i in range(3)]
    for o in scraped:
        # 2 pods x 2 containers per node
        assert (o["v"], o["pods"], o["containers"], o["node_point"]) == (4, 2, 4, True), o
        assert o["duration_s"] >= 0
