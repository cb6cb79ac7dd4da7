"""The source code's own checks: mypy --strict, ruff, cython-lint, and the import direction."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "fastmetrics"

pytestmark = pytest.mark.skipif(
    not (SRC / "_core.pyx").exists(), reason="needs the source tree (run from a checkout)"
)


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is in the [test] extras)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_ruff() -> None:
    r = _run(_tool("ruff"), "check", "src", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict() -> None:
    r = _run(sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_core_stub_types() -> None:
    """The typed boundary of _core (``_core.pyi``) as a caller sees it."""
    r = _run(sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml",
             "tests/typing/check_core.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_render_stub_types() -> None:
    """The typed boundary of _render (``_render.pyi``) as a caller sees it."""
    r = _run(sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml",
             "tests/typing/check_render.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_cython_lint() -> None:
    r = _run(_tool("cython-lint"), "--max-line-length", "100", "src/fastmetrics/_core.pyx",
             "src/fastmetrics/_render.pyx")
    assert r.returncode == 0, r.stdout + r.stderr


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, as dotted names below fastmetrics."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(SRC).with_suffix("")
    package = list(rel.parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = [*base, *(node.module.split(".") if node.module else [])]
                names = [".".join(mod)] if node.module else []
                names += [".".join([*mod, a.name]) for a in node.names]
                out.update(n for n in names if n)
            elif node.module and node.module.startswith("fastmetrics"):
                out.add(node.module.removeprefix("fastmetrics").lstrip("."))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fastmetrics."):
                    out.add(a.name.removeprefix("fastmetrics."))
    return out


def test_import_direction() -> None:
    """Only the facades import _core, only the API's list renderer imports _render, only run
    (the process entry) imports server, and stages import downwards."""
    core_importers = {"decode", "store", "api.format"}
    render_importers = {"api.render"}
    # a stage may not import a stage above it in DESIGN.md's picture
    above = {
        "decode": {"store", "api", "server", "scrape", "cluster"},
        "_decode_py": {"store", "api", "server", "scrape", "cluster"},
        "_grammar": {"store", "api", "server", "scrape", "cluster", "decode"},
        "_batch": {"store", "api", "server", "scrape", "cluster", "decode"},
        "store": {"api", "server", "scrape", "cluster"},
        "_store_py": {"api", "server", "scrape", "cluster", "decode"},
    }
    problems = []
    for path in SRC.rglob("*.py"):
        mod = ".".join(path.relative_to(SRC).with_suffix("").parts)
        imported = _imports(path)
        for name in imported:
            top = name.split(".")[0]
            if top == "_core" and mod not in core_importers:
                problems.append(f"{mod} imports _core (only {sorted(core_importers)} may)")
            if top == "_render" and mod not in render_importers:
                problems.append(f"{mod} imports _render (only {sorted(render_importers)} may)")
            if top == "server" and mod != "run":
                problems.append(f"{mod} imports server (only the process entry point run may)")
            if top in above.get(mod, set()):
                problems.append(f"{mod} imports {name}, a stage above it")
    assert not problems, "\n".join(sorted(problems))
