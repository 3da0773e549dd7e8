"""A dead driver domain's backend directory written again for a new instance with its domid, from dom0's
record only, with the guest's frontend nodes given to that instance; never over a live directory, never
from a record that names another device, never reviving another domain's permission."""

from __future__ import annotations

from tests.registry.libxl_nodes import add_vif, create_domain
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.model import DeviceKind
from xenddd.registry.backend_restore import restore_backend

DD, GUEST = 3, 5
BACK = f"/local/domain/{DD}/backend/vif/{GUEST}/0"
FRONT = f"/local/domain/{GUEST}/device/vif/0"


def crashed(xs: Xenstore) -> None:
    create_domain(xs, GUEST, "web")
    add_vif(xs, DD, GUEST, 0, "00:16:3e:00:00:05", bridge="br0")
    xs.set_perms(FRONT, [f"n{GUEST}", f"r{DD}"])
    xs.rm(f"/local/domain/{DD}")  # the driver domain's home went with it


def test_the_backend_is_written_from_dom0s_record_as_libxl_lays_it_out(xs: Xenstore) -> None:
    crashed(xs)
    assert restore_backend(xs, DD, GUEST, DeviceKind.VIF, 0) is None
    assert xs.get_perms(BACK) == [f"n{DD}", f"r{GUEST}"]
    values = {key: xs.read(f"{BACK}/{key}") for key in xs.directory(BACK) or []}
    assert values == {
        "frontend": FRONT.encode(),
        "frontend-id": b"5",
        "online": b"1",
        "state": b"1",
        "mac": b"00:16:3e:00:00:05",
        "bridge": b"br0",
        "script": b"vif-bridge",
        "type": b"vif",
    }
    assert xs.get_perms(f"{BACK}/state") == [f"n{DD}", f"r{GUEST}"]  # the entries inherit them


def test_a_directory_that_is_there_is_left_alone(xs: Xenstore) -> None:
    crashed(xs)
    assert restore_backend(xs, DD, GUEST, DeviceKind.VIF, 0) is None
    xs.write(f"{BACK}/state", "4")  # connected since
    assert restore_backend(xs, DD, GUEST, DeviceKind.VIF, 0) is None
    assert xs.read(f"{BACK}/state") == b"4"


def test_a_record_that_is_gone_or_names_another_backend_is_not_restored(xs: Xenstore) -> None:
    crashed(xs)
    xs.write(f"/libxl/{GUEST}/device/vif/0/backend", "/local/domain/9/backend/vif/5/0")
    assert (
        restore_backend(xs, DD, GUEST, DeviceKind.VIF, 0)
        == "dom0's record of the device names another backend"
    )
    xs.rm(f"/libxl/{GUEST}/device/vif")
    assert restore_backend(xs, DD, GUEST, DeviceKind.VIF, 0) == "dom0's record of the device is gone"
    assert xs.directory(BACK) is None


def test_a_frontend_node_with_another_domains_permission_is_not_revived(xs: Xenstore) -> None:
    """Writing its permissions again would give that entry to whatever domain has that domid now."""
    crashed(xs)
    xs.set_perms(f"{FRONT}/mac", [f"n{GUEST}", f"r{DD}", "r7"])
    assert (
        restore_backend(xs, DD, GUEST, DeviceKind.VIF, 0)
        == f"{FRONT}/mac has permissions for another domain (n5 r3 r7)"
    )
    assert xs.directory(BACK) is None


def test_every_frontend_node_gives_the_driver_domain_its_read_entry_back(xs: Xenstore) -> None:
    """xenstored drops the entries naming a dead domain; the new instance with its domid gets them again."""
    crashed(xs)
    xs.set_perms(f"{FRONT}/mac", [f"n{GUEST}"])  # as GET_PERMS shows a node once the old instance is gone
    nodes = [FRONT, *(f"{FRONT}/{child}" for child in xs.directory(FRONT) or [])]
    owners = {node: (xs.get_perms(node) or [""])[0] for node in nodes}
    assert restore_backend(xs, DD, GUEST, DeviceKind.VIF, 0) is None
    for node in nodes:
        assert xs.get_perms(node) == [owners[node], f"r{DD}"], node
    assert xs.get_perms(f"{FRONT}/mac") == [f"n{GUEST}", f"r{DD}"]


def test_a_vifs_mtu_node_is_written_again_for_the_new_instance_to_set(xs: Xenstore) -> None:
    """libxl makes it the backend's at the attach; xenstored deleted it with the dead instance."""
    crashed(xs)
    xs.write(f"/libxl/{GUEST}/device/vif/0/mtu", "9000")
    assert restore_backend(xs, DD, GUEST, DeviceKind.VIF, 0) is None
    assert xs.read(f"{FRONT}/mtu") == b"9000"
    assert xs.get_perms(f"{FRONT}/mtu") == [f"n{DD}", f"r{GUEST}"]
