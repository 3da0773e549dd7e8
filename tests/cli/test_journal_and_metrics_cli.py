"""What a daemon leaves for the operator's tools: journal entries with fields, Prometheus-named metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli.conftest import spawn_daemon, wait_for
from tests.cli.simulated_cli import CONFIG, xenddd
from xenddd.cli.main import cli
from xenddd.service.daemon import Daemon
from xenddd.sim.socket_host import SimulatedHost

# Stands in for python3-systemd: what its JournalHandler sends (the record's own fields), one JSON per line.
FAKE_JOURNAL = """
import json, logging, os

class JournalHandler(logging.Handler):
    def __init__(self, level=logging.NOTSET, **fields):
        super().__init__(level)
        self.fields = fields

    def emit(self, record):
        entry = {k: str(v) for k, v in record.__dict__.items() if k.isupper()}
        entry.update(self.fields, MESSAGE=self.format(record), LEVELNO=str(record.levelno))
        with open(os.environ["FAKE_JOURNAL"], "a") as journal:
            journal.write(json.dumps(entry) + "\\n")
"""


@pytest.mark.slow
def test_under_systemd_each_recovery_event_is_a_journal_entry_with_its_driver_domain_and_guest(
    tmp_path: Path,
) -> None:
    (tmp_path / "fake/systemd").mkdir(parents=True)
    (tmp_path / "fake/systemd/__init__.py").write_text("")
    (tmp_path / "fake/systemd/journal.py").write_text(FAKE_JOURNAL)
    journal = tmp_path / "journal.jsonl"
    config = tmp_path / "sim.toml"
    config.write_text(CONFIG)
    daemon = spawn_daemon(
        config, JOURNAL_STREAM="8:1234", FAKE_JOURNAL=str(journal), PYTHONPATH=str(tmp_path / "fake")
    )
    try:
        deadline = time.monotonic() + 30
        while (frontends := _frontends(config)) != 1:
            assert time.monotonic() < deadline, f"web's vif never showed up ({frontends})"
            time.sleep(0.1)
        assert xenddd(config, "sim", "crash", "domnet").returncode == 0
        while not journal.exists() or '"XENDDD_EVENT": "recovered"' not in journal.read_text():
            assert time.monotonic() < deadline + 30, "no recovery in the journal"
            time.sleep(0.1)
    finally:
        daemon.kill()
        daemon.wait(timeout=10)
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    events = {e["XENDDD_EVENT"]: e for e in entries if "XENDDD_EVENT" in e}
    assert events["detected"]["DRIVER_DOMAIN"] == "domnet"
    assert events["detected"]["LEVELNO"] == "30"  # logging.WARNING
    assert events["reattached"]["GUEST"] == "web"
    assert (
        events["reattached"]["INCIDENT"] == events["detected"]["INCIDENT"] == events["recovered"]["INCIDENT"]
    )
    assert all(e["SYSLOG_IDENTIFIER"] == "xenddd" for e in entries)


def _frontends(config: Path) -> int | None:
    result = xenddd(config, "--simulate", "list", "--json")
    return json.loads(result.stdout)["items"][0]["frontends"] if result.returncode == 0 else None


def test_metrics_count_automatic_and_operator_restarts_apart(
    running: tuple[Path, SimulatedHost, Daemon],
) -> None:
    config, sim, daemon = running
    sim.host.crash("domnet")
    wait_for(daemon, "recovered")
    assert CliRunner().invoke(cli, ["--config", str(config), "restart", "domnet"]).exit_code == 0
    wait_for(daemon, "recovered", count=2)
    deadline = time.monotonic() + 10
    metrics = config.parent / "metrics.prom"
    while 'trigger="operator"} 1' not in metrics.read_text():
        assert time.monotonic() < deadline, metrics.read_text()
        time.sleep(0.05)
    text = metrics.read_text()
    assert 'xenddd_restarts_total{driver_domain="domnet",trigger="automatic"} 1' in text
    assert 'xenddd_restarts_total{driver_domain="domnet",trigger="operator"} 1' in text
    assert 'xenddd_crashes_total{driver_domain="domnet"} 1' in text
    assert "# TYPE xenddd_reattach_failures_total counter" in text
    listing = json.loads(CliRunner().invoke(cli, ["--config", str(config), "list", "--json"]).stdout)
    assert (listing["items"][0]["restarts"], listing["items"][0]["manual_restarts"]) == (1, 1)
