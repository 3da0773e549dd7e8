"""`config check` and the installed config: what an operator sees before the daemon touches anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.pci.fake_kernel import FakeKernel
from xenddd.adapters.pci_sysfs import PCIBACK
from xenddd.cli.main import cli
from xenddd.config.loader import INSTALLED_CONFIG_PATH


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_sysfs_environment_variable_overrides_the_key_instead_of_forbidding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "xenddd.toml"
    config.write_text('[xenddd]\nsysfs_root = "/sys"\n')
    monkeypatch.setenv("XENDDD_SYSFS_ROOT", str(tmp_path / "sys"))
    code, out, err = run("--config", str(config), "config", "check")
    assert code == 0
    assert "unknown key" not in err and "ok" in out


def test_the_installed_config_is_valid_and_configures_nothing() -> None:
    code, out, err = run("--config", str(INSTALLED_CONFIG_PATH), "config", "check")
    assert code == 0
    assert out == f"{INSTALLED_CONFIG_PATH}: ok, 0 driver domain(s)\n"
    assert err == (
        f"xenddd: warning: {INSTALLED_CONFIG_PATH}: driver_domain: "
        "no driver domain is configured: the daemon does nothing\n"
    )


def test_scripts_install_installs_the_do_nothing_config_not_the_example() -> None:
    install = (Path(__file__).parents[2] / "scripts" / "install").read_text()
    assert '"$top/xenddd/config/default.toml" /etc/xenddd/xenddd.toml' in install
    assert 'example.toml" /etc/xenddd' not in install


def domain(name: str, extra: str = "", kernel: str = "/bin/sh") -> str:
    return f'[[driver_domain]]\nname = "{name}"\nkind = "network"\nkernel = "{kernel}"\n{extra}'


def test_missing_kernel_initrd_and_disk_are_errors_one_line_each(tmp_path: Path) -> None:
    config = tmp_path / "xenddd.toml"
    config.write_text(
        domain("domnet", f'initrd = "{tmp_path}/initrd"\n', kernel=f"{tmp_path}/vmlinuz")
        + '[[driver_domain]]\nname = "domstore"\nkind = "block"\ntype = "hvm"\n'
        f'[[driver_domain.disk]]\npath = "{tmp_path}/disk.img"\n'
    )
    code, out, err = run("config", "check", str(config))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"xenddd: {config}:4: driver_domain[0].kernel: {tmp_path}/vmlinuz does not exist",
        f"xenddd: {config}:5: driver_domain[0].initrd: {tmp_path}/initrd does not exist",
        f"xenddd: {config}:11: driver_domain[1].disk[0].path: {tmp_path}/disk.img does not exist",
    ]


def test_the_same_pci_device_in_two_driver_domains_is_invalid(tmp_path: Path) -> None:
    config = tmp_path / "xenddd.toml"
    pci = '[[driver_domain.pci]]\nbdf = "00:10.0"\n'
    config.write_text(domain("domnet", pci) + domain("domnet2", pci))
    code, _, err = run("config", "check", str(config))
    assert code == 2
    assert err == (
        f"xenddd: {config}:12: driver_domain[1].pci[0].bdf: "
        "0000:00:10.0 is already passed through to 'domnet'\n"
    )


def test_a_driver_domain_named_after_dom0_is_invalid(tmp_path: Path) -> None:
    config = tmp_path / "xenddd.toml"
    config.write_text(domain("Domain-0"))
    code, _, err = run("config", "check", str(config))
    assert code == 2
    assert err == f"xenddd: {config}:2: driver_domain[0].name: 'Domain-0' is dom0's own name\n"


def test_pci_devices_are_checked_against_sysfs_errors_apart_from_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel(tmp_path / "sys")
    kernel.add_driver(PCIBACK)
    kernel.add_device("0000:00:02.0", boot_vga=True)
    kernel.add_device("0000:00:10.0", reset_method=None)
    kernel.add_device("0000:00:11.0", reset_method=None)
    monkeypatch.setenv("XENDDD_SYSFS_ROOT", str(kernel.root))
    config = tmp_path / "xenddd.toml"
    config.write_text(
        domain(
            "domnet",
            '[[driver_domain.pci]]\nbdf = "00:02.0"\n[[driver_domain.pci]]\nbdf = "00:03.0"\n'
            '[[driver_domain.pci]]\nbdf = "00:10.0"\n'
            '[[driver_domain.pci]]\nbdf = "00:11.0"\nreset = "relaxed"\n',
        )
    )
    code, _, err = run("--config", str(config), "config", "check")
    assert code == 2
    assert err.splitlines() == [
        f"xenddd: {config}:6: driver_domain[0].pci[0].bdf: dom0 needs 0000:00:02.0: "
        "it is the boot VGA device (dom0's console)",
        f"xenddd: {config}:8: driver_domain[0].pci[1].bdf: no PCI device 0000:00:03.0 on this host",
        f"xenddd: {config}:9: driver_domain[0].pci[2].reset: 0000:00:10.0 has no reset method: "
        'refused under "strict"; "relaxed" allows it',
        f"xenddd: warning: {config}:13: driver_domain[0].pci[3].reset: 0000:00:11.0 has no reset method: "
        "passed through without a reset",
    ]


def test_json_reports_errors_and_warnings_apart_on_stdout(tmp_path: Path) -> None:
    config = tmp_path / "xenddd.toml"
    config.write_text(domain("domnet", kernel=f"{tmp_path}/vmlinuz"))
    code, out, err = run("--json", "config", "check", str(config))
    assert (code, err) == (2, "")
    (item,) = json.loads(out)["items"]
    assert item["valid"] is False and item["warnings"] == []
    assert item["errors"] == [
        {"key": "driver_domain[0].kernel", "line": 4, "message": f"{tmp_path}/vmlinuz does not exist"}
    ]
