"""systemd integration: sd_notify over NOTIFY_SOCKET, the watchdog interval, and the journal.

Under systemd, log records and history events go to the journal with fields of their own (DRIVER_DOMAIN=,
INCIDENT=, GUEST=, XENDDD_EVENT=, PRIORITY=) through python3-systemd's JournalHandler, so that
`journalctl -u xenddd DRIVER_DOMAIN=domnet` tells one domain's story; without python3-systemd (optional),
plain lines on stderr with a `<N>` priority prefix, which journald understands, and no fields.

The notify protocol is one AF_UNIX datagram of `KEY=VALUE` lines; a socket name starting with `@` is in the
abstract namespace. Errors are logged once, never raised: a lost status line must not stop the daemon, but
silently swallowing them (as the `sdnotify` package does) would hide a broken unit. A datagram is sent
without waiting: a manager that stops reading lets its socket's queue fill (ten datagrams by default,
`net.unix.max_dgram_qlen`), and a blocking send would then hold the daemon's loop — and with it SIGTERM —
for as long as the manager does not read; the message is dropped instead.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

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

    def notify(self, **fields: str | int) -> bool:
        """True once the message is on the manager's socket (never outside systemd)."""
        if not self._address:
            return False
        payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        target = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, socket.MSG_DONTWAIT, target)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self._address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> None:
        self.notify(ready=1, status=status)

    def status(self, text: str) -> bool:
        return self.notify(status=text)

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


def configure_logging(level: str) -> bool:
    """To the journal under systemd (JOURNAL_STREAM set), plain lines on a terminal. True when records
    reach the journal with their fields (python3-systemd installed)."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    structured = False
    if os.environ.get("JOURNAL_STREAM"):
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
        else:
            handler = JournalHandler(SYSLOG_IDENTIFIER="xenddd")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            structured = True
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return structured


# History events worse than routine, by name; every other event is INFO.
_EVENT_LEVELS = {
    "detected": logging.WARNING,
    "dropped": logging.WARNING,
    "not-ready": logging.WARNING,
    "reattach-failed": logging.WARNING,
    "state-damaged": logging.WARNING,
    "unresponsive": logging.WARNING,
    "error": logging.ERROR,
    "failed": logging.ERROR,
    "reload-failed": logging.ERROR,
    "restart-failed": logging.ERROR,
}
_JOURNAL_FIELDS = {"driver_domain": "DRIVER_DOMAIN", "incident": "INCIDENT", "guest": "GUEST"}
_events_log = logging.getLogger("xenddd.events")


def journal_event(record: dict[str, Any]) -> None:
    """One history event as one journal entry, its driver domain, incident and guest as fields."""
    fields = {"XENDDD_EVENT": str(record["event"])}
    fields.update({field: str(record[key]) for key, field in _JOURNAL_FIELDS.items() if key in record})
    details = " ".join(f"{k}={v}" for k, v in record.items() if k not in ("seq", "ts", "event"))
    _events_log.log(
        _EVENT_LEVELS.get(record["event"], logging.INFO), "%s %s", record["event"], details, extra=fields
    )
