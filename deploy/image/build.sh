#!/bin/sh
# Build and install fastmetrics the way its container image does, with or without Docker.
#
#   deploy/image/build.sh wheels SRC OUT
#       Builds the fastmetrics wheel from the source tree SRC (its Cython core compiled, in a
#       clean copy, with pip's build isolation: the build requirements of pyproject.toml) and
#       collects the wheels of its run-time dependencies, all into OUT. Needs a C compiler and
#       the package index (or PIP_INDEX_URL / PIP_FIND_LINKS).
#
#   deploy/image/build.sh install WHEELS PREFIX
#       Creates a virtual environment at PREFIX holding fastmetrics and its dependencies from
#       the wheels in WHEELS only (no index, no compiler), removes pip and setuptools from it,
#       compiles the bytecode (a read-only root filesystem cannot cache it later) and checks
#       that `PREFIX/bin/fastmetrics --version` runs the compiled core.
#
# The Dockerfile's RUN steps call this script; tests/test_packaging.py runs the same two steps
# into a temporary directory and checks the installed command.
set -eu

PYTHON=${PYTHON:-python3}

die() {
    echo "build.sh: $*" >&2
    exit 2
}

wheels() {
    src=$1
    out=$2
    [ -f "$src/pyproject.toml" ] || die "$src is not the fastmetrics source tree (no pyproject.toml)"
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT INT TERM
    # a clean copy: no build/, no compiled extension or generated C left from a development tree
    mkdir "$work/src"
    cp "$src/pyproject.toml" "$src/setup.py" "$src/README.md" "$work/src/"
    cp -R "$src/src" "$work/src/src"
    find "$work/src/src" \( -name '*.so' -o -name '*.c' -o -name '__pycache__' \
        -o -name '*.egg-info' \) -prune -exec rm -rf {} +
    "$PYTHON" -m pip wheel --no-cache-dir --no-deps --wheel-dir "$work/dist" "$work/src"
    wheel=$(ls "$work"/dist/fastmetrics-*.whl)
    if [ "${FASTMETRICS_NO_EXTENSIONS:-0}" = "0" ] || [ -z "${FASTMETRICS_NO_EXTENSIONS:-}" ]; then
        "$PYTHON" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
if not any(n.startswith("fastmetrics/_core.") and n.endswith((".so", ".pyd")) for n in names):
    sys.exit(f"build.sh: {sys.argv[1]} has no compiled fastmetrics._core")
PY
    fi
    cp "$wheel" "$out/"
    # the run-time dependencies as wheels (binary only: the runtime stage has no compiler)
    "$PYTHON" -m pip wheel --no-cache-dir --only-binary=:all: --wheel-dir "$out" "$wheel"
    echo "build.sh: wheels in $out:"
    ls "$out"
}

install() {
    wheels=$1
    prefix=$2
    ls "$wheels"/fastmetrics-*.whl >/dev/null 2>&1 || die "no fastmetrics wheel in $wheels"
    "$PYTHON" -m venv "$prefix"
    "$prefix/bin/python" -m pip install --no-cache-dir --no-index --find-links "$wheels" \
        --disable-pip-version-check fastmetrics
    "$prefix/bin/python" -m pip uninstall --yes --disable-pip-version-check pip setuptools \
        >/dev/null 2>&1 || true
    "$prefix/bin/python" -m compileall -q "$prefix/lib" >/dev/null || true
    version=$("$prefix/bin/fastmetrics" --version)
    echo "build.sh: installed $version in $prefix"
    case "$version" in
        *"(compiled core)"*) ;;
        *) [ -n "${FASTMETRICS_NO_EXTENSIONS:-}" ] && [ "$FASTMETRICS_NO_EXTENSIONS" != "0" ] \
               || die "the installed fastmetrics does not load its compiled core: $version" ;;
    esac
}

[ $# -ge 1 ] || die "usage: build.sh wheels SRC OUT | build.sh install WHEELS PREFIX"
command=$1
shift
case "$command" in
    wheels) [ $# -eq 2 ] || die "usage: build.sh wheels SRC OUT"; wheels "$1" "$2" ;;
    install) [ $# -eq 2 ] || die "usage: build.sh install WHEELS PREFIX"; install "$1" "$2" ;;
    *) die "unknown command '$command' (wheels or install)" ;;
esac
