"""Decode kubelet ``/metrics/resource`` bodies into columns (SPEC §1, §3).

``Decoder`` is the compiled ``DecoderC`` unless ``FASTMETRICS_NO_EXTENSIONS=1`` is set (or the
extension was not built), in which case it is the pure-Python twin ``DecoderPy``. Both have the
same signature, results and errors.
"""

from __future__ import annotations

from ._batch import DecodedBatch, KeyTable, NodePoint
from ._decode_py import DecoderPy
from ._ext import NO_EXTENSIONS
from ._grammar import (
    CONTAINER_CPU_USAGE_SECONDS_TOTAL,
    CONTAINER_MEMORY_WORKING_SET_BYTES,
    CONTAINER_START_TIME_SECONDS,
    NODE_CPU_USAGE_SECONDS_TOTAL,
    NODE_MEMORY_WORKING_SET_BYTES,
)
from .errors import DecodeError

__all__ = [
    "CONTAINER_CPU_USAGE_SECONDS_TOTAL",
    "CONTAINER_MEMORY_WORKING_SET_BYTES",
    "CONTAINER_START_TIME_SECONDS",
    "NODE_CPU_USAGE_SECONDS_TOTAL",
    "NODE_MEMORY_WORKING_SET_BYTES",
    "DecodeError",
    "DecodedBatch",
    "Decoder",
    "DecoderC",
    "DecoderPy",
    "KeyTable",
    "NodePoint",
    "decode",
]

DecoderC: type[DecoderPy] | None
try:
    from ._core import DecoderC as _DecoderC
except ImportError:  # pragma: no cover  (a pure-Python install)
    DecoderC = None
else:
    DecoderC = _DecoderC  # type: ignore[assignment]

Decoder: type[DecoderPy] = DecoderPy if NO_EXTENSIONS or DecoderC is None else DecoderC


def decode(body: bytes, *, default_timestamp_ns: int) -> DecodedBatch:
    """Decode one kubelet ``/metrics/resource`` body with a fresh ``Decoder``.

    For repeated scrapes of the same node keep a ``Decoder`` and call its ``decode`` method:
    it reuses the interned label blocks and creates no Python object per series.
    """
    return Decoder().decode(body, default_timestamp_ns)
