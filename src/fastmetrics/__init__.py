"""fastmetrics: a drop-in replacement for Kubernetes metrics-server with a compiled core."""

from __future__ import annotations

from ._version import __version__
from .decode import DecodedBatch, Decoder, KeyTable, NodePoint, decode
from .errors import ConfigError, DecodeError, FastMetricsError, ScrapeError

__all__ = [
    "ConfigError",
    "DecodeError",
    "DecodedBatch",
    "Decoder",
    "FastMetricsError",
    "KeyTable",
    "NodePoint",
    "ScrapeError",
    "__version__",
    "decode",
]
