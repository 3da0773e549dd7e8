"""What libxl writes to xenstore for domains and for devices whose backend is in a driver domain.

Written through xenddd's own adapter as dom0, node for node as DESIGN.md lists them, so registry tests can
stage any state (including ones a well-behaved toolstack never produces) on the simulated xenstored.
"""

from __future__ import annotations

import uuid

from xenddd.adapters.xenstore.client import Xenstore


def create_domain(xs: Xenstore, domid: int, name: str) -> str:
    domain_uuid = str(uuid.uuid4())
    xs.write_many(
        [
            (f"/vm/{domain_uuid}/uuid", domain_uuid),
            (f"/vm/{domain_uuid}/name", name),
            (f"/local/domain/{domid}/name", name),
            (f"/local/domain/{domid}/vm", f"/vm/{domain_uuid}"),
            (f"/local/domain/{domid}/domid", str(domid)),
        ]
    )
    return domain_uuid


def destroy_domain(xs: Xenstore, domid: int, domain_uuid: str) -> None:
    """What destroying a domain removes: its home, its /vm and its /libxl record; not its clients' nodes."""
    xs.rm(f"/local/domain/{domid}")
    xs.rm(f"/vm/{domain_uuid}")
    xs.rm(f"/libxl/{domid}")


def add_vif(xs: Xenstore, dd: int, guest: int, devid: int, mac: str, bridge: str = "xenbr0") -> None:
    params = {"mac": mac, "bridge": bridge, "script": "vif-bridge", "type": "vif"}
    _add_device(xs, dd, guest, "vif", devid, params, {"handle": str(devid), "mac": mac})


def add_vbd(xs: Xenstore, dd: int, guest: int, devid: int, vdev: str, target: str, mode: str = "w") -> None:
    params = {"params": target, "dev": vdev, "mode": mode, "device-type": "disk", "type": "phy"}
    _add_device(xs, dd, guest, "vbd", devid, params, {"virtual-device": str(devid)})


def remove_device(xs: Xenstore, dd: int, guest: int, kind: str, devid: int) -> None:
    xs.rm(f"/local/domain/{dd}/backend/{kind}/{guest}/{devid}")
    xs.rm(f"/local/domain/{guest}/device/{kind}/{devid}")
    xs.rm(f"/libxl/{guest}/device/{kind}/{devid}")


def _add_device(
    xs: Xenstore, dd: int, guest: int, kind: str, devid: int, params: dict[str, str], front: dict[str, str]
) -> None:
    backend = f"/local/domain/{dd}/backend/{kind}/{guest}/{devid}"
    frontend = f"/local/domain/{guest}/device/{kind}/{devid}"
    toolstack = f"/libxl/{guest}/device/{kind}/{devid}"
    backend_nodes = {"frontend": frontend, "frontend-id": str(guest), "online": "1", "state": "4", **params}
    backend_nodes["hotplug-status"] = "connected"
    frontend_nodes = {"backend": backend, "backend-id": str(dd), "state": "4", **front}
    toolstack_nodes = {"frontend": frontend, "backend": backend, **params}
    xs.write_many(
        [(f"{toolstack}/{k}", v) for k, v in toolstack_nodes.items()]
        + [(f"{backend}/{k}", v) for k, v in backend_nodes.items()]
        + [(f"{frontend}/{k}", v) for k, v in frontend_nodes.items()]
    )
