"""`fastmetrics [flags]` as a real process against the simulated cluster in another process."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

READYZ_OK = (
    b"[+]ping ok\n[+]log ok\n[+]poststarthook/max-in-flight-filter ok\n"
    b"[+]poststarthook/storage-object-count-tracker-hook ok\n"
    b"[+]metric-storage-ready ok\n[+]metric-informer-sync ok\n"
    b"[+]metadata-informer-sync ok\n[+]shutdown ok\nreadyz check passed\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class _Lines:
    """A process's stderr lines, read by a thread (so the test can poll HTTP meanwhile)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def close(self) -> None:
        """After the process exited: the rest of its output, and the pipe closed."""
        self._thread.join(timeout=10)
        self._stream.close()

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def text(self) -> str:
        return "".join(self.lines)


def _get(port: int, path: str, ctx: ssl.SSLContext,
         token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"https://localhost:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


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
    out: _Lines | None = None
    port = _free_port()
    cert_dir = tmp_path / "certs"
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "fastmetrics",
             f"--kubeconfig={info['metrics_server_kubeconfig']}",
             f"--cert-dir={cert_dir}", f"--secure-port={port}", "--bind-address=127.0.0.1",
             "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
             "--kubelet-use-node-status-port", "--metric-resolution=10s",
             "--kubelet-request-timeout=5s", "--v=2"],  # "Scrape finished" is a V(1) line
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        out = _Lines(server)
        deadline = time.monotonic() + 45
        # the server listens only once the informers have synced
        while not _listening(port):
            assert server.poll() is None, out.text()
            assert time.monotonic() < deadline, out.text()
            time.sleep(0.05)
        assert out.count('"Informers synced"') == 1, out.text()
        ctx = ssl.create_default_context(cafile=str(cert_dir / "apiserver.crt"))
        assert _get(port, "/livez", ctx) == (200, b"ok")
        # one scrape is no baseline yet: not ready until the second (10 s later)
        status, body = _get(port, "/readyz", ctx)
        assert status == 500, body
        assert b"[-]metric-storage-ready failed: reason withheld\n" in body
        while _get(port, "/readyz", ctx) != (200, b"ok"):
            assert time.monotonic() < deadline, out.text()
            time.sleep(0.2)
        assert _get(port, "/readyz?verbose", ctx) == (200, READYZ_OK)
        # beyond the probes, a user must be authorized (here by a TokenReview as
        # kubernetes-admin, in system:masters); anonymous is forbidden
        admin = str(info["admin_token"])
        status, body = _get(port, "/metrics", ctx, admin)
        assert status == 200
        assert b'metrics_server_kubelet_request_total{success="true"}' in body
        assert _get(port, "/metrics", ctx)[0] == 403
        status, body = _get(port, "/nope", ctx, admin)
        assert status == 404 and b'"/readyz/shutdown"' in body
        while out.count('"Scrape finished"') < 2:
            assert time.monotonic() < deadline, out.text()
            time.sleep(0.05)
        scrapes = [line for line in out.lines if '"Scrape finished"' in line]
        assert all("nodes=3 pods=12 failed=0" in line for line in scrapes), scrapes
        assert out.count('"Storage readiness changed" ready=true') == 1, out.text()
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait(timeout=30) == 0, out.text()
        assert not _listening(port)
    finally:
        if server is not None:
            if server.poll() is None:
                os.kill(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
            if out is not None:
                out.close()
        os.kill(sim.pid, signal.SIGTERM)
        sim.communicate(timeout=30)
    assert server.returncode == 0
    assert sim.returncode == 0


def test_does_not_listen_before_the_informers_synced(tmp_path: Path) -> None:
    # an apiserver that accepts connections and never answers: the informers never sync
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(16)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{dead.getsockname()[1]}\n"
        "    insecure-skip-tls-verify: true\n"
        "users:\n- name: u\n  user:\n    token: t\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fastmetrics", f"--kubeconfig={kubeconfig}",
         f"--cert-dir={tmp_path / 'certs'}", f"--secure-port={port}",
         "--bind-address=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    out = _Lines(server)
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert server.poll() is None, out.text()
            assert not _listening(port)
            time.sleep(0.2)
        assert out.count('"Informers synced"') == 0
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait(timeout=30) == 0, out.text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        out.close()
        dead.close()
