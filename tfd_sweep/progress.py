"""One progress line for a sweep: runs done, failed, running, total, elapsed, time left.

On a terminal the line is redrawn in place. Elsewhere (a log file, CI) it is logged every
`interval` seconds, so that a long sweep neither floods the log nor goes silent.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("tfd_sweep.launcher")


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class SweepProgress:
    """Count runs as they finish and show the sweep's progress with a cost-weighted time estimate."""

    def __init__(self, total: int, total_cost: float, interval: float = 10.0, stream: TextIO | None = None) -> None:
        self.total = total
        self.total_cost = total_cost
        self.done_cost = 0.0
        self.done = 0
        self.failed = 0
        self.running = 0
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last_shown = self.start

    def started(self, runs: int) -> None:
        self.running += runs
        self.show()

    def finished(self, runs: int, failed: int, cost: float) -> None:
        self.running -= runs
        self.done += runs
        self.failed += failed
        self.done_cost += cost
        self.show()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        if self.done_cost > 0 and self.done < self.total:
            left = format_seconds(elapsed * (self.total_cost - self.done_cost) / self.done_cost)
        elif self.done >= self.total:
            left = "0s"
        else:
            left = "?"
        return (f"sweep: {self.done}/{self.total} done, {self.failed} failed, {self.running} running, "
                f"elapsed {format_seconds(elapsed)}, ~{left} left")

    def show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.live:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
        elif force or now - self.last_shown >= self.interval:
            self.last_shown = now
            log.info("%s", self.line())

    def clear(self) -> None:
        """Erase the live line so that a log line can be printed in its place."""
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K" + self.line() + "\n")
            self.stream.flush()
        else:
            log.info("%s", self.line())
