"""The main thread's CPU time in each stage of the reconciler's passes, summed since the daemon started,
for `status`: on a loaded dom0 a pass can take seconds, and which stage takes them (the toolstacks'
listing, the registry's re-read, a driver domain's recovery steps) says where its cost lies."""

from __future__ import annotations

import time


class StageClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.thread_time()

    def stage(self, name: str) -> None:
        """The CPU time since the last call goes to stage `name`; "" begins a pass (it goes nowhere)."""
        now = time.thread_time()
        if name:
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self._mark
        self._mark = now
