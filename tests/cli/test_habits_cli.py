"""Habits shared by every command: --json anywhere and for errors too, short options, refusals exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.pci.fake_kernel import FakeKernel
from xenddd.adapters.pci_sysfs import PCIBACK
from xenddd.cli.main import cli
from xenddd.config.loader import INSTALLED_CONFIG_PATH
from xenddd.service.daemon import Daemon
from xenddd.sim.socket_host import SimulatedHost


def test_json_is_accepted_after_the_subcommand_too() -> None:
    result = CliRunner().invoke(cli, ["config", "check", str(INSTALLED_CONFIG_PATH), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["version"], document["kind"], len(document["items"])) == (1, "config-check", 1)


def test_with_json_an_error_is_a_json_document_on_stdout(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "check", "--json", str(tmp_path / "missing.toml")])
    assert (result.exit_code, result.stderr) == (2, "")
    assert json.loads(result.stdout) == {
        "version": 1,
        "kind": "error",
        "items": [{"error": f"{tmp_path}/missing.toml: no such config file", "exit_code": 2}],
    }


def test_list_takes_names_and_refuses_one_that_is_not_configured(
    running: tuple[Path, SimulatedHost, Daemon],
) -> None:
    config = running[0]
    result = CliRunner().invoke(cli, ["--config", str(config), "list", "domnet", "--json"])
    assert result.exit_code == 0, result.output
    assert [d["name"] for d in json.loads(result.stdout)["items"]] == ["domnet"]
    result = CliRunner().invoke(cli, ["--config", str(config), "list", "nosuch"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert "no driver domain named 'nosuch'" in result.stderr


def test_pci_remove_with_r_says_when_no_original_driver_is_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel(tmp_path / "sys")
    kernel.add_driver(PCIBACK)
    kernel.add_device("0000:00:10.0", driver=PCIBACK)  # hidden by something else: no record of xenddd's
    monkeypatch.setenv("XENDDD_SYSFS_ROOT", str(kernel.root))
    config = tmp_path / "xenddd.toml"
    config.write_text(f'[xenddd]\nstate_dir = "{tmp_path}/state"\n')
    result = CliRunner().invoke(
        cli, ["--config", str(config), "pci-assignable-remove", "-r", "-f", "00:10.0"]
    )
    assert result.exit_code == 0, result.output
    assert (
        result.stdout
        == "0000:00:10.0: given back to dom0, not rebound: no original driver is recorded for it\n"
    )


def test_libvirt_is_kept_from_printing_its_errors_on_top_of_xenddds(monkeypatch: pytest.MonkeyPatch) -> None:
    import libvirt

    from xenddd.adapters.hypervisor import LibvirtHypervisor
    from xenddd.errors import XendddError

    handlers: list[object] = []
    monkeypatch.setattr(libvirt, "registerErrorHandler", lambda handler, ctx: handlers.append(handler))
    with pytest.raises(XendddError):
        LibvirtHypervisor("test:///nosuch/file.xml")
    assert handlers and handlers[-1] is not None


def test_commands_that_change_something_answer_json_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel(tmp_path / "sys")
    kernel.add_driver(PCIBACK)
    kernel.add_device("0000:00:10.0", driver=PCIBACK)
    monkeypatch.setenv("XENDDD_SYSFS_ROOT", str(kernel.root))
    config = tmp_path / "xenddd.toml"
    config.write_text(f'[xenddd]\nstate_dir = "{tmp_path}/state"\n')
    result = CliRunner().invoke(
        cli, ["--config", str(config), "pci-assignable-remove", "-f", "00:10.0", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"] == [{"bdf": "0000:00:10.0", "driver": None}]


def test_with_json_a_usage_error_is_json_too() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "xenddd", "list", "--bogus", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (2, "")
    assert json.loads(result.stdout)["items"] == [{"error": "No such option '--bogus'.", "exit_code": 2}]
