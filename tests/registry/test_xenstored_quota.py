"""A driver domain's share of guests is compared with what xenstored's per-domain quotas fit, and the
operator is told before the driver domain's new backends start to stall."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenddd.cli.main import cli
from xenddd.model import DeviceKind, Frontend, VifParams
from xenddd.registry import xenstored_quota
from xenddd.registry.frontends import REGISTRY_FILE
from xenddd.registry.persistence import frontend_to_json
from xenddd.registry.xenstored_quota import (
    XenstoredQuotas,
    devices_recorded,
    parse_xenstored_args,
    quota_warnings,
)


def test_c_xenstored_s_defaults_fit_about_forty_devices_a_driver_domain() -> None:
    assert XenstoredQuotas().capacity() == 41  # 1000 nodes / 24 a device (128 watches / 3 would be 42)
    assert XenstoredQuotas(nodes=0, watches=0).capacity() is None


@pytest.mark.parametrize(
    ("line", "nodes", "watches"),
    [
        ('XENSTORED_ARGS="--entry-nb 20000 --watch-nb 2000"', 20000, 2000),
        ("XENSTORED_ARGS='-E 5000 -W=600'", 5000, 600),
        ('XENSTORED_ARGS="-Q nodes=8000 --quota=watches=900"', 8000, 900),
        ('XENSTORED_ARGS=""', 1000, 128),
        ('#XENSTORED_ARGS="--entry-nb 20000"', 1000, 128),
    ],
)
def test_xenstored_s_quotas_are_read_from_its_arguments(line: str, nodes: int, watches: int) -> None:
    quotas = parse_xenstored_args(f"XENSTORED_TRACE=\n{line}\n", "/etc/default/xencommons")
    assert (quotas.nodes, quotas.watches) == (nodes, watches)


def test_a_driver_domain_is_warned_about_from_four_fifths_of_what_its_quotas_fit() -> None:
    warnings = quota_warnings({"domnet": 33, "domstore": 32}, XenstoredQuotas())
    assert list(warnings) == ["domnet"]
    assert "fit about 41" in warnings["domnet"] and "xl xenstore-quota-set domnet" in warnings["domnet"]
    assert quota_warnings({"domnet": 33}, XenstoredQuotas(20000, 2000)) == {}


def test_config_check_warns_from_the_registry_s_count_and_the_host_s_xenstored_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    vif = VifParams(mac="00:16:3e:00:00:01")
    entries = [
        Frontend(i + 1, f"g{i}", str(uuid.UUID(int=i + 1)), DeviceKind.VIF, 0, "domnet", 900, vif)
        for i in range(36)
    ]
    document = {"version": 1, "frontends": [frontend_to_json(f) for f in entries]}
    (state / REGISTRY_FILE).write_text(json.dumps(document))
    config = tmp_path / "xenddd.toml"
    config.write_text(
        f'[xenddd]\nstate_dir = "{state}"\n[[driver_domain]]\nname = "domnet"\nkind = "network"\n'
        'kernel = "/bin/sh"\n'
    )
    xencommons = tmp_path / "xencommons"
    monkeypatch.setattr(xenstored_quota, "XENCOMMONS", xencommons)
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "domnet serves 36 guest devices" in result.stderr
    xencommons.write_text('XENSTORED_ARGS="--entry-nb 20000 --watch-nb 2000"\n')
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 0 and "guest devices" not in result.stderr


@pytest.mark.parametrize("damage", [b"[" * 100_000, b'{"frontends": [1, "x", {"kind": 5}]}', b"\xff{"])
def test_a_damaged_registry_file_counts_no_devices_and_raises_nothing(tmp_path: Path, damage: bytes) -> None:
    """`config check` reads the daemon's registry file as it is: the daemon quarantines a damaged one."""
    (tmp_path / REGISTRY_FILE).write_bytes(damage)
    assert devices_recorded(tmp_path) == {}
