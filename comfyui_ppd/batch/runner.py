"""The batch engine on one machine: prefetching loader -> batches of one processing size -> background writer.

The per-image work comes from a processor (see `Processor`); this module only schedules it:
- loader threads run `load(item)` (decode + resize) ahead of the model, at most `workers + 1` items in flight;
- samples (an image, or a video frame) with the same `key` (processing size) are batched for `infer`;
- a writer thread runs `write` (render + encode + atomic file writes) while the model works on the next batch.
Resumable: an item whose expected outputs all exist is skipped; a failing item is recorded, never fatal.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import PPDError, error_message
from .inputs import Item


class FatalError(PPDError):
    """An error that stops the whole run (e.g. the model cannot load), not just one item."""


@dataclass
class Sample:
    """One model input: frame `tag` (0 for an image) of an item, its batch `key` and the loaded `payload`."""

    item: Item
    tag: int
    key: Hashable
    payload: Any


class Processor(Protocol):
    """The seam to the per-image work (implemented for PPD in `batch.ppd`)."""

    def expected_outputs(self, item: Item) -> list[Path] | None:
        """Every file a finished item has, or None when unknown (a video not yet done)."""

    def load(self, item: Item) -> Iterator[tuple[int, Hashable, Any]]:
        """(tag, key, payload) per sample; runs on a loader thread; raises for a bad file."""

    def infer(self, payloads: list[Any]) -> list[Any]:
        """Results for payloads of one key, in order; batching must not change any result."""

    def write(self, item: Item, tag: int, payload: Any, result: Any) -> int:
        """Write a sample's files atomically, keeping existing files unless overwriting; returns how many were kept."""

    def finish(self, item: Item, count: int) -> None:
        """Called once all `count` samples of an item are written (e.g. a video's frame manifest)."""


