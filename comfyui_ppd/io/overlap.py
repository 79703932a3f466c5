"""File work overlapped with the model: decode ahead and write behind on helper threads, so a clip's decoding
and writing run while the model computes (PyAV, zlib and fsync release the GIL). Order and results are
unchanged; memory stays bounded (a fixed number of items in flight)."""
from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T], count: int) -> Generator[T, None, None]:
    """The items of `items`, produced on a helper thread up to `count` ahead of the consumer. An exception of
    `items` is raised here after every item before it; closing this iterator stops the thread."""
    box: queue.Queue = queue.Queue(maxsize=count)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                box.put((item, None))                      # blocks while `count` items wait (no polling)
                if stop.is_set():
                    return
            box.put((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            box.put((_END, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="ppd-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = box.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():                           # empty the queue so a waiting put returns
            try:
                while True:
                    box.get_nowait()
            except queue.Empty:
                pass
            thread.join(0.01)


class WriteBehind:
    """Calls run in submission order on one helper thread, at most `limit` unfinished; a failed call's exception
    is raised by the next `submit` or by `finish`. Leaving the with-block waits for every call, also on an
    exception, so what was submitted is on disk when the caller's exception propagates."""

    def __init__(self, limit: int = 1) -> None:
        self.limit = limit
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ppd-write-behind")
        self.pending: deque[Future] = deque()

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        while len(self.pending) >= self.limit:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(fn, *args))

    def finish(self) -> None:
        """Wait for every call; raise the first failure."""
        while self.pending:
            self.pending.popleft().result()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *_: object) -> None:
        self.pool.shutdown(wait=True)
