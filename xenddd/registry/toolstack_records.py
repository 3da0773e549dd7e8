"""What dom0's toolstack records say an instance of a driver domain served — the memory of last resort.

The registry learns a device from its backend, which dies with its driver domain. A device the registry
never saw there — attached in the very instant the driver domain died, or forgotten with a damaged
registry file while the daemon was down — is still named by dom0's own record of it,
`/libxl/<guest>/device/<kind>/<devid>/backend`, which neither a guest nor a driver domain can write. So
when an instance dies, these records are read too: every running guest's device whose record names a
backend of that instance is one to recover, judged like any backend (`judge_device`), only without the
backend's own nodes.
"""

from __future__ import annotations

from collections.abc import Collection

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.model import DeviceKind, Frontend, FrontendKey
from xenddd.registry.domain_directory import DomainDirectory
from xenddd.registry.records import (
    FRONTEND_KEYS,
    TOOLSTACK_KEYS,
    VBD_PARAM_KEYS,
    VIF_PARAM_KEYS,
    DeviceNodes,
    Judgement,
    backend_path,
    frontend_path,
    judge_device,
    parse_devid,
    parse_domid,
    toolstack_path,
)


def recorded_frontends(
    xenstore: Xenstore,
    domains: DomainDirectory,
    driver_name: str,
    driver_domid: int,
    known: Collection[FrontendKey] = (),
    guests: Collection[int] | None = None,
) -> list[Frontend]:
    """The running guests' devices (of those in `guests`, if given) that dom0's toolstack records as
    served by instance `driver_domid`, but for those in `known` (already remembered: only their record's
    `backend` is read). Four pipelined round trips whatever the number of guests."""
    if guests is None:
        listed = (parse_domid(raw) for raw in xenstore.directory("/libxl") or [])
        guests = [g for g in listed if g is not None]
    guests = [g for g in guests if g != driver_domid and domains.identity(g) is not None]
    places = [(g, kind) for g in guests for kind in DeviceKind]
    listings = xenstore.directory_many([f"/libxl/{g}/device/{kind.value}" for g, kind in places])
    devices = [
        (g, kind, devid)
        for (g, kind), names in zip(places, listings, strict=True)
        for devid in (parse_devid(raw) for raw in names or [])
        if devid is not None
    ]
    recorded = xenstore.read_many([f"{toolstack_path(g, kind, d)}/backend" for g, kind, d in devices])
    served = [
        (g, kind, d, identity)
        for (g, kind, d), backend in zip(devices, recorded, strict=True)
        if backend == backend_path(driver_domid, kind, g, d).encode()
        and (identity := domains.identity(g)) is not None
        and FrontendKey(identity.uuid, kind, d) not in known
    ]
    keys_of = {
        kind: (*TOOLSTACK_KEYS, *(VIF_PARAM_KEYS if kind is DeviceKind.VIF else VBD_PARAM_KEYS))
        for kind in DeviceKind
    }
    paths = [
        path
        for g, kind, d, _identity in served
        for path in (
            *(f"{toolstack_path(g, kind, d)}/{k}" for k in keys_of[kind]),
            *(f"{frontend_path(g, kind, d)}/{k}" for k in FRONTEND_KEYS),
        )
    ]
    values = iter(xenstore.read_many(paths) if paths else [])
    found = []
    for g, kind, d, identity in served:
        toolstack = {k: v for k in keys_of[kind] if (v := next(values)) is not None}
        frontend = {k: v for k in FRONTEND_KEYS if (v := next(values)) is not None}
        verdict = judge_device(
            driver_name, driver_domid, kind, g, d, identity, DeviceNodes(toolstack, {}, frontend)
        )
        if isinstance(verdict, Judgement):
            found.append(verdict.frontend)
    return found
