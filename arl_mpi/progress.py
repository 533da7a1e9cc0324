"""Progress lines for long steps (ingest, simulation): rate-limited, with an estimate of the time left.

A :class:`Progress` logs at INFO at most once every ``interval_s`` seconds (default 5), so a
batch log gets a handful of lines per step rather than one per row block, and nothing at all
when the logger's level is WARNING or above.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``'42 s'``, ``'3 min 5 s'`` or ``'2 h 07 min'``."""
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int((s % 3600) // 60):02d} min"


class Progress:
    """Count work done on a step of known size and log it now and then.

    Parameters
    ----------
    what : str
        What is being done, for the log line (``'ingest of obs.ms'``).
    total : float
        Units of work in the whole step (rows, visibilities, partitions); > 0.
    logger : logging.Logger
        Where the lines go (INFO).
    unit : str
        Name of the unit in the line (``'rows'``).
    interval_s : float
        Least time between two lines.
    clock : callable
        Monotonic clock (tests pass a fake one).

    Examples
    --------
    >>> p = Progress("ingest of obs.ms", 1000, log, unit="rows")  # doctest: +SKIP
    >>> for block in blocks:  # doctest: +SKIP
    ...     p.update(len(block))
    >>> p.done()  # doctest: +SKIP
    """

    def __init__(
        self,
        what: str,
        total: float,
        logger: logging.Logger,
        *,
        unit: str = "",
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = max(float(total), 1e-300)
        self.log = logger
        self.unit = f" {unit}" if unit else ""
        self.interval_s = float(interval_s)
        self.clock = clock
        self.start = clock()
        self.last = self.start
        self.count = 0.0
        self.lines = 0

    def line(self) -> str:
        """The progress line for the count so far."""
        elapsed = self.clock() - self.start
        frac = min(self.count / self.total, 1.0)
        left = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        eta = format_seconds(left) if frac > 0 else "unknown"
        return (
            f"{self.what}: {frac * 100:.0f}% ({self.count:.0f}/{self.total:.0f}{self.unit}) "
            f"after {format_seconds(elapsed)}, about {eta} left"
        )

    def update(self, n: float = 1) -> None:
        """Add ``n`` units done; log a line if ``interval_s`` has passed since the last one."""
        self.count += n
        now = self.clock()
        if now - self.last >= self.interval_s and self.log.isEnabledFor(logging.INFO):
            self.last = now
            self.lines += 1
            self.log.info("%s", self.line())

    def done(self) -> None:
        """Log the step's total time, once, if the step took longer than ``interval_s``."""
        elapsed = self.clock() - self.start
        if elapsed >= self.interval_s and self.log.isEnabledFor(logging.INFO):
            self.lines += 1
            self.log.info("%s: done (%.0f%s) in %s", self.what, self.count, self.unit, format_seconds(elapsed))
