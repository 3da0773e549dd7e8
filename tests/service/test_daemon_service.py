"""The daemon as systemd runs it: notify protocol, watchdog, control socket, signals, reload."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenddd.errors import XendddError
from xenddd.service.control import request

CONFIG = """
[xenddd]
state_dir = "{tmp}/state"
control_socket = "{tmp}/control.sock"
log_level = "info"

[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/boot/dd"

[[simulation.guest]]
name = "web"
vif = ["domnet"]
"""

EXTRA_DOMAIN = """
[[driver_domain]]
name = "domstore"
kind = "block"
kernel = "/boot/dd"
"""


class Notifications:
    """A real datagram socket standing in for systemd's NOTIFY_SOCKET, read all the time as systemd reads
    it (the daemon drops what a full socket queue would hold it for)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.received.append(message)

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self.sock.close()

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for message in self.received:
                    if key in message and (value is None or message[key] == value):
                        self.received.remove(message)
                        return message
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value or '*'} notification within {timeout} s; got {self.received}")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Notifications, Path]]:
    config = tmp_path / "xenddd.toml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    notifications = Notifications(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notifications.path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    # its log to a file, which nothing has to read for the daemon to go on (a pipe holds 64 KiB)
    with open(tmp_path / "daemon.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "xenddd", "--config", str(config), "daemon", "--simulate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    yield process, notifications, config
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    notifications.close()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xenddd", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ready_only_after_the_initial_reconcile_then_watchdog_and_status(daemon) -> None:  # type: ignore[no-untyped-def]
    process, notifications, config = daemon
    status = notifications.wait_for("STATUS")
    assert status["STATUS"].startswith(("starting", "initial reconcile"))
    # each driver domain's turn in the first pass extends systemd's start timeout (a slow host is not a hang)
    extended = notifications.wait_for("EXTEND_TIMEOUT_USEC")
    assert int(extended["EXTEND_TIMEOUT_USEC"]) >= 60_000_000 and extended["STATUS"].endswith("domnet")
    ready = notifications.wait_for("READY", "1")
    assert ready["STATUS"] == "1 driver domain(s)"
    # READY came after the reconcile: the driver domain is already running when it arrives
    answer = request(config.parent / "control.sock", "status")
    assert answer["ok"] and answer["driver_domains"][0]["domid"] is not None
    notifications.wait_for("WATCHDOG", "1", timeout=10)
    notifications.wait_for("WATCHDOG", "1", timeout=10)

    result = cli(config, "status")
    assert result.returncode == 0, result.stderr
    assert "simulated host" in result.stdout and "domnet" in result.stdout
    listing = json.loads(cli(config, "--json", "list").stdout)
    assert listing["version"] == 1 and [d["name"] for d in listing["items"]] == ["domnet"]
    events = cli(config, "events")
    assert "daemon-started" in events.stdout and "started" in events.stdout

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    notifications.wait_for("STOPPING", "1")


def test_sighup_reloads_the_config_and_adds_a_driver_domain(daemon) -> None:  # type: ignore[no-untyped-def]
    process, notifications, config = daemon
    notifications.wait_for("READY", "1")
    config.write_text(config.read_text() + EXTRA_DOMAIN)
    process.send_signal(signal.SIGHUP)
    notifications.wait_for("RELOADING", "1")
    notifications.wait_for(
        "READY", "1"
    )  # else systemd keeps the unit "reloading" and `systemctl reload` hangs
    deadline = time.monotonic() + 20
    while True:
        names = {d["name"]: d for d in request(config.parent / "control.sock", "status")["driver_domains"]}
        if "domstore" in names and names["domstore"]["domid"] is not None:
            break
        assert time.monotonic() < deadline, f"domstore never started after SIGHUP: {names}"
        time.sleep(0.05)
    assert names["domnet"]["restarts"] == 0  # the unchanged domain was not touched


def answers_ping(control_socket: Path, pid: int) -> bool:
    try:
        return request(control_socket, "ping", timeout=5).get("pid") == pid
    except XendddError:
        return False


def test_a_second_daemon_exits_1_naming_the_first_and_a_killed_ones_lock_blocks_nobody(daemon) -> None:  # type: ignore[no-untyped-def]
    process, notifications, config = daemon
    notifications.wait_for("READY", "1")

    second = cli(config, "daemon", "--simulate")
    assert second.returncode == 1
    assert second.stderr == (
        f"xenddd: another xenddd daemon is running (pid {process.pid}) "
        f"and holds {config.parent}/state/daemon.lock\n"
    )
    assert request(config.parent / "control.sock", "ping") == {"version": 1, "ok": True, "pid": process.pid}

    process.kill()  # SIGKILL: the lock file stays behind, naming a dead pid
    process.wait(timeout=10)
    # the third runs on a fresh simulated host: without the guest, which the first one's host had
    config.write_text(config.read_text().split("[[simulation.guest]]")[0])
    third = subprocess.Popen(
        [sys.executable, "-m", "xenddd", "--config", str(config), "daemon", "--simulate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not answers_ping(config.parent / "control.sock", third.pid):
            assert third.poll() is None, "the third daemon exited"
            assert time.monotonic() < deadline, "the third daemon never answered"
            time.sleep(0.05)
        assert (config.parent / "state/daemon.lock").read_text() == f"{third.pid}\n"
    finally:
        third.terminate()
        assert third.wait(timeout=20) == 0


def test_an_invalid_config_refuses_to_start_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[[driver_domain]]\nname = 'x'\nkind = 'network'\nkernel = '/k'\nvcpus = 0\n")
    result = cli(config, "daemon", "--simulate")
    assert result.returncode == 2
    assert "driver_domain[0].vcpus: must be at least 1" in result.stderr


def test_the_cli_says_plainly_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    config = tmp_path / "xenddd.toml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    result = cli(config, "status")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"xenddd: the xenddd daemon is not running (no one listens on {tmp_path}/control.sock)"
    )


def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "xenddd.service"
    text = (Path(__file__).parents[2] / "systemd/xenddd.service").read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text
    executable = shutil.which("xenddd") or sys.executable
    unit.write_text(text.replace("/usr/bin/xenddd daemon", f"{executable} daemon"))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
