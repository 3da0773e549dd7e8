"""Warnings about what a domain wrote into xenstore, rate-limited per domain and summarised.

A guest or driver domain controls how often its nodes change, so without a limit it controls how much
dom0 logs: a thousand bad `mac` writes must not become a thousand journal lines, nor bury the warnings
about every other domain. Each source domain may cause BURST warnings per WINDOW; the rest are counted
and said in one line when its window ends (at its next warning or at the next `flush`, which the
registry calls on every resync).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

BURST = 5
WINDOW = 60.0


@dataclass
class _Window:
    started: float
    said: int = 0
    suppressed: int = 0


class Complaints:
    def __init__(
        self,
        log: logging.Logger,
        *,
        burst: int = BURST,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._burst = burst
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[int, _Window] = {}

    def warn(self, source: int, message: str, *args: object) -> None:
        """Log `message % args` as a warning about domain `source`, unless its burst is spent."""
        now = self._clock()
        with self._lock:
            summary = self._close_if_over(source, now)
            current = self._windows.setdefault(source, _Window(now))
            speak = current.said < self._burst
            if speak:
                current.said += 1
            else:
                current.suppressed += 1
        if summary:
            self._summarise(source, summary)
        if speak:
            self._log.warning(message, *args)

    def flush(self) -> None:
        """Summarise and forget every window that has ended."""
        now = self._clock()
        with self._lock:
            ended = [(source, self._close_if_over(source, now)) for source in list(self._windows)]
        for source, suppressed in ended:
            if suppressed:
                self._summarise(source, suppressed)

    def _close_if_over(self, source: int, now: float) -> int:
        current = self._windows.get(source)
        if current is None or now - current.started < self._window:
            return 0
        del self._windows[source]
        return current.suppressed

    def _summarise(self, source: int, suppressed: int) -> None:
        self._log.warning(
            "domain %d: %d more warning(s) about its xenstore nodes suppressed in the last %.0f s",
            source,
            suppressed,
            self._window,
        )
