"""A small terminal progress reporter (stage, count, rate, ETA) with no dependencies."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports ``done/total`` with a rate and an ETA, redrawing in place on a terminal.

    Off a terminal (logs, CI) it prints a line at most every ``min_interval`` seconds and at the end, so
    logs stay readable.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, min_interval: float = 2.0) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.stream = sys.stderr if stream is None else stream
        self.min_interval = min_interval
        self.done = 0
        self.start = time.perf_counter()
        self._last_print = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        finished = self.done >= self.total
        if finished or self._tty or now - self._last_print >= self.min_interval:
            self._last_print = now
            self._write(note, finished)

    def _write(self, note: str, finished: bool) -> None:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate > 0 else float("nan")
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        eta = "done" if finished else f"ETA {remaining:5.1f}s"
        text = f"{self.label:<18} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s {eta}"
        if note:
            text += f"  {note}"
        if self._tty:
            self.stream.write("\r" + text + ("\n" if finished else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.done < self.total and exc[0] is None:
            self._write("", True)
