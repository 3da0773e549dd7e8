"""systemd integration without libsystemd: sd_notify over NOTIFY_SOCKET, the watchdog interval, and
journal-friendly log lines.

The notify protocol is one AF_UNIX datagram of `KEY=VALUE` lines; a socket name starting with `@` is in the
abstract namespace. Errors are logged once, never raised: a lost status line must not stop the daemon, but
silently swallowing them (as the `sdnotify` package does) would hide a broken unit.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

log = logging.getLogger(__name__)

# syslog priorities for the `<N>` prefixes systemd-journald understands on a service's stderr
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class Notifier:
    """Sends sd_notify messages; does nothing outside systemd (no NOTIFY_SOCKET)."""

    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields: str | int) -> None:
        if not self._address:
            return
        payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        target = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, target)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self._address, exc)
                self._warned = True

    def ready(self, status: str) -> None:
        self.notify(ready=1, status=status)

    def status(self, text: str) -> None:
        self.notify(status=text)

    def watchdog(self) -> None:
        self.notify(watchdog=1)

    def extend_timeout(self, seconds: float, status: str) -> None:
        """While starting: "still working, give me `seconds` more" (systemd 236+), each time it progresses."""
        self.notify(extend_timeout_usec=int(seconds * 1_000_000), status=status)

    def stopping(self) -> None:
        self.notify(stopping=1, status="stopping")

    def reloading(self) -> None:
        self.notify(reloading=1, status="reloading configuration")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as sd_watchdog_enabled advises), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class _JournalFormatter(logging.Formatter):
    """`<N>` priority prefix and no timestamp: journald adds its own and maps N to the entry's priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def configure_logging(level: str) -> None:
    """Structured for the journal under systemd (JOURNAL_STREAM set), plain lines on a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
