"""`xenddd events`: the history is on disk, so it is there whether or not the daemon runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenddd.cli.main import cli
from xenddd.recovery.history import History


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "xenddd.toml"
    path.write_text(
        f'[xenddd]\nstate_dir = "{tmp_path}/state"\ncontrol_socket = "{tmp_path}/control.sock"\n'
        '[[driver_domain]]\nname = "domnet"\nkind = "network"\nkernel = "/boot/dd"\n'
    )
    return path


def record_history(state_dir: Path, *ages: float) -> None:
    """One `detected` record per age (seconds before now), oldest first."""
    history = History(state_dir)
    for age in ages:
        history.record("detected", driver_domain="domnet", incident=f"i{age:.0f}")
    lines = [json.loads(line) for line in (state_dir / "history.jsonl").read_text().splitlines()]
    for line, age in zip(lines, ages, strict=True):
        line["ts"] = time.time() - age
    (state_dir / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def incidents(config: Path, *args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["--json", "--config", str(config), "events", *args])
    items = json.loads(result.stdout)["items"] if result.exit_code == 0 else []
    return result.exit_code, [item["incident"] for item in items]


def test_events_reads_the_recorded_history_while_the_daemon_is_not_running(config: Path) -> None:
    record_history(config.parent / "state", 7200, 60)
    result = CliRunner().invoke(cli, ["--config", str(config), "events"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("detected") == 2 and "domnet" in result.stdout


@pytest.mark.parametrize(
    ("since", "expected"),
    [("1h", ["i60"]), ("10m", ["i60"]), ("30s", []), ("3h", ["i7200", "i60"]), ("90", ["i60"])],
)
def test_since_takes_ages_with_units(config: Path, since: str, expected: list[str]) -> None:
    record_history(config.parent / "state", 7200, 60)
    assert incidents(config, "--since", since) == (0, expected)


def test_since_takes_an_iso_time_and_n_the_last_records(config: Path) -> None:
    record_history(config.parent / "state", 7200, 600, 60)
    ninety_minutes_ago = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5400))
    assert incidents(config, "--since", ninety_minutes_ago) == (0, ["i600", "i60"])
    assert incidents(config, "-n", "1") == (0, ["i60"])
    assert incidents(config, "-n", "2", "--since", "3h") == (0, ["i600", "i60"])


@pytest.mark.parametrize("since", ["yesterday", "-5m", "1w"])
def test_an_invalid_since_is_bad_input(config: Path, since: str) -> None:
    result = CliRunner().invoke(cli, ["--config", str(config), "events", "--since", since])
    assert result.exit_code == 2
    assert "--since" in result.stderr


def xenddd(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "xenddd", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")},
    )


def next_event(follow: subprocess.Popen[str], event: str) -> dict[str, object]:
    assert follow.stdout is not None
    while True:
        line = follow.stdout.readline()
        assert line, "events --follow stopped"
        record = json.loads(line)
        if record["event"] == event:
            return record


@pytest.mark.slow
def test_follow_carries_on_across_a_restart_of_the_daemon(config: Path) -> None:
    record_history(config.parent / "state", 60)
    follow = xenddd(config, "--json", "events", "--follow", "-n", "0")
    daemons = []
    try:
        assert follow.stdout is not None
        listing = [follow.stdout.readline() for _ in range(5)]
        assert json.loads("".join(listing)) == {"version": 1, "kind": "events", "items": []}
        daemons.append(xenddd(config, "daemon", "--simulate"))
        assert next_event(follow, "daemon-started")["pid"] == daemons[0].pid
        daemons[0].kill()  # as a crash would; systemd then starts it again
        daemons[0].wait(timeout=10)
        daemons.append(xenddd(config, "daemon", "--simulate"))
        assert next_event(follow, "daemon-started")["pid"] == daemons[1].pid
    finally:
        for process in [follow, *daemons]:
            process.kill()
            process.communicate(timeout=10)
