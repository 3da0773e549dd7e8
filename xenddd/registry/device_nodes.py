"""Reading what a backend entry is judged on: the toolstack record, the backend's and the frontend's nodes."""

from __future__ import annotations

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.model import DeviceKind
from xenddd.registry.records import (
    BACKEND_STATUS_KEYS,
    FRONTEND_KEYS,
    TOOLSTACK_KEYS,
    VBD_PARAM_KEYS,
    VIF_PARAM_KEYS,
    DeviceNodes,
    backend_path,
    frontend_path,
    toolstack_path,
)


def read_device_nodes(
    xs: Xenstore, dd_domid: int, kind: DeviceKind, devices: list[tuple[int, int]]
) -> list[DeviceNodes | None]:
    """Two pipelined batches: list each device's toolstack record, then read the keys worth reading.

    The driver domain's copy of a parameter is read only where the toolstack record lacks it, plus
    the identity key (MAC, params) to report a driver domain that disagrees: ~13 requests per device.
    None marks a backend that has vanished.
    """
    param_keys = VIF_PARAM_KEYS if kind is DeviceKind.VIF else VBD_PARAM_KEYS
    identity_key = param_keys[0]
    bases = [
        (backend_path(dd_domid, kind, g, d), toolstack_path(g, kind, d), frontend_path(g, kind, d))
        for g, d in devices
    ]
    listings = xs.directory_many([t for _b, t, _f in bases])
    plan: list[tuple[int, int, str]] = []  # (device index, owner: 0 backend 1 toolstack 2 frontend, key)
    for i, listing in enumerate(listings):
        if listing is None:  # no toolstack record: rejected below, unless the backend is already gone
            continue
        present = set(listing)
        plan += [(i, 1, k) for k in (*TOOLSTACK_KEYS, *param_keys) if k in present]
        wanted = [k for k in param_keys if k not in present or k == identity_key]
        plan += [(i, 0, k) for k in (*BACKEND_STATUS_KEYS, *wanted)]
        plan += [(i, 2, k) for k in FRONTEND_KEYS]
    values = xs.read_many([f"{bases[i][owner]}/{k}" for i, owner, k in plan])
    collected: list[tuple[dict[str, bytes | None], ...]] = [({}, {}, {}) for _ in devices]
    for (i, owner, key), value in zip(plan, values, strict=True):
        if value is not None:
            collected[i][owner][key] = value
    unrecorded = [i for i, listing in enumerate(listings) if listing is None]
    backend_listings = xs.directory_many([bases[i][0] for i in unrecorded]) if unrecorded else []
    for i, backend_listing in zip(unrecorded, backend_listings, strict=True):
        if backend_listing is not None:
            collected[i][0]["exists"] = b""
    return [
        DeviceNodes(toolstack, backend, frontend) if backend else None
        for backend, toolstack, frontend in collected
    ]
