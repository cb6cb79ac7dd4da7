"""Everything that crosses the compiled boundary, with dtypes and units.

Checked by ``mypy --strict`` (tests/test__sourcecode.py) together with tests/typing/.
"""

import numpy as np
import numpy.typing as npt

from ._batch import DecodedBatch, KeyTable

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]

class DecoderC:
    """Decodes one node's kubelet ``/metrics/resource`` bodies into columns (compiled)."""

    @property
    def keys(self) -> KeyTable:
        """The decoder's interned (namespace, pod, container) identities (replaced by a
        compacted copy when the ids of pods gone from the node outnumber the live ones)."""

    def __init__(self) -> None: ...
    def decode(
        self, body: bytes | bytearray | memoryview, default_timestamp_ns: int, /
    ) -> DecodedBatch:
        """Decode a body; samples without a timestamp get ``default_timestamp_ns`` (ns since
        the epoch). Raises ``fastmetrics.DecodeError`` naming offset, line and excerpt."""

def cpu_rate(last_ts: I64, last_cpu: U64, prev_ts: I64, prev_cpu: U64) -> tuple[U64, I64]:
    """Per element: nanocores ``uint64(float64(last_cpu - prev_cpu) / window.Seconds())``
    (uint64, saturated) and the window ``last_ts - prev_ts`` (int64 ns)."""

def store_containers(
    new: tuple[I32, I64, I64, U64, U64],
    new_off: I64,
    old_slot: I32,
    old: tuple[I32, I64, I64, U64, U64],
    old_off: I64,
    old_prev: tuple[U8, I64, I64, U64, U64],
    resolution_ns: int,
    max_keys: int,
) -> tuple[tuple[U8, I64, I64, U64, U64], U8, U64, I64]:
    """Columns are ``(key_id, timestamp_ns, start_time_ns, cpu_nanocore_seconds,
    memory_bytes)``; prev columns ``(has_prev, timestamp_ns, start_time_ns,
    cpu_nanocore_seconds, memory_bytes)``. Returns the new prev columns, the row status
    (0 no baseline, 1 ok, 2 start decreased, 3 cpu decreased), cpu nanocores, window ns."""

def group_pods(
    pod_id: I32, new_off: I64, pod_base: I64, has_prev: U8, status: U8, ts: I64, window: I64
) -> tuple[I32, I64, I32, I32, U8, I64, I64]:
    """Returns ``order`` (int32 rows), ``pod_off`` (int64), ``pod_node`` (int32),
    ``pod_local`` (int32), ``pod_valid`` (uint8), ``pod_ts`` (int64 ns, -1 = none),
    ``pod_window`` (int64 ns)."""

def format_cpu(nanocores: int) -> str:
    """Canonical Quantity string of nanocores (DecimalSI, scale -9)."""

def format_memory(nbytes: int) -> str:
    """Canonical Quantity string of bytes (BinarySI; DecimalSI below 1024)."""

def format_window(ns: int) -> str:
    """Go ``time.Duration(ns).String()``."""

def format_timestamp(ns: int) -> str:
    """RFC 3339 UTC, whole seconds truncated."""

def format_column(values: U64 | I64, kind: int, /) -> tuple[bytes, I64]:
    """Kinds 0 cpu, 1 memory (uint64 values), 2 window, 3 timestamp (int64 ns); returns the
    UTF-8 strings back to back and ``n + 1`` int64 offsets."""
