"""Kubernetes formatting for the API: Quantity, Duration and RFC 3339 strings (SPEC §5.2).

The compiled formatters of ``_core`` unless ``FASTMETRICS_NO_EXTENSIONS=1`` (then the pure-Python
twins of ``_format_py``); both produce the same strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from .._ext import NO_EXTENSIONS
from . import _format_py

__all__ = [
    "FORMAT_CPU",
    "FORMAT_MEMORY",
    "FORMAT_TIMESTAMP",
    "FORMAT_WINDOW",
    "add_quantities",
    "format_column",
    "format_cpu",
    "format_memory",
    "format_timestamp",
    "format_window",
]

FORMAT_CPU, FORMAT_MEMORY, FORMAT_WINDOW, FORMAT_TIMESTAMP = 0, 1, 2, 3

_SCALAR: tuple[Callable[[int], str], ...] = (
    _format_py.format_cpu,
    _format_py.format_memory,
    _format_py.format_window,
    _format_py.format_timestamp,
)


def _format_column_py(
    values: npt.NDArray[np.integer], kind: int
) -> tuple[bytes, npt.NDArray[np.int64]]:
    fmt = _SCALAR[kind]
    parts = [fmt(int(v)).encode() for v in values.tolist()]
    off = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=off[1:])
    return b"".join(parts), off


format_cpu = _format_py.format_cpu
format_memory = _format_py.format_memory
format_window = _format_py.format_window
format_timestamp = _format_py.format_timestamp
format_column: Callable[[Any, int], tuple[bytes, npt.NDArray[np.int64]]] = _format_column_py

if not NO_EXTENSIONS:
    try:
        from .. import _core
    except ImportError:  # pragma: no cover  (a pure-Python install)
        pass
    else:
        format_cpu = _core.format_cpu
        format_memory = _core.format_memory
        format_window = _core.format_window
        format_timestamp = _core.format_timestamp
        format_column = _core.format_column


def add_quantities(values: npt.NDArray[np.uint64]) -> int:
    """Quantity addition for Table sums: exact, in Python integers (no int64 overflow)."""
    return sum(values.tolist())
