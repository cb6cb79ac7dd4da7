"""fastmetrics.gcpause: process-wide pauses of the cyclic GC that nest across threads."""

from __future__ import annotations

import gc
import threading

from fastmetrics import gcpause


def test_nested_pauses_across_threads_enable_only_at_the_last_end() -> None:
    assert gc.isenabled() and gcpause.active() == 0
    inner_entered = threading.Event()
    release_inner = threading.Event()
    inner_done = threading.Event()

    def other() -> None:
        with gcpause.paused():
            inner_entered.set()
            release_inner.wait(5.0)
        inner_done.set()

    t = threading.Thread(target=other)
    with gcpause.paused():
        assert not gc.isenabled()
        t.start()
        assert inner_entered.wait(5.0)
        assert gcpause.active() == 2
    # this thread's pause ended; the other's still holds
    assert not gc.isenabled() and gcpause.active() == 1
    release_inner.set()
    assert inner_done.wait(5.0)
    t.join(5.0)
    assert gc.isenabled() and gcpause.active() == 0


def test_a_pause_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # someone else turned it off: not ours to turn on
    finally:
        gc.enable()


def test_a_pause_ends_on_an_exception() -> None:
    try:
        with gcpause.paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled() and gcpause.active() == 0
