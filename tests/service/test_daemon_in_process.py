"""Stopping the daemon leaves the driver domains running; metrics describe what it did."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from xenddd.adapters.systemd import Notifier
from xenddd.config.loader import parse_config
from xenddd.config.spec import Config
from xenddd.hints import DomainHint, XenstoreHint
from xenddd.service import daemon as daemon_module
from xenddd.service.daemon import Daemon
from xenddd.service.simulated import simulated_runtime
from xenddd.sim.socket_host import SimulatedHost


def start_with_domnet_running(config: Config, sim: SimulatedHost) -> tuple[Daemon, threading.Thread]:
    daemon = Daemon(config, simulated_runtime(sim, config))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    deadline = time.monotonic() + 20
    while sim.host.domains.get("domnet") is None or sim.host.domains["domnet"].domid is None:
        assert time.monotonic() < deadline, "domnet never started"
        time.sleep(0.02)
    return daemon, thread


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
        daemon, thread = start_with_domnet_running(config, sim)
        domid = sim.host.domains["domnet"].domid
        daemon.stop()
        thread.join(20)
        assert not thread.is_alive()
        assert sim.host.domains["domnet"].domid == domid
        metrics = (tmp_path / "metrics/xenddd.prom").read_text()
        assert "# TYPE xenddd_restarts_total counter" in metrics
        assert 'xenddd_restarts_total{driver_domain="domnet",trigger="automatic"} 0' in metrics
        assert 'xenddd_restarts_total{driver_domain="domnet",trigger="operator"} 0' in metrics
        assert "xenddd_mttr_seconds_count 0" in metrics
    finally:
        sim.stop()


def test_a_toolstack_that_fails_to_describe_a_dying_domain_does_not_stop_the_daemon(tmp_path: Path) -> None:
    """Seen on real Xen: libxl_domain_info fails for a domain that is being torn down after a crash."""
    from xenddd.adapters.hypervisor_api import DomainInfo
    from xenddd.errors import XendddError
    from xenddd.sim.hypervisor import SimHypervisor

    class DyingDomainHypervisor(SimHypervisor):
        failures = 0

        def domains(self) -> list[DomainInfo]:
            if self.failures:
                self.failures -= 1
                raise XendddError("listing domains: internal error: libxl_domain_info failed for domain '1'")
            return super().domains()

    config = parse_config(
        f'[xenddd]\nstate_dir = "{tmp_path}/state"\ncontrol_socket = "{tmp_path}/c.sock"\n'
        '[[driver_domain]]\nname = "domnet"\nkind = "network"\nkernel = "/k"\n'
        "[driver_domain.restart]\nbackoff_base = 0.05\nbackoff_cap = 0.1\n",
        tmp_path / "x.toml",
    )
    sim = SimulatedHost.start(tmp_path / "xs.sock")
    sim.hypervisor = DyingDomainHypervisor(sim.host)
    try:
        daemon, thread = start_with_domnet_running(config, sim)
        deadline = time.monotonic() + 20
        sim.hypervisor.failures = 6
        sim.host.crash("domnet")
        while not any(r["event"] == "recovered" for r in daemon.history.since()):
            assert thread.is_alive(), "the daemon died"
            assert time.monotonic() < deadline + 20, "no recovery"
            time.sleep(0.02)
        daemon.stop()
        thread.join(20)
    finally:
        sim.stop()


def test_each_driver_domain_of_a_pass_extends_the_start_timeout_then_pings_the_watchdog_once_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that starts several driver domains on a slow host is progress, not a hang: before READY=1
    each domain's turn extends the start timeout; after it, a turn pings the watchdog if one is due."""
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # a ping due every second
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    sent: list[dict[str, str | int]] = []

    class Recording(Notifier):
        def notify(self, **fields: str | int) -> bool:
            sent.append(fields)
            return True

    config = parse_config(
        f'[xenddd]\nstate_dir = "{tmp_path}/state"\n[[driver_domain]]\nname = "domnet"\nkind = "network"\n'
        'kernel = "/k"\n',
        tmp_path / "x.toml",
    )
    daemon = Daemon(config, runtime=None, notifier=Recording(""))  # type: ignore[arg-type]
    daemon._progress("domnet")
    assert sent == [{"extend_timeout_usec": 300_000_000, "status": "initial reconcile: domnet"}]

    daemon._ready = True
    daemon._progress("domnet")
    daemon._progress("domstore")  # within the second: not due again
    assert sent[1:] == [{"watchdog": 1}]


