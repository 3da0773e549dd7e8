"""`daemon --simulate` where an operator can find it: paths printed and in status, and faults to inject."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.simulated_cli import CONFIG, xenddd


@pytest.mark.slow
def test_an_operator_finds_the_simulated_host_and_rehearses_a_crash(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text(CONFIG)  # sets no paths: the simulation's own directory holds them
    sim_dir = Path(os.environ["XENDDD_SIM_DIR"])
    daemon = subprocess.Popen(
        [sys.executable, "-m", "xenddd", "--config", str(config), "daemon", "--simulate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")},
    )
    try:
        assert daemon.stderr is not None
        banner = [daemon.stderr.readline() for _ in range(6)]
        assert f"xenstored       {sim_dir}/xenstored.sock" in banner[1]
        assert f"control socket  {sim_dir}/control.sock" in banner[2]
        deadline = time.monotonic() + 30
        while (status := xenddd(config, "--simulate", "status")).returncode != 0:
            assert time.monotonic() < deadline, status.stderr
            time.sleep(0.1)
        assert f"simulated host: xenstored {sim_dir}/xenstored.sock, state {sim_dir}/state" in status.stdout

        assert xenddd(config, "sim", "crash", "nosuch").returncode == 2
        crash = xenddd(config, "sim", "crash", "domnet")
        assert crash.returncode == 0, crash.stderr
        assert crash.stdout.startswith("domnet: crash injected (domid ")
        while (
            not (
                recovered := [
                    e
                    for e in json.loads(xenddd(config, "--simulate", "events", "--json").stdout)["items"]
                    if e["event"] in ("detected", "recovered")
                ]
            )
            or recovered[-1]["event"] != "recovered"
        ):
            assert time.monotonic() < deadline + 30, "no recovery"
            time.sleep(0.1)
        assert recovered[0]["reason"] == "crashed"
    finally:
        daemon.kill()
        daemon.communicate(timeout=10)


def test_a_fault_without_a_simulated_host_says_so(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text(CONFIG)
    result = xenddd(config, "sim", "crash", "domnet")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("xenddd: no simulated host runs")
