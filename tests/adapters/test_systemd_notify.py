"""sd_notify as the daemon sends it: one datagram per message, never waiting for a manager that does not
read (its socket's queue full, a blocking send would hold the daemon's loop and SIGTERM with it)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from xenddd.adapters.systemd import Notifier


def test_messages_reach_the_socket_as_key_value_lines(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        Notifier(str(tmp_path / "notify")).ready("1 driver domain(s)")
        assert manager.recv(4096).decode().splitlines() == ["READY=1", "STATUS=1 driver domain(s)"]


def test_a_manager_that_stops_reading_loses_messages_with_one_warning_and_never_holds_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        notifier = Notifier(str(tmp_path / "notify"))
        with caplog.at_level(logging.WARNING, logger="xenddd.adapters.systemd"):
            # far more than any queue length a host allows by default (net.unix.max_dgram_qlen: 10); with a
            # blocking send the eleventh would wait for a read that never comes
            for _ in range(1000):
                notifier.watchdog()
            notifier.stopping()
        assert len(caplog.records) == 1 and "cannot notify systemd" in caplog.records[0].getMessage()
        manager.setblocking(False)
        queued = []
        while True:
            try:
                queued.append(manager.recv(4096))
            except BlockingIOError:
                break
        assert 0 < len(queued) < 1000 and all(message == b"WATCHDOG=1" for message in queued)
