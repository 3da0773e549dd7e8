"""`config check` and the installed config: what an operator sees before the daemon touches anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from xenddd.cli.main import cli


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
