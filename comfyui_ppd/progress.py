"""The one console progress line (stderr, redrawn with \\r): sampling steps in the CLI, bytes in downloads."""
from __future__ import annotations

import sys
import time


class ConsoleProgress:
    """`progress(done, total)`: `label [#####.....] done/total 1.2s`, or with bytes=True
    `label: 12.3/45.6 MB  27.0%   3.4 MB/s`. Redraws at most every `every` seconds, always at the end."""

    def __init__(self, label: str, enabled: bool = True, *, bytes: bool = False, start: int = 0,
                 every: float = 0.0) -> None:
        self.label, self.enabled, self.bytes, self.every = label, enabled, bytes, every
        self.first, self.t0, self.last = start, time.monotonic(), -float("inf")

    def __call__(self, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        final = final or (total is not None and done >= total and not self.bytes)
        if not self.enabled or (not final and now - self.last < self.every):
            return
        self.last = now
        sys.stderr.write("\r" + (self._bytes(done, total, now) if self.bytes else self._steps(done, total or 1, now)))
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def _steps(self, done: int, total: int, now: float) -> str:
        filled = int(30 * done / max(total, 1))
        return f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {now - self.t0:.1f}s"

    def _bytes(self, done: int, total: int | None, now: float) -> str:
        speed = (done - self.first) / 1e6 / max(now - self.t0, 1e-6)
        size = (f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB {100 * done / total:5.1f}%" if total
                else f"{done / 1e6:,.1f} MB")
        return f"{self.label}: {size} {speed:6.1f} MB/s"
