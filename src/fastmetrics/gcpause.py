"""Pausing CPython's cyclic garbage collector, process-wide and from several threads at once.

The collector runs in whichever thread allocates when a generation's threshold is crossed, and
every thread waits for it: a young collection in the tick loop's thread delays API requests in
the serving thread. Work that allocates many objects that either die by reference counting or
live on for a long time (a scrape window of thousands of kubelet responses, a long list built
object by object) pauses it instead: :func:`paused` disables automatic collection until the
last overlapping pause ends (a counter under a lock, so one thread's pause ending does not
re-enable collection under another's). Reference counting still frees acyclic garbage at once;
reference cycles made meanwhile wait for a later collection.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["active", "paused"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    """Automatic collection off inside the block (nests, across threads). If collection was
    already disabled by someone else (``gc.disable()``), it stays disabled afterwards."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


def active() -> int:
    """How many pauses are in effect now."""
    return _depth
