"""One daemon per state directory: an exclusive flock on `<state_dir>/daemon.lock`, held for its life.

Two daemons on one host would both hide PCI devices, restart the same driver domain and rewrite the same
records. The lock is taken before anything is touched (the interrupted PCI steps, the control socket);
the second daemon exits with one line naming the first one's pid, which the holder writes into the file.
flock belongs to the open file, so the kernel drops it when the holder exits however it exits: a lock
file left by a killed daemon blocks nobody, and it is never removed (unlinking it would let a third
daemon lock a fresh file while the second still holds the old one).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xenddd.errors import XendddError

LOCK_FILE = "daemon.lock"


@contextmanager
def daemon_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's daemon lock for the `with` block; XendddError if another holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise XendddError(
                f"another xenddd daemon is running (pid {_holder(fd)}) and holds {path}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """The pid the holder wrote; 'unknown' in the instant between its flock and its write."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