def test_the_installed_config_runs_a_daemon_that_does_nothing(tmp_path: Path) -> None:
    """`systemctl enable --now xenddd` right after scripts/install must hide no device, start no domain."""
    from dataclasses import replace

    from xenddd.config.loader import INSTALLED_CONFIG_PATH, load_config
    from xenddd.service.control import request

    installed = load_config(INSTALLED_CONFIG_PATH)
    assert installed.driver_domains == ()
    settings = replace(installed.settings, state_dir=tmp_path / "state", control_socket=tmp_path / "c.sock")
    sim = SimulatedHost.start(tmp_path / "xs.sock")
    try:
        daemon = Daemon(replace(installed, settings=settings), simulated_runtime(sim, installed))
        thread = threading.Thread(target=daemon.run)
        thread.start()
        deadline = time.monotonic() + 20
        while not any(r["event"] == "daemon-started" for r in daemon.history.since()):
            assert thread.is_alive() and time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.02)
        answer = request(tmp_path / "c.sock", "status")
        assert answer["ok"] and answer["driver_domains"] == []
        assert sim.host.domains == {}
        daemon.stop()
        thread.join(20)
        assert not thread.is_alive()
    finally:
        sim.stop()


def test_a_domain_event_ends_the_wait_for_more_hints_and_takes_what_is_queued_along(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed driver domain's nodes are removed before its lifecycle event comes: the pass for the
    burst must not then wait out the coalescing window, or every crash is detected that much later."""
    monkeypatch.setattr(daemon_module, "COALESCE", 60.0)
    config = parse_config(
        f'[xenddd]\nstate_dir = "{tmp_path}/state"\ncontrol_socket = "{tmp_path}/control.sock"\n',
        tmp_path / "x.toml",
    )
    sim = SimulatedHost.start(tmp_path / "xs.sock")
    try:
        daemon = Daemon(config, simulated_runtime(sim, config))
        burst = [
            XenstoreHint("/local/domain/1/backend/vif/2/0"),
            DomainHint("libvirt", name="domnet", domid=1),
            XenstoreHint("/local/domain/1/backend/vif/3/0"),
        ]
        for hint in burst:
            daemon.hints.put(hint)
        started = time.monotonic()
        assert daemon._drain(1.0) == burst
        assert time.monotonic() - started < 30.0  # not the 60 s window
        daemon.runtime.close()
    finally:
        sim.stop()


def test_the_status_line_goes_to_systemd_when_it_changes_not_after_every_pass(tmp_path: Path) -> None:
    """A recovery's watch events make passes many times a second; each used to send systemd the same
    line again."""
    from xenddd.service.control import request

    statuses: list[str] = []

    class Recording(Notifier):
        def notify(self, **fields: str | int) -> bool:
            if "status" in fields and "ready" not in fields:
                statuses.append(str(fields["status"]))
            return True

    config = parse_config(
        f"""
[xenddd]
state_dir = "{tmp_path}/state"
control_socket = "{tmp_path}/control.sock"
[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/k"
[driver_domain.restart]
backoff_base = 0
[driver_domain.readiness]
condition = "xenstore-key"
key = "data/ready"
""",
        tmp_path / "x.toml",
    )
    sim = SimulatedHost.start(tmp_path / "xs.sock", boot_delay=0.3)  # the recovery spans passes
    daemon = Daemon(config, simulated_runtime(sim, config), notifier=Recording(""))
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not any(r["event"] == "daemon-started" for r in daemon.history.since()):
            assert time.monotonic() < deadline, "the daemon never started"
            time.sleep(0.02)
        before = len(statuses)
        for _ in range(5):  # a pass each
            assert request(tmp_path / "control.sock", "status")["ok"]
        assert len(statuses) == before  # nothing changed: nothing sent
        sim.host.crash("domnet")
        while not any(r["event"] == "recovered" for r in daemon.history.since()):
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.02)
        assert request(tmp_path / "control.sock", "status")["ok"]
        assert statuses[before:] == ["1 driver domain(s), recovering domnet", "1 driver domain(s)"]
    finally:
        daemon.stop()
        thread.join(20)
        sim.stop()
