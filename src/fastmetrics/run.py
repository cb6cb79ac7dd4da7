"""Running fastmetrics as the server (``fastmetrics [flags]``)."""

from __future__ import annotations

import sys

from .options import Options

__all__ = ["run_server"]


def run_server(options: Options) -> int:
    """Run the server with validated ``options``; returns the exit status."""
    del options
    print(
        "fastmetrics: the flags are valid, but the metrics.k8s.io API server is not built yet "
        "(see the open issues); try `fastmetrics demo`.",
        file=sys.stderr,
    )
    return 1
