"""`xenddd demo` on the simulated host, and the PCI commands' input handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.pci.fake_kernel import FakeKernel
from xenddd.adapters.pci_sysfs import PCIBACK
from xenddd.cli.main import cli


def test_demo_brings_every_frontend_back_and_says_so_in_json() -> None:
    result = CliRunner().invoke(cli, ["--json", "demo"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "demo-summary" and summary["lost"] == 0
    rows = {row["name"]: row for row in summary["items"]}
    assert rows["domnet"]["frontends_reattached"] == 3 and rows["domstore"]["frontends_reattached"] == 2
    assert all(
        row["crashes"] == 1 and row["restarts"] == 1 and row["mttr_seconds"] > 0 for row in rows.values()
    )


def test_demo_prints_the_recovery_live() -> None:
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.output
    for phase in ("detected", "detached", "restarted", "ready", "reattached", "recovered", "nothing lost"):
        assert phase in result.stdout


@pytest.mark.parametrize("bdf", ["00:1f.9", "zz:00.0", "0000:00:10.0/../../x", ""])
def test_pci_commands_reject_hostile_addresses_with_exit_2(bdf: str) -> None:
    for command in ("pci-assignable-add", "pci-assignable-remove"):
        result = CliRunner().invoke(cli, [command, bdf])
        assert result.exit_code == 2
        assert "is not a PCI address" in result.stderr


def test_pci_add_without_pciback_tells_the_operator_to_load_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel(tmp_path / "sys")
    kernel.add_driver("e1000")
    kernel.add_device("0000:00:10.0", driver="e1000")
    monkeypatch.setenv("XENDDD_SYSFS_ROOT", str(kernel.root))
    config = tmp_path / "xenddd.toml"
    config.write_text(f'[xenddd]\nstate_dir = "{tmp_path}/state"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "pci-assignable-add", "00:10.0"])
    assert result.exit_code == 1
    assert result.stderr == "xenddd: the xen-pciback driver is not loaded: run `modprobe xen-pciback` first\n"


def test_pci_list_shows_devices_bound_to_pciback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel(tmp_path / "sys")
    kernel.add_driver(PCIBACK)
    kernel.add_device("0000:00:10.0", driver=PCIBACK, iommu_group=3)
    monkeypatch.setenv("XENDDD_SYSFS_ROOT", str(kernel.root))
    config = tmp_path / "xenddd.toml"
    config.write_text(f'[xenddd]\nstate_dir = "{tmp_path}/state"\nxenstore_socket = "{tmp_path}/none.sock"\n')
    result = CliRunner().invoke(cli, ["--json", "--config", str(config), "pci-assignable-list"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["items"]
    assert row["bdf"] == "0000:00:10.0" and row["driver"] == PCIBACK and row["iommu_group"] == 3
