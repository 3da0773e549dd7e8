"""A daemon on a simulated host, in this process, for the commands that talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenddd.cli.main import cli
from xenddd.config.loader import load_config
from xenddd.service.daemon import Daemon
from xenddd.service.simulated import simulated_runtime
from xenddd.sim.socket_host import SimulatedHost

CONFIG = """
[xenddd]
state_dir = "{tmp}/state"
control_socket = "{tmp}/control.sock"
metrics_textfile = "{tmp}/metrics.prom"

[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/boot/dd"
[driver_domain.readiness]
condition = "running"
[driver_domain.restart]
backoff_base = 0.0
backoff_cap = 0.0
"""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, SimulatedHost, Daemon]]:
    path = tmp_path / "xenddd.toml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    config = load_config(path)
    sim = SimulatedHost.start(tmp_path / "xs.sock")
    daemon = Daemon(config, simulated_runtime(sim, config), config_path=path)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        wait_for(daemon, "daemon-started")
        yield path, sim, daemon
    finally:
        daemon.stop()
        thread.join(20)
        sim.stop()


def wait_for(daemon: Daemon, event: str, count: int = 1) -> None:
    deadline = time.monotonic() + 20
    while sum(r["event"] == event for r in daemon.history.since()) < count:
        assert time.monotonic() < deadline, f"no {event}"
        time.sleep(0.02)


def spawn_daemon(config: Path, **env: str) -> subprocess.Popen[bytes]:
    """`xenddd daemon --simulate` in a process of its own, told nothing of a systemd running the tests;
    `env`: more of its environment."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    return subprocess.Popen(
        [sys.executable, "-m", "xenddd", "--config", str(config), "daemon", "--simulate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**inherited, **env},
    )


@contextmanager
def answering_daemon(config: Path, deadline: float) -> Iterator[subprocess.Popen[bytes]]:
    """A spawned daemon, handed over once `status` answers (by `deadline`, time.monotonic). On the way
    out it gets SIGTERM; one still running 20 s later is killed, and the test fails."""
    daemon = spawn_daemon(config)
    try:
        while CliRunner().invoke(cli, ["--config", str(config), "status"]).exit_code != 0:
            assert time.monotonic() < deadline, "the daemon never answered"
            time.sleep(0.1)
        yield daemon
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
                raise AssertionError("the daemon did not stop on SIGTERM") from None
