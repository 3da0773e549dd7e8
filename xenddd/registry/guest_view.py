"""What recovery needs to know about guests and their devices, read fresh from xenstore every time.

Guest names and UUIDs come from dom0-owned nodes (`/local/domain/<id>/{name,vm}`); device states come from
the frontend (guest-writable) and backend (driver-domain-writable) nodes and are parsed strictly — a hostile
value simply reads as "not connected", which can delay a confirmation but never cause an action.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.model import Frontend, FrontendKey, VifParams, XenbusState
from xenddd.registry.backend_restore import restore_backend
from xenddd.registry.domain_directory import DomainDirectory
from xenddd.registry.records import (
    backend_path,
    frontend_path,
    guest_backends_path,
    parse_domid,
    parse_state,
    toolstack_path,
)
from xenddd.registry.toolstack_records import recorded_frontends


class GuestView:
    def __init__(self, xenstore: Xenstore, domains: DomainDirectory) -> None:
        self._xs = xenstore
        self._domains = domains

    def renamed(self, uuid: str) -> None:
        """A domain xenddd renamed (a standby promoted): read its name again, not the cached one. The
        backend watcher learns it from /vm too, but a pass may run before its event is handled."""
        self._domains.renamed(uuid)

    def refresh(self) -> None:
        self._domains.refresh()

    def recorded(self, guest_domid: int, frontend: Frontend) -> bool:
        """Whether dom0's toolstack still records the device (libxl removes it with the domain)."""
        return (
            self._xs.read(f"{toolstack_path(guest_domid, frontend.kind, frontend.devid)}/backend") is not None
        )

    def is_running(self, domid: int) -> bool:
        """Whether xenstore still lists the domain (as of the last refresh)."""
        return self._domains.is_running(domid)

    def current_domid(self, frontend: Frontend) -> int | None:
        """The running instance of the frontend's guest, matched by name AND UUID (a guest recreated under
        the same name with another UUID is a different guest), or None if it is gone."""
        domid = self._domains.domid_of(frontend.guest_name)
        if domid is None:
            return None
        identity = self._domains.identity(domid)
        if identity is None or identity.uuid != frontend.guest_uuid:
            return None
        return domid

    def attached_to_many(self, driver_domid: int, devices: Sequence[tuple[int, Frontend]]) -> list[bool]:
        """For each (guest domid, frontend): whether the toolstack attached the device to instance
        `driver_domid` — dom0's own record (`/libxl/<guest>/device/<kind>/<devid>/backend`, which neither
        the guest nor a driver domain can write) names that instance's backend. The guest's `backend-id`
        is not asked: a guest can write the next domid there before the new instance exists. One
        pipelined round trip for all."""
        records = self._xs.read_many(
            [f"{toolstack_path(g, f.kind, f.devid)}/backend" for g, f in devices] if devices else []
        )
        return [
            recorded == backend_path(driver_domid, f.kind, g, f.devid).encode()
            for (g, f), recorded in zip(devices, records, strict=True)
        ]

    def recorded_on(
        self,
        driver_name: str,
        driver_domid: int,
        known: Collection[FrontendKey] = (),
        guests: Collection[int] | None = None,
    ) -> list[Frontend]:
        """The running guests' devices (those of `guests`, if given) dom0's toolstack records as served by
        that instance (see `toolstack_records`), but for those `known`: what a dead instance leaves to
        recover when the registry never saw it, or a driver domain's own devices its upstream serves."""
        return recorded_frontends(self._xs, self._domains, driver_name, driver_domid, known, guests)

    def frontend_state(self, guest_domid: int, frontend: Frontend) -> XenbusState | None:
        return parse_state(
            self._xs.read(f"{frontend_path(guest_domid, frontend.kind, frontend.devid)}/state")
        )

    def backend_state(self, driver_domid: int, guest_domid: int, frontend: Frontend) -> XenbusState | None:
        path = backend_path(driver_domid, frontend.kind, guest_domid, frontend.devid)
        return parse_state(self._xs.read(f"{path}/state"))

    def connected_many(self, driver_domid: int, devices: Sequence[tuple[int, Frontend]]) -> list[bool]:
        """For each (guest domid, frontend): both ends Connected (XenbusState 4) through `driver_domid`,
        the only proof that a reattach worked, and attached to that instance by dom0's own record (see
        `attached_to_many`). One pipelined round trip for all: a recovery re-checks every attached frontend on
        each pass, which must not cost four latencies each."""
        paths = []
        for guest_domid, frontend in devices:
            front = frontend_path(guest_domid, frontend.kind, frontend.devid)
            back = backend_path(driver_domid, frontend.kind, guest_domid, frontend.devid)
            record = toolstack_path(guest_domid, frontend.kind, frontend.devid)
            paths += [f"{record}/backend", f"{front}/backend-id", f"{front}/state", f"{back}/state"]
        values = self._xs.read_many(paths) if paths else []
        backends = [
            backend_path(driver_domid, frontend.kind, guest_domid, frontend.devid).encode()
            for guest_domid, frontend in devices
        ]
        return [
            values[i] == backend
            and parse_domid(values[i + 1]) == driver_domid
            and parse_state(values[i + 2]) is XenbusState.CONNECTED
            and parse_state(values[i + 3]) is XenbusState.CONNECTED
            for backend, i in zip(backends, range(0, len(values), 4), strict=True)
        ]

    def identity_differences_many(
        self, devices: Sequence[tuple[int, Frontend]]
    ) -> list[dict[str, list[str | None]]]:
        """For each (guest domid, frontend): what the guest's own configuration keys on (MAC and bridge;
        vdev), as dom0's `/libxl` record of the device now at the frontend's devid says, where it differs
        from before: {field: [was, is]}. The devid itself is the same by construction (this is the record
        at that devid). One pipelined round trip for all."""
        befores = [_identity(frontend) for _g, frontend in devices]
        paths = [
            f"{toolstack_path(g, frontend.kind, frontend.devid)}/{key}"
            for (g, frontend), before in zip(devices, befores, strict=True)
            for key in before
        ]
        values = iter(self._xs.read_many(paths) if paths else [])
        found = []
        for before in befores:
            differences: dict[str, list[str | None]] = {}
            for key, was in before.items():
                raw = next(values)
                now = raw.decode("utf-8", "replace").lower() if key == "mac" and raw else _decoded(raw)
                if now != was:
                    differences["vdev" if key == "dev" else key] = [was, now]
            found.append(differences)
        return found

    def read(self, path: str) -> bytes | None:
        return self._xs.read(path)

    def release_pci_backend(self, dead_domid: int) -> bool:
        """Remove the state node of dom0's PCI backend for a driver domain that died. libxl's destroy of a
        PV domain asks pciback to reconfigure its devices away and then waits for the backend to be
        Connected again, which only the domain's pcifront brings about: a dead one never does, and the
        destroy hangs 10 s (libxl__wait_for_backend's 100 reads) before it releases the devices. With no
        state node that wait ends at its next read, and the devices go back to pciback at once. Only for
        a domain that can never run again, which the caller checks; True if there was a node to remove."""
        state = f"/local/domain/0/backend/pci/{dead_domid}/0/state"
        if self._xs.read(state) is None:
            return False
        self._xs.rm(state)
        return True

    def release_dead_backend(self, dead_domid: int, guest_domid: int, frontend: Frontend) -> None:
        """Remove the backends a dead driver domain kept for the guest's devices of the frontend's kind:
        libxl's detach of a frontend whose backend is gone cleans up the frontend only, at once, where
        one whose backend is still there waits for it to close (10 s, then forced). The remains' destroy
        would remove them too, a second or more later under emulation. The guest's whole directory
        goes, not the device's alone: libxl's cleanup of a backend path found absent with its parent
        stops there, where one found absent under a parent that is there removes each parent it leaves
        empty (`backend/<kind>`, which every detach from that driver domain shares, and the destroy
        removes): oxenstored's replay of a detach's transaction that met another's commit then fails,
        and libxl does it all again (up to half a second each on the test bed). Only for an instance
        that can never run again, which the caller checks; the path is dom0's own: domids, nothing read
        from it."""
        self._xs.rm(guest_backends_path(dead_domid, frontend.kind, guest_domid))

    def restore_backend(self, driver_domid: int, guest_domid: int, frontend: Frontend) -> str | None:
        """The device's backend directory written again for `driver_domid` (see backend_restore); None
        once it is there, else why it cannot be."""
        return restore_backend(self._xs, driver_domid, guest_domid, frontend.kind, frontend.devid)


def _identity(frontend: Frontend) -> dict[str, str | None]:
    params = frontend.params
    if isinstance(params, VifParams):
        return {"mac": params.mac, "bridge": params.bridge}
    return {"dev": params.vdev}


def _decoded(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw is not None else None
