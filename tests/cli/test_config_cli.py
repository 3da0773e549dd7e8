"""`config check` and the installed config: what an operator sees before the daemon touches anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

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
    assert (code, err) == (0, "")
    assert "ok" in out


def test_the_installed_config_is_valid_and_configures_nothing() -> None:
    code, out, err = run("--config", str(INSTALLED_CONFIG_PATH), "config", "check")
    assert (code, err) == (0, "")
    assert out == f"{INSTALLED_CONFIG_PATH}: ok, 0 driver domain(s)\n"


def test_scripts_install_installs_the_do_nothing_config_not_the_example() -> None:
    install = (Path(__file__).parents[2] / "scripts" / "install").read_text()
    assert '"$top/xenddd/config/default.toml" /etc/xenddd/xenddd.toml' in install
    assert 'example.toml" /etc/xenddd' not in install
