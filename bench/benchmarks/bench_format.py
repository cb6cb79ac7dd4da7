"""Formatting usage strings for the API (asv-style)."""

from __future__ import annotations

import numpy as np

from fastmetrics.api import _format_py
from fastmetrics.api import format as fmt

try:
    from fastmetrics import _core
except ImportError:  # pragma: no cover
    _core = None  # type: ignore[assignment]


class TimeFormatColumn:
    """Canonical Quantity strings for a column of container usages (cpu and memory)."""

    params = [[10_000, 1_100_000]]
    param_names = ["containers"]

    def setup(self, n: int) -> None:
        rng = np.random.default_rng(7)
        self.cpu = rng.integers(1_000, 4_000_000_000, n, dtype=np.int64).astype(np.uint64)
        self.mem = (rng.integers(256, 1 << 20, n, dtype=np.int64) * 4096).astype(np.uint64)
        self.window = rng.integers(14 * 10**9, 16 * 10**9, n, dtype=np.int64)

    def time_format_c(self, n: int) -> None:
        """Compiled format_column: cpu + memory + window."""
        _core.format_column(self.cpu, fmt.FORMAT_CPU)
        _core.format_column(self.mem, fmt.FORMAT_MEMORY)
        _core.format_column(self.window, fmt.FORMAT_WINDOW)

    def time_format_py(self, n: int) -> None:
        """Pure-Python formatters, one str per value."""
        for v in self.cpu.tolist():
            _format_py.format_cpu(v)
        for v in self.mem.tolist():
            _format_py.format_memory(v)
        for v in self.window.tolist():
            _format_py.format_window(v)