@dataclass
class Summary:
    """What a run did: items done / skipped / failed (with the reason), samples through the model, seconds."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    kept_files: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Summary) -> None:
        """Fold another part of the run (e.g. the videos after the images) into this summary."""
        self.total += other.total
        self.done += other.done
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.samples += other.samples
        self.kept_files += other.kept_files
        self.seconds += other.seconds
        self.notes += other.notes

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        rate = f" ({self.samples / self.seconds:.2f}/s)" if self.seconds > 0 and self.samples else ""
        lines = [f"summary: {self.total} item(s): {self.done} done, {self.skipped} skipped (outputs already "
                 f"present), {len(self.failed)} failed; {self.samples} image(s)/frame(s) through the model "
                 f"in {self.seconds:.1f} s{rate}"]
        lines += [f"  {note}" for note in self.notes]
        if self.kept_files:
            lines.append(f"  {self.kept_files} existing output file(s) were kept (not overwritten); "
                         "pass --overwrite to replace them")
        if self.failed:
            lines.append("failed:")
            lines += [f"  {name}: {why}" for name, why in self.failed.items()]
        return "\n".join(lines)


class Tracker:
    """Thread-safe per-item bookkeeping: an item is done when it has loaded all samples and all are written."""

    def __init__(self, processor: Processor, summary: Summary,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.processor, self.summary, self.progress = processor, summary, progress
        self.lock = threading.Lock()
        self.loaded: dict[int, int | None] = {}          # item index -> sample count once loading ended
        self.written: dict[int, int] = {}
        self.items: dict[int, Item] = {}
        self.finished = 0

    def start(self, item: Item) -> None:
        with self.lock:
            self.items[item.index], self.loaded[item.index], self.written[item.index] = item, None, 0

    def fail(self, item: Item, error: BaseException | str) -> None:
        with self.lock:
            if item.index in self.items and str(item.path) not in self.summary.failed:
                self.summary.failed[str(item.path)] = error_message(error)
                self._close(item.index)

    def loaded_all(self, item: Item, count: int) -> None:
        with self.lock:
            if item.index in self.items:
                self.loaded[item.index] = count
                self._maybe_finish(item.index)

    def wrote(self, item: Item, kept: int) -> None:
        with self.lock:
            if item.index in self.items:
                self.written[item.index] += 1
                self.summary.samples += 1
                self.summary.kept_files += kept
                self._maybe_finish(item.index)

    def _maybe_finish(self, index: int) -> None:
        count = self.loaded[index]
        if count is not None and self.written[index] == count:
            item = self.items[index]
            try:
                self.processor.finish(item, count)
            except Exception as e:                          # noqa: BLE001 - recorded per item
                self.summary.failed[str(item.path)] = error_message(e)
            else:
                self.summary.done += 1
            self._close(index)

    def _close(self, index: int) -> None:
        del self.items[index]
        self.finished += 1
        if self.progress:
            self.progress(self.finished, self.summary.total - self.summary.skipped)


def split_done(items: list[Item], processor: Processor, overwrite: bool) -> tuple[list[Item], int]:
    """Items still to do, and how many are skipped because every expected output file exists."""
    if overwrite:
        return list(items), 0
    todo = []
    for item in items:
        expected = processor.expected_outputs(item)
        if not (expected and all(p.is_file() for p in expected)):
            todo.append(item)
    return todo, len(items) - len(todo)


_END = object()


def run_sequential(items: list[Item], processor: Processor, *, overwrite: bool = False, batch_size: int = 4,
                   workers: int = 2, progress: Callable[[int, int], None] | None = None) -> Summary:
    """Run every item on this machine; returns the summary (failures are recorded, not raised)."""
    start = time.perf_counter()
    summary = Summary(total=len(items))
    todo, summary.skipped = split_done(items, processor, overwrite)
    tracker = Tracker(processor, summary, progress)
    writer = _Writer(processor, tracker, depth=2)
    pending: OrderedDict[Hashable, list[Sample]] = OrderedDict()

    def flush(key: Hashable) -> None:
        batch = pending.pop(key)
        batch = [s for s in batch if s.item.index in tracker.items]   # an item may have failed meanwhile
        if not batch:
            return
        try:
            results = processor.infer([s.payload for s in batch])
        except FatalError:                                  # e.g. the model cannot load: stop the run
            raise
        except Exception as e:                              # noqa: BLE001 - the batch's items fail, the run goes on
            for s in batch:
                tracker.fail(s.item, e)
            return
        writer.put(batch, results)

    try:
        for item, samples in _prefetch(todo, processor, tracker, max(1, workers)):
            count = 0
            try:
                for tag, key, payload in samples:
                    count += 1
                    pending.setdefault(key, []).append(Sample(item, tag, key, payload))
                    if len(pending[key]) >= batch_size:
                        flush(key)
                    elif sum(map(len, pending.values())) >= 2 * batch_size:
                        flush(next(iter(pending)))            # bound memory: the oldest size goes first
            except FatalError:                              # a batch filled inside the item: stop the run
                raise
            except Exception as e:                          # noqa: BLE001 - a bad file fails its item only
                tracker.fail(item, e)
                continue
            tracker.loaded_all(item, count)
        for key in list(pending):
            flush(key)
    finally:
        writer.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _prefetch(items: list[Item], processor: Processor, tracker: Tracker,
              workers: int) -> Iterator[tuple[Item, Iterator]]:
    """(item, samples) in input order; loader threads decode up to `workers + 1` items ahead.

    Each item's samples pass through a small bounded queue, so a long video streams instead of filling memory."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ppd-load")
    stop = threading.Event()

    def load(item: Item, q: queue.Queue) -> None:
        try:
            for sample in processor.load(item):
                while not stop.is_set():
                    try:
                        q.put(sample, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:                          # noqa: BLE001 - handed to the consumer
            q.put(e)

    def drain(q: queue.Queue) -> Iterator:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield got

    window: list[tuple[Item, queue.Queue]] = []
    it = iter(items)
    try:
        while True:
            while len(window) < workers + 1:
                item = next(it, None)
                if item is None:
                    break
                tracker.start(item)
                q: queue.Queue = queue.Queue(maxsize=8)
                pool.submit(load, item, q)
                window.append((item, q))
            if not window:
                return
            item, q = window.pop(0)
            yield item, drain(q)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


class _Writer:
    """A background thread writing batches of results; `depth` bounds how far the model may run ahead."""

    def __init__(self, processor: Processor, tracker: Tracker, depth: int) -> None:
        self.processor, self.tracker = processor, tracker
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name="ppd-write", daemon=True)
        self.thread.start()

    def put(self, batch: list[Sample], results: list[Any]) -> None:
        self.queue.put((batch, results))

    def _run(self) -> None:
        while True:
            got = self.queue.get()
            if got is None:
                return
            for sample, result in zip(*got):
                if sample.item.index not in self.tracker.items:
                    continue
                try:
                    kept = self.processor.write(sample.item, sample.tag, sample.payload, result)
                except Exception as e:                      # noqa: BLE001 - recorded per item
                    self.tracker.fail(sample.item, e)
                else:
                    self.tracker.wrote(sample.item, kept)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
