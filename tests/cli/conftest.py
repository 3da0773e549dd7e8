"""A daemon on a simulated host, in this process, for the commands that talk to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
