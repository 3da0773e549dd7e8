"""A guest device's backend directory written again, for a driver domain's new instance that has the dead
one's domid (an in-place reconnect, recovery/phases): netback and blkback probe it, find the guest's end
still Connected, and map the guest's rings and bind its unbound event channels as they are (BACK_RING_ATTACH,
Linux 5.5/5.6), so the guest's device never goes away.

What is written comes from dom0's own record of the device (`/libxl/<guest>/device/<kind>/<devid>`, libxl's
copy of every backend entry it wrote at the attach), never from the guest or a driver domain: a record that
is gone, or names another backend or frontend than the paths of this device, is not restored. It is laid
out as libxl__device_generic_add lays a new device out: the directory, its permissions (the driver domain
owns it, the guest reads it), then the entries (which inherit them), `state` Initialising and `online` 1, in
one transaction. A directory that is there already is left alone: it was restored before a daemon restart,
and writing it again would pull a live backend from under its guest.

The guest's frontend nodes are given to the new instance too: xenstored drops a permission entry naming a
domain that is gone, or one introduced after the node was last written (domain_adjust_node_perms, XSA-322),
so the new instance, though it has the dead one's domid, could read none of them (EACCES, and netback never
probes). Each node gets the driver domain's read entry again, as libxl gave it at the attach, its other
entries kept as they are — which may only name dom0 and the guest: a node with an entry for another domain
(or owned by one) is not restored, since writing its permissions would revive that entry for whatever
domain has the domid now. The values are not touched — but for a vif's `mtu`, which libxl creates in the
frontend for the backend to write (the vif hotplug script sets it) and which xenstored deleted with its
owner, the dead instance: it is written again (the record's, or libxl's default) and given to the new
one, or the script fails on it and the backend never connects (seen on real Xen).
"""

from __future__ import annotations

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xenstore.transaction import Transaction
from xenddd.model import DeviceKind
from xenddd.registry.records import backend_path, frontend_path, toolstack_path

VIF_MTU = b"1500"  # libxl's default (LIBXL_DEVICE_NIC_MTU): a record has an mtu only when one was given
# what the restore writes itself, whatever the record says
_OWN_KEYS = ("backend", "frontend", "frontend-id", "online", "state")


def restore_backend(
    xs: Xenstore, driver_domid: int, guest_domid: int, kind: DeviceKind, devid: int
) -> str | None:
    """None once the directory is there (written now, or before); else why it cannot be."""
    back = backend_path(driver_domid, kind, guest_domid, devid)
    front = frontend_path(guest_domid, kind, devid)
    record = toolstack_path(guest_domid, kind, devid)

    def write(tx: Transaction) -> str | None:
        if tx.directory(back) is not None:
            return None
        keys = tx.directory(record)
        if not keys:
            return "dom0's record of the device is gone"
        entries = {key: tx.read(f"{record}/{key}") for key in keys}
        if entries.get("backend") != back.encode():
            return "dom0's record of the device names another backend"
        if entries.get("frontend") != front.encode():
            return "dom0's record of the device names another frontend"
        refused = _regrant(tx, front, guest_domid, driver_domid)
        if refused is not None:
            return refused
        if kind is DeviceKind.VIF:
            # libxl's read-only frontend entry, which it gives the backend to write (the vif hotplug
            # script sets it): xenstored deleted it with the dead instance, its owner
            mtu = tx.read(f"{front}/mtu") or entries.get("mtu") or VIF_MTU
            tx.write(f"{front}/mtu", mtu)
            tx.set_perms(f"{front}/mtu", [f"n{driver_domid}", f"r{guest_domid}"])
        tx.mkdir(back)
        tx.set_perms(back, [f"n{driver_domid}", f"r{guest_domid}"])
        for key, value in entries.items():
            if key not in _OWN_KEYS and value is not None:
                tx.write(f"{back}/{key}", value)
        for key, own in (
            ("frontend", front),
            ("frontend-id", str(guest_domid)),
            ("online", "1"),
            ("state", "1"),
        ):
            tx.write(f"{back}/{key}", own)
        return None

    return xs.transaction(write)


def _regrant(tx: Transaction, path: str, guest: int, driver: int) -> str | None:
    """Every node of the subtree at `path` gets `driver`'s read entry back (see the module's docstring)."""
    perms = tx.get_perms(path)
    if perms is None:
        return None  # gone meanwhile: nothing to give
    if any(not entry[1:].isdigit() or int(entry[1:]) not in (0, guest, driver) for entry in perms):
        return f"{path} has permissions for another domain ({' '.join(perms)})"
    owner, others = perms[0], [entry for entry in perms[1:] if int(entry[1:]) != driver]
    tx.set_perms(path, [owner, *others] if int(owner[1:]) == driver else [owner, *others, f"r{driver}"])
    for child in tx.directory(path) or []:
        refused = _regrant(tx, f"{path}/{child}", guest, driver)
        if refused is not None:
            return refused
    return None
