"""io/overlap.py: read-ahead keeps order, raises a source's error after the items before it and stops its thread
when closed early; write-behind keeps order, bounds what is in flight and surfaces a failed call."""
from __future__ import annotations

import threading
import time

import pytest

from comfyui_ppd.io.overlap import WriteBehind, read_ahead


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_read_ahead_yields_every_item_in_order():
    assert list(read_ahead(iter(range(100)), 3)) == list(range(100))
    assert list(read_ahead(iter([]), 1)) == []


def test_read_ahead_raises_after_the_items_before_the_error():
    def source():
        yield from range(5)
        raise ValueError("frame 5 broken")

    got = []
    with pytest.raises(ValueError, match="frame 5 broken"):
        for item in read_ahead(source(), 2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_read_ahead_runs_at_most_count_ahead_and_stops_when_closed():
    produced, closed = [], threading.Event()

    def source():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    it = read_ahead(source(), 4)
    assert next(it) == 0
    time.sleep(0.3)
    assert len(produced) <= 1 + 4 + 1          # the one taken, the queue, the one waiting to be put
    it.close()
    assert closed.wait(2)                      # the source generator was closed on its thread
    assert "ppd-read-ahead" not in _threads()


def test_write_behind_keeps_order_and_bounds_the_calls_in_flight():
    out, running, peak = [], [0], [0]
    lock = threading.Lock()

    def call(i: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        out.append(i)
        with lock:
            running[0] -= 1

    with WriteBehind(limit=2) as behind:
        for i in range(20):
            behind.submit(call, i)
            assert len(behind.pending) <= 2
        behind.finish()
    assert out == list(range(20)) and peak[0] == 1


def test_write_behind_raises_a_failed_call_and_waits_for_the_rest_on_exit():
    done = []

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        with WriteBehind(limit=1) as behind:
            behind.submit(fail)
            behind.submit(done.append, 1)      # waits for fail() first, and raises its error
    assert done == []

    slow = []
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(limit=3) as behind:
            behind.submit(lambda: (time.sleep(0.2), slow.append("written")))
            raise KeyboardInterrupt
    assert slow == ["written"]                 # leaving the block waited for the submitted write
