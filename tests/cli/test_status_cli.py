"""`status` and `list` say how a driver domain last stopped and how long its repair took, and `status`
says when a reload kept the running config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli.conftest import CONFIG, answering_daemon, wait_for
from xenddd.cli.main import cli
from xenddd.cli.service_cmd import in_place_line, saved_instance_line, standby_line
from xenddd.service.daemon import Daemon
from xenddd.sim.socket_host import SimulatedHost


@pytest.mark.parametrize(("fault", "reason"), [("crash", "crashed"), ("destroy", "destroyed")])
def test_status_and_list_show_how_the_last_incident_began_and_its_mttr(
    running: tuple[Path, SimulatedHost, Daemon], fault: str, reason: str
) -> None:
    config, sim, daemon = running
    getattr(sim.host, fault)("domnet")
    wait_for(daemon, "recovered")
    (detected,) = [r for r in daemon.history.since() if r["event"] == "detected"]
    assert detected["reason"] == reason

    for command in ("status", "list"):
        result = CliRunner().invoke(cli, ["--config", str(config), command])
        assert result.exit_code == 0, result.output
        assert f" {reason}, MTTR " in result.stdout
        document = json.loads(CliRunner().invoke(cli, ["--json", "--config", str(config), command]).stdout)
        domains = document["items"]
        assert domains[0]["last_incident"]["reason"] == reason
        assert "last_crash" not in domains[0] and "last" not in domains[0]


@pytest.mark.slow
def test_status_says_when_a_reload_kept_the_running_config(tmp_path: Path) -> None:
    config = tmp_path / "xenddd.toml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    deadline = time.monotonic() + 30
    with answering_daemon(config, deadline) as daemon:
        config.write_text(CONFIG.format(tmp=tmp_path) + "memory = -1\n")
        daemon.send_signal(signal.SIGHUP)
        while "reload failed" not in (
            out := CliRunner().invoke(cli, ["--config", str(config), "status"]).stdout
        ):
            assert time.monotonic() < deadline, f"status never said the reload failed: {out}"
            time.sleep(0.1)
        assert f"reload failed, running the previous config: {config}:" in out  # though the file is invalid


@pytest.mark.slow
def test_a_storm_of_sighups_leaves_a_daemon_that_answers_and_stops(tmp_path: Path) -> None:
    """The handlers run on the main thread between two of its bytecodes, inside a wait for hints among
    them: a handler that takes a lock the main thread holds there never returns (the hint queue's own
    lock hung this daemon, in the test above, once in CI). 2,000 SIGHUPs a millisecond apart found it
    in one run of three before the fix; after them the daemon must answer and stop on SIGTERM."""
    config = tmp_path / "xenddd.toml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    with answering_daemon(config, time.monotonic() + 30) as daemon:
        for _ in range(2000):
            daemon.send_signal(signal.SIGHUP)
            time.sleep(0.001)
        answered = subprocess.run(
            [sys.executable, "-m", "xenddd", "--config", str(config), "status"],
            capture_output=True,
            timeout=20,
            check=False,
        )
        assert answered.returncode == 0, answered.stderr
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0


def test_status_tells_a_recovery_whose_first_restart_was_not_ready_apart(tmp_path: Path) -> None:
    import threading

    from xenddd.config.loader import load_config
    from xenddd.service.simulated import simulated_runtime

    path = tmp_path / "xenddd.toml"
    path.write_text(
        CONFIG.format(tmp=tmp_path).replace(
            'condition = "running"', 'condition = "xenstore-key"\ntimeout = 1.0'
        )
    )
    config = load_config(path)
    sim = SimulatedHost.start(tmp_path / "xs.sock")
    daemon = Daemon(config, simulated_runtime(sim, config), config_path=path)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        wait_for(daemon, "daemon-started")
        sim.host.create_guest("web", vif=("domnet",))
        deadline = time.monotonic() + 20
        while (
            json.loads(CliRunner().invoke(cli, ["--config", str(path), "list", "--json"]).stdout)["items"][0][
                "frontends"
            ]
            != 1
        ):
            assert time.monotonic() < deadline, "web's vif never registered"
            time.sleep(0.05)
        sim.host.boot_delay = 60.0  # its next instance is not ready in time
        sim.host.crash("domnet")
        wait_for(daemon, "not-ready")
        sim.host.boot_delay = 0.0
        wait_for(daemon, "recovered")
        result = CliRunner().invoke(cli, ["--config", str(path), "status"])
        assert " crashed, then not ready in time, MTTR " in result.stdout
    finally:
        daemon.stop()
        thread.join(20)
        sim.stop()


def test_status_names_a_slow_toolstack_call(
    running: tuple[Path, SimulatedHost, Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recovery that does not end waits on something; a call that is slow is what status shows first."""
    import threading

    import xenddd.service.daemon as daemon_module

    config, _sim, daemon = running
    monkeypatch.setattr(daemon_module, "SLOW_CALL_SHOWN", 0.2)
    assert daemon._wiring is not None
    release = threading.Event()
    daemon._wiring.reconciler.calls.submit(
        ("test", "slow"), "domnet: attach fe vif 0", lambda: release.wait(10)
    )
    try:
        time.sleep(0.3)
        result = CliRunner().invoke(cli, ["--config", str(config), "status"])
        assert result.exit_code == 0, result.output
        assert (
            "toolstack call running for " in result.stdout and "s: domnet: attach fe vif 0" in result.stdout
        )
    finally:
        release.set()
    wait_until_quiet = time.monotonic() + 5
    while "toolstack call" in CliRunner().invoke(cli, ["--config", str(config), "status"]).stdout:
        assert time.monotonic() < wait_until_quiet, "status kept naming a call that returned"
        time.sleep(0.05)


