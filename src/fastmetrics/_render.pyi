"""What crosses the boundary of ``fastmetrics._render`` (the API's long-list kernels).

The pure-Python twin ``fastmetrics.api._render_py`` has the same functions with the same
results and errors (``FastMetricsError`` for inconsistent input). Checked by ``mypy --strict``
with ``tests/typing/check_render.py``.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
T = TypeVar("T")

def pack(strings: Sequence[str]) -> tuple[bytes, I64]:
    """The strings' UTF-8 back to back and ``n + 1`` int64 offsets (``UnicodeEncodeError``
    for a string with a lone surrogate)."""

def take_packed(buf: bytes, off: I64, order: I32) -> tuple[bytes, I64]:
    """Packed strings in the order ``order`` (int32 indices): new ``(bytes, offsets)``."""

def gather(lists: Sequence[list[T]], outer: I32, inner: I32) -> list[T]:
    """``[lists[outer[i]][inner[i]] for i in range(n)]``."""

def intern(lists: Sequence[list[str]], outer: I32, inner: I32) -> tuple[I32, list[str]]:
    """int32 ids of ``lists[outer[i]][inner[i]]`` into the distinct values (first seen
    first), and those values."""

def sort_pods(ns_rank: I32, name_buf: bytes, name_off: I64) -> I32:
    """The stable order (int32 permutation) by namespace rank, then the name's UTF-8 bytes."""

class NameIndex:
    """Positions of a table's pods by (namespace id, name), over its packed names."""

    def __init__(self, ns_id: I32, name_buf: bytes, name_off: I64) -> None: ...
    def __len__(self) -> int: ...
    def position(self, namespace_id: int, name: str) -> int:
        """The position, or -1."""

def join(
    candidates: Sequence[Any],
    ns_index: dict[str, int],
    index: NameIndex,
    n: int,
    blob_of: Callable[[Mapping[str, str]], bytes],
) -> tuple[list[bytes | None], U8]:
    """Per table position: the labels' encoded entries of the candidate placed there (None
    for none), and a uint8 mask of the positions filled."""

def pod_list_json(table: Any, blobs: list[bytes | None], created: bytes) -> bytes:
    """A ``PodMetricsList`` JSON body from an ``api.render.PodTable``; ``created`` is the
    quoted ``creationTimestamp``."""

def pod_list_protobuf(table: Any, blobs: list[bytes | None], created: bytes) -> bytes:
    """A ``PodMetricsList`` protobuf body; ``created`` is ObjectMeta's encoded field 8."""
