"""Stopping the daemon leaves the driver domains running; metrics describe what it did."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from xenddd.config import parse_config
from xenddd.service.daemon import Daemon
from xenddd.sim.runtime import SimulatedHost


def test_stopping_the_daemon_leaves_driver_domains_running_and_metrics_written(tmp_path: Path) -> None:
    config = parse_config(
        f"""
[xenddd]
state_dir = "{tmp_path}/state"
control_socket = "{tmp_path}/control.sock"
metrics_textfile = "{tmp_path}/metrics/xenddd.prom"
[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/k"
""",
        tmp_path / "x.toml",
    )
    sim = SimulatedHost.start(tmp_path / "xs.sock")
    try:
        daemon = Daemon(config, sim.runtime(config))
        thread = threading.Thread(target=daemon.run)
        thread.start()
        deadline = time.monotonic() + 20
        while sim.host.domains.get("domnet") is None or sim.host.domains["domnet"].domid is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        domid = sim.host.domains["domnet"].domid
        daemon.stop()
        thread.join(20)
        assert not thread.is_alive()
        assert sim.host.domains["domnet"].domid == domid
        metrics = (tmp_path / "metrics/xenddd.prom").read_text()
        assert 'xenddd_restarts{driver_domain="domnet"} 0' in metrics
        assert "xenddd_mttr_seconds_count 0" in metrics and metrics.endswith("# EOF\n")
    finally:
        sim.stop()
