"""The real-Xen test bed's configs are valid xenddd configs, with scenario (g)'s disks appended as
run-in-dom0.sh appends them: a typo there would cost a 20-minute boot to find."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenddd.config.loader import parse_config

SCENARIOS = Path(__file__).resolve().parents[2] / "integration/scenarios"


@pytest.mark.parametrize(("machine", "names"), [("pc", ["domnet", "domstore"]), ("vtd", ["domnet"])])
def test_each_machines_config_parses(machine: str, names: list[str]) -> None:
    path = SCENARIOS / f"xenddd-{machine}.toml"
    config = parse_config(path.read_text(), path)
    assert [d.name for d in config.driver_domains] == names


def test_scenario_gs_disks_go_to_domstore() -> None:
    base = SCENARIOS / "xenddd-pc.toml"
    config = parse_config(base.read_text() + (SCENARIOS / "xenddd-pc-faithful.toml").read_text(), base)
    disks = {d.name: [disk.vdev for disk in d.disks] for d in config.driver_domains}
    assert disks == {"domnet": ["xvda"], "domstore": ["xvda", "xvdb", "xvdc", "xvdd"]}
