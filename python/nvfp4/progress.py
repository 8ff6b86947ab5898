"""Progress of long work (quantize_model) on stderr: a bar redrawn in place on a terminal, plain lines at a slow
pace when the output is a file or a pipe (logs stay readable), and nothing at all for work that ends quickly."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

BAR_WIDTH = 30


class Progress:
    """Reports `done` of `total` steps of the work called `label`.

    enabled: True always shows (from the first update), False never, None (the default) shows only once the work has
    run for `delay` seconds. On a terminal the line is redrawn in place; otherwise a line is written at most every
    `interval` seconds, plus the last one."""

    def __init__(self, total: int | None, label: str, *, enabled: bool | None = None, stream: TextIO | None = None,
                 delay: float = 2.0, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.delay = 0.0 if enabled else delay
        self.interval, self.clock = interval, clock
        self.start = clock()
        self.last_line: float | None = None
        self.shown = False
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, note: str = "") -> None:
        if self.enabled is False:
            return
        now = self.clock()
        if now - self.start < self.delay:
            return
        final = self.total is not None and done >= self.total
        if not self.interactive and not final and self.last_line is not None and now - self.last_line < self.interval:
            return
        self.last_line = now
        self._write(done, note, now, final)

    def close(self) -> None:
        """Ends the bar's line on a terminal (plain output is already line by line)."""
        if self.shown and self.interactive:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = False

    def _write(self, done: int, note: str, now: float, final: bool) -> None:
        count = f"{done}/{self.total}" if self.total is not None else f"{done}"
        bar = ""
        if self.total:
            filled = BAR_WIDTH * done // self.total
            bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
        text = f"{self.label}: {bar}{count} {note}".rstrip() + f" ({now - self.start:.1f} s)"
        if self.interactive:
            self.stream.write("\r" + text + "\033[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True
        if final:
            self.close()
