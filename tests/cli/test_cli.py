"""The CLI reads like xl: man-page help, honest exit codes, one-line errors, a versioned --json schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenddd.cli.main import cli
from xenddd.config.loader import EXAMPLE_CONFIG_PATH

SUBCOMMANDS = [
    ["daemon"],
    ["list"],
    ["create"],
    ["destroy"],
    ["restart"],
    ["status"],
    ["events"],
    ["pci-assignable-add"],
    ["pci-assignable-remove"],
    ["pci-assignable-list"],
    ["network-list"],
    ["block-list"],
    ["config", "check"],
    ["demo"],
    ["sim"],
]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c))
def test_every_subcommand_is_registered_with_help(command: list[str]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0
    assert out.startswith("Usage: ")


def test_top_level_help_states_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0
    assert "Exit status: 0 success, 1 the operation failed, 2 invalid input" in out


@pytest.fixture
def host_with_the_examples_nic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.pci.fake_kernel import FakeKernel
    from xenddd.adapters.pci_sysfs import PCIBACK

    kernel = FakeKernel(tmp_path / "sys")
    kernel.add_driver(PCIBACK)
    kernel.add_device("0000:00:10.0")
    monkeypatch.setenv("XENDDD_SYSFS_ROOT", str(kernel.root))


@pytest.mark.usefixtures("host_with_the_examples_nic")
def test_config_check_of_the_example_names_its_placeholder_images() -> None:
    code, out, err = run("--config", str(EXAMPLE_CONFIG_PATH), "config", "check")
    assert (code, out) == (2, "")
    assert [line.split(": ")[2] for line in err.splitlines()] == [
        "driver_domain[0].kernel",
        "driver_domain[0].initrd",
        "driver_domain[1].disk[0].path",
        "driver_domain[2].kernel",
        "driver_domain[2].initrd",
    ]


@pytest.mark.usefixtures("host_with_the_examples_nic")
def test_config_check_json_has_a_versioned_schema() -> None:
    code, out, _ = run("--json", "--config", str(EXAMPLE_CONFIG_PATH), "config", "check")
    assert code == 2
    document = json.loads(out)
    assert document["version"] == 1
    assert document["kind"] == "config-check"
    (record,) = document["items"]
    assert record["driver_domains"] == ["domnet", "domstore", "domfw"]
    assert record["valid"] is False and len(record["errors"]) == 5


def test_invalid_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[driver_domain]]\nname = "x"\nkind = "network"\nkernel = "/k"\nmemory = -1\n')
    code, out, err = run("--config", str(bad), "config", "check")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"xenddd: {bad}:5: driver_domain[0].memory:")


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENDDD_CONFIG", str(tmp_path / "missing.toml"))
    code, _, err = run("config", "check")
    assert code == 2
    assert "missing.toml: no such config file" in err


def test_unknown_subcommand_is_bad_input() -> None:
    code, _, _ = run("frobnicate")
    assert code == 2


def test_a_command_whose_issue_has_not_landed_says_so_and_exits_1() -> None:
    import click

    from xenddd.cli.context import not_implemented
    from xenddd.cli.main import XendddGroup

    @click.group(cls=XendddGroup)
    def group() -> None:
        pass

    @group.command()
    def pending() -> None:
        raise not_implemented("pending", 99)

    result = CliRunner().invoke(group, ["pending"])
    assert result.exit_code == 1
    assert result.stderr == "xenddd: 'pending' is not implemented yet (issue #99)\n"
