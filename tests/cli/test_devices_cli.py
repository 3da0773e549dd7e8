"""`network-list` / `block-list`: xl-style views of the registry that change nothing."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from xenddd import state
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.cli.main import cli
from xenddd.sim.socket_host import SimulatedHost

UUID = "0f0e0d0c-0b0a-0908-0706-050403020100"


def write_config(tmp_path: Path, socket: Path) -> Path:
    config = tmp_path / "xenddd.toml"
    config.write_text(
        f"""
[xenddd]
xenstore_socket = "{socket}"
state_dir = "{tmp_path / "state"}"

[[driver_domain]]
name = "netdd"
kind = "network"
kernel = "/boot/vmlinuz"

[[driver_domain]]
name = "blkdd"
kind = "block"
kernel = "/boot/vmlinuz"
"""
    )
    return config


def recorded_entry(kind: str, devid: int, backend: str, params: dict[str, object]) -> dict[str, object]:
    return {
        "guest_uuid": UUID,
        "guest_name": "web1",
        "guest_domid": 7,
        "kind": kind,
        "devid": devid,
        "backend_name": backend,
        "backend_domid": 3,
        "orphaned": True,
        "params": params,
        "extra": {},
    }


def test_without_xenstored_the_last_recorded_registry_is_shown_with_a_warning(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "no-xenstored.sock")
    vif = recorded_entry("vif", 0, "netdd", {"mac": "00:16:3e:00:00:01", "bridge": "xenbr0"})
    vbd = recorded_entry("vbd", 51712, "blkdd", {"vdev": "xvda", "target": "/dev/vg/web1"})
    state.write_json(tmp_path / "state" / "registry.json", {"version": 1, "frontends": [vif, vbd]})

    result = CliRunner().invoke(cli, ["--json", "--config", str(config), "network-list"])

    assert result.exit_code == 0, result.output
    assert "showing the last recorded registry" in result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == "vif-list"
    assert [(i["guest"], i["devid"], i["mac"], i["status"]) for i in document["items"]] == [
        ("web1", 0, "00:16:3e:00:00:01", "orphaned")
    ]


def test_block_list_table_shows_the_vdev_and_the_serving_driver_domain(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "no-xenstored.sock")
    vbd = recorded_entry("vbd", 51712, "blkdd", {"vdev": "xvda", "target": "/dev/vg/web1"})
    state.write_json(tmp_path / "state" / "registry.json", {"version": 1, "frontends": [vbd]})

    result = CliRunner().invoke(cli, ["--config", str(config), "block-list", "--backend", "blkdd"])

    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["Guest", "Idx", "BE", "Vdev", "BE-state", "FE-state", "Hotplug", "Status"]
    assert row.split() == ["web1", "51712", "blkdd/3", "xvda", "-", "-", "-", "orphaned"]


def test_an_unknown_backend_is_invalid_input(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "no-xenstored.sock")
    result = CliRunner().invoke(cli, ["--config", str(config), "network-list", "--backend", "nosuch"])
    assert result.exit_code == 2
    assert "not a configured driver domain" in result.stderr


def wait_until_connected(socket: Path, backend: str, frontend: str) -> None:
    """Both ends Connected, waited for on xenstore watches (the simulated kernels connect asynchronously)."""
    xs = Xenstore(socket)
    try:
        xs.watch(backend)
        xs.watch(frontend)
        while xs.read_many([f"{backend}/state", f"{frontend}/state"]) != [b"4", b"4"]:
            assert xs.next_event(timeout=20) is not None, "the device never connected"
    finally:
        xs.close()


def test_network_list_shows_live_states_from_the_simulated_host(
    tmp_path: Path, sim_host: SimulatedHost
) -> None:
    for name in ("netdd", "blkdd"):
        sim_host.host.define(name, driver=True)
        sim_host.host.start(name)
    guest = sim_host.host.create_guest("web", vif=("netdd",), vbd=("blkdd",))
    netdd = sim_host.host.domains["netdd"].domid
    wait_until_connected(
        sim_host.server.path,
        f"/local/domain/{netdd}/backend/vif/{guest.domid}/0",
        f"/local/domain/{guest.domid}/device/vif/0",
    )
    config = write_config(tmp_path, sim_host.server.path)

    result = CliRunner().invoke(cli, ["--json", "--config", str(config), "network-list", "web"])

    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    mac = guest.devices[0].params["mac"]
    assert [
        (i["guest"], i["backend"], i["backend_domid"], i["mac"], i["hotplug_status"], i["status"])
        for i in items
    ] == [("web", "netdd", netdd, mac, "connected", "ok")]
    assert (items[0]["backend_state"], items[0]["frontend_state"]) == (4, 4)
    assert "guest_name" not in items[0] and "params" not in items[0]
    assert not (tmp_path / "state" / "registry.json").exists()  # the CLI never writes the daemon's file


def test_without_xenstored_a_recorded_device_that_was_fine_is_unknown_not_ok(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "no-xenstored.sock")
    vif = {**recorded_entry("vif", 0, "netdd", {"mac": "00:16:3e:00:00:01"}), "orphaned": False}
    state.write_json(tmp_path / "state" / "registry.json", {"version": 1, "frontends": [vif]})
    result = CliRunner().invoke(cli, ["--config", str(config), "network-list", "--json"])
    assert result.exit_code == 0, result.output
    assert [i["status"] for i in json.loads(result.stdout)["items"]] == ["unknown"]


def test_an_unknown_guest_is_invalid_input_like_an_unknown_backend(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "no-xenstored.sock")
    result = CliRunner().invoke(cli, ["--config", str(config), "network-list", "nosuch"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.endswith("\nxenddd: 'nosuch' is not a guest served by a configured driver domain\n")
