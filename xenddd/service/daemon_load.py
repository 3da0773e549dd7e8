"""What the daemon's own work costs its host, for `status`: its passes, and the CPU time of each of its
threads by name. On a busy dom0 (and on the emulated test bed, where every domain shares two processors)
the daemon's CPU is taken from the recovery it drives: the driver domain's boot, the guests' handshakes.
Which thread spends it — the passes on the main thread, the xenstore router, the backend watcher, the
toolstack calls' workers — says where to look when a recovery is slow. Reads only this process's clocks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class PassCount:
    """The passes run since the daemon started and the time they took, as the loop counts them."""

    passes: int = 0
    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.passes += 1
        self.seconds += seconds


def threads_cpu_seconds() -> dict[str, float]:
    """The CPU time of each running thread, summed by name (a pool's workers share their pool's prefix
    and are told apart by a number, which two pools of one lane kind repeat). A thread that has ended is
    not listed; the process's total (time.process_time) still counts it."""
    used: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:
            continue  # ended between the enumeration and the look
        used[thread.name] = round(used.get(thread.name, 0.0) + seconds, 3)
    return used