def test_status_says_what_a_standby_is_doing_and_costs() -> None:
    ready = {"name": "domnet-standby", "domid": 7, "state": "ready", "memory_mib": 128, "error": None}
    assert standby_line("domnet", ready) == "domnet: standby domnet-standby ready as domid 7 (128 MiB)"
    failed = ready | {"domid": None, "state": "absent", "error": "out of memory"}
    assert standby_line("domnet", failed) == (
        "domnet: standby domnet-standby absent (128 MiB); last start failed: out of memory"
    )


def test_status_names_the_guests_an_in_place_driver_domain_reattaches_all_the_same() -> None:
    domnet = {"name": "domnet", "reconnect": "in-place", "reattach_guests": []}
    assert in_place_line(domnet) == (
        "domnet: reconnects its guests in place (restarted as the same domid, nothing detached)"
    )
    assert in_place_line(domnet | {"reattach_guests": ["db", "raid1"]}).endswith(", but reattaches db, raid1")


def test_a_saved_instance_line_says_whether_starts_restore_or_boot() -> None:
    path = "/var/lib/xenddd/saved/domnet.save"
    current = {"path": path, "file": {"bytes": 134 << 20, "current": True}, "saving": False, "error": None}
    assert saved_instance_line("domnet", current) == (
        f"domnet: saved instance {path} restored at its starts (134 MiB on disk)"
    )
    stale = {**current, "file": {"bytes": 1, "current": False}}
    assert "saved under another definition: booted" in saved_instance_line("domnet", stale)
    failed = {**current, "file": None, "error": "domnet: saving it failed: no space"}
    assert saved_instance_line("domnet", failed) == (
        f"domnet: saved instance {path} not saved yet: booted at its starts until it is saved, once it "
        "serves nothing; last save failed: domnet: saving it failed: no space"
    )
    assert saved_instance_line("domnet", {**current, "saving": True}).endswith("being saved")


def test_status_counts_the_passes_and_names_the_threads_that_spent_the_cpu(
    running: tuple[Path, SimulatedHost, Daemon],
) -> None:
    config, sim, daemon = running

    def health() -> dict[str, object]:
        document = json.loads(CliRunner().invoke(cli, ["--json", "--config", str(config), "status"]).stdout)
        daemon_health: dict[str, object] = document["daemon"]
        return daemon_health

    before = health()
    sim.host.crash("domnet")
    wait_for(daemon, "recovered")
    after = health()
    assert isinstance(before["passes"], int) and isinstance(after["passes"], int)
    assert after["passes"] > before["passes"] >= 1  # each status request is a pass, the recovery more
    assert isinstance(after["pass_seconds"], float) and after["pass_seconds"] > 0
    assert isinstance(before["xenstore_requests"], int) and isinstance(after["xenstore_requests"], int)
    assert after["xenstore_requests"] > before["xenstore_requests"]  # the recovery read and wrote
    assert isinstance(after["watch_events"], int) and after["watch_events"] > 0
    stages = after["pass_cpu_seconds"]
    assert isinstance(stages, dict) and {"listing", "registry", "domains"} <= set(stages)
    threads = after["threads_cpu_seconds"]
    assert isinstance(threads, dict) and "xenddd-backend-watcher" in threads
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in threads.values())
    text = CliRunner().invoke(cli, ["--config", str(config), "status"]).stdout
    assert "work: " in text and " passes in " in text and " s of CPU" in text
