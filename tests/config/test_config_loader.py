"""The config loader accepts the documented schema and rejects every invalid value with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.config.parsing import parse, rejection
from xenddd.config.loader import EXAMPLE_CONFIG_PATH, config_path, load_config, parse_config
from xenddd.errors import ConfigError
from xenddd.model import Bdf, DriverDomainKind

MINIMAL = """
[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/boot/dd-vmlinuz"
"""


def test_shipped_example_is_valid_and_documents_every_setting() -> None:
    config = load_config(EXAMPLE_CONFIG_PATH)
    assert [d.name for d in config.driver_domains] == ["domnet", "domstore", "domfw"]
    text = EXAMPLE_CONFIG_PATH.read_text()
    for key in (
        "backend",
        "mac",
        "rate",
        "libvirt_uri",
        "xenstore_socket",
        "state_dir",
        "control_socket",
        "control_group",
        "sysfs_root",
        "log_level",
        "metrics_textfile",
        "max_parallel_reattach",
        "permissive",
        "rdm_policy",
        "reset",
        "max_restarts",
        "window",
        "backoff_base",
        "backoff_cap",
        "condition",
        "timeout",
        "depends_on",
        "on_crash",
        "memory",
        "vcpus",
        "initrd",
        "cmdline",
        "readonly",
        "format",
    ):
        assert f"{key} =" in text or f"# {key} =" in text, key


def test_minimal_driver_domain_gets_production_defaults() -> None:
    config = parse(MINIMAL)
    spec = config.driver_domain("domnet")
    assert spec.kinds == frozenset({DriverDomainKind.NETWORK})
    assert (spec.virt, spec.memory_mib, spec.vcpus, spec.on_crash) == ("pv", 256, 1, "destroy")
    assert config.settings.libvirt_uri == "xen:///system"
    assert str(config.settings.control_socket) == "/run/xenddd/control.sock"


def test_pci_devices_are_parsed_with_their_options() -> None:
    config = parse(MINIMAL + '[[driver_domain.pci]]\nbdf = "03:00.1"\npermissive = true\nreset = "relaxed"\n')
    (pci,) = config.driver_domain("domnet").pci
    assert pci.bdf == Bdf(0, 3, 0, 1)
    assert (pci.permissive, pci.reset, pci.rdm_policy) == (True, "relaxed", "strict")


def test_an_invalid_bdf_is_rejected_with_key_path_and_line() -> None:
    message = rejection(MINIMAL + '[[driver_domain.pci]]\nbdf = "00:1f.9"\n')
    assert "driver_domain[0].pci[0].bdf" in message
    assert "xenddd.toml:7:" in message
    assert "function must be 0-7" in message


def test_an_unknown_key_is_rejected_by_name() -> None:
    message = rejection(MINIMAL + "memroy = 512\n")
    assert "driver_domain[0].memroy: unknown key" in message
    assert ":6:" in message


def test_an_unknown_top_level_table_is_rejected() -> None:
    assert "drvier_domain" in rejection("[[drvier_domain]]\nname = 'x'\n")


def test_negative_memory_is_rejected() -> None:
    assert "driver_domain[0].memory: must be at least 32" in rejection(MINIMAL + "memory = -256\n")


def test_wrong_types_are_rejected() -> None:
    assert "must be an integer" in rejection(MINIMAL + 'vcpus = "2"\n')
    assert "must be true or false" in rejection(
        MINIMAL + '[[driver_domain.pci]]\nbdf = "00:10.0"\npermissive = 1\n'
    )
    assert "must be an absolute path" in rejection('[xenddd]\nstate_dir = "relative/dir"\n')


def test_duplicate_driver_domain_names_are_rejected() -> None:
    assert "duplicate driver domain name 'domnet'" in rejection(MINIMAL + MINIMAL)


def test_a_dependency_cycle_is_rejected_and_shown() -> None:
    text = """
    [[driver_domain]]
    name = "a"
    kind = "network"
    kernel = "/k"
    depends_on = ["b"]

    [[driver_domain]]
    name = "b"
    kind = "block"
    kernel = "/k"
    depends_on = ["a"]
    """
    assert "dependency cycle: a -> b -> a" in rejection(text)


def test_depending_on_an_unknown_domain_is_rejected() -> None:
    assert "'ghost' is not a configured driver domain" in rejection(MINIMAL + 'depends_on = ["ghost"]\n')


def test_start_order_follows_depends_on() -> None:
    text = """
    [[driver_domain]]
    name = "net"
    kind = "network"
    kernel = "/k"
    depends_on = ["store"]

    [[driver_domain]]
    name = "store"
    kind = "block"
    kernel = "/k"
    """
    assert [d.name for d in parse(text).start_order()] == ["store", "net"]


def test_pv_needs_a_kernel_and_hvm_needs_a_disk() -> None:
    assert "needs a kernel" in rejection('[[driver_domain]]\nname = "x"\nkind = "block"\n')
    assert "needs at least one" in rejection('[[driver_domain]]\nname = "x"\nkind = "block"\ntype = "hvm"\n')


def test_backoff_cap_below_base_is_rejected() -> None:
    text = MINIMAL + "[driver_domain.restart]\nbackoff_base = 10\nbackoff_cap = 1\n"
    assert "driver_domain[0].restart.backoff_cap" in rejection(text)


def test_absolute_readiness_key_is_rejected() -> None:
    text = MINIMAL + '[driver_domain.readiness]\nkey = "/local/domain/0/evil"\n'
    assert "driver_domain[0].readiness.key" in rejection(text)


def test_toml_syntax_errors_name_the_file_and_line() -> None:
    message = rejection("[[driver_domain]\nname = 1\n")
    assert "invalid TOML" in message and "line 1" in message


def test_simulation_guests_must_name_configured_driver_domains() -> None:
    text = MINIMAL + '[[simulation.guest]]\nname = "web"\nvif = ["nope"]\n'
    assert "simulation.guest[0].vif" in rejection(text)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XENDDD_CONFIG", raising=False)
    assert config_path(None) == Path("/etc/xenddd/xenddd.toml")
    monkeypatch.setenv("XENDDD_CONFIG", "/tmp/env.toml")
    assert config_path(None) == Path("/tmp/env.toml")
    assert config_path("/tmp/cli.toml") == Path("/tmp/cli.toml")


def test_sysfs_root_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENDDD_SYSFS_ROOT", "/tmp/fake-sys")
    assert parse(MINIMAL).settings.sysfs_root == Path("/tmp/fake-sys")


@given(st.text(max_size=200))
def test_arbitrary_text_either_parses_or_fails_with_one_line(text: str) -> None:
    try:
        parse_config(text, Path("/x.toml"))
    except ConfigError as exc:
        assert "\n" not in str(exc)


@given(
    st.dictionaries(
        st.sampled_from(["name", "kind", "kernel", "memory", "vcpus", "type", "bogus"]),
        st.one_of(st.integers(), st.text(max_size=20), st.booleans(), st.lists(st.text(max_size=5))),
    )
)
def test_arbitrary_driver_domain_tables_never_crash_the_loader(table: dict[str, object]) -> None:
    lines = ["[[driver_domain]]"]
    for key, value in table.items():
        lines.append(f"{key} = {_toml_value(value)}")
    try:
        parse_config("\n".join(lines) + "\n", Path("/x.toml"))
    except ConfigError as exc:
        assert "\n" not in str(exc)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def test_a_driver_domain_named_like_a_domid_is_refused() -> None:
    text = '[[driver_domain]]\nname = "42"\nkind = "network"\nkernel = "/k"\n'
    assert "driver_domain[0].name: '42': a driver domain's name cannot be all digits" in rejection(text)
