"""What recovery needs to know about guests and their devices, read fresh from xenstore every time.

Guest names and UUIDs come from dom0-owned nodes (`/local/domain/<id>/{name,vm}`); device states come from
the frontend (guest-writable) and backend (driver-domain-writable) nodes and are parsed strictly — a hostile
value simply reads as "not connected", which can delay a confirmation but never cause an action.
"""

from __future__ import annotations

from collections.abc import Sequence

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.model import Frontend, VifParams, XenbusState
from xenddd.registry.domain_directory import DomainDirectory
from xenddd.registry.records import backend_path, frontend_path, parse_domid, parse_state, toolstack_path


class GuestView:
    def __init__(self, xenstore: Xenstore, domains: DomainDirectory) -> None:
        self._xs = xenstore
        self._domains = domains

    def refresh(self) -> None:
        self._domains.refresh()

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

    def frontend_backend_id(self, guest_domid: int, frontend: Frontend) -> int | None:
        """The domid the guest's frontend node says serves it, or None when there is no frontend node."""
        raw = self._xs.read(f"{frontend_path(guest_domid, frontend.kind, frontend.devid)}/backend-id")
        return parse_domid(raw)

    def frontend_state(self, guest_domid: int, frontend: Frontend) -> XenbusState | None:
        return parse_state(
            self._xs.read(f"{frontend_path(guest_domid, frontend.kind, frontend.devid)}/state")
        )

    def backend_state(self, driver_domid: int, guest_domid: int, frontend: Frontend) -> XenbusState | None:
        path = backend_path(driver_domid, frontend.kind, guest_domid, frontend.devid)
        return parse_state(self._xs.read(f"{path}/state"))

    def connected_many(self, driver_domid: int, devices: Sequence[tuple[int, Frontend]]) -> list[bool]:
        """For each (guest domid, frontend): both ends Connected (XenbusState 4) through `driver_domid`,
        the only proof that a reattach worked. One pipelined round trip for all: a recovery re-checks
        every attached frontend on each pass, which must not cost three latencies each."""
        paths = []
        for guest_domid, frontend in devices:
            front = frontend_path(guest_domid, frontend.kind, frontend.devid)
            back = backend_path(driver_domid, frontend.kind, guest_domid, frontend.devid)
            paths += [f"{front}/backend-id", f"{front}/state", f"{back}/state"]
        values = self._xs.read_many(paths) if paths else []
        return [
            parse_domid(values[i]) == driver_domid
            and parse_state(values[i + 1]) is XenbusState.CONNECTED
            and parse_state(values[i + 2]) is XenbusState.CONNECTED
            for i in range(0, len(values), 3)
        ]

    def identity_differences(self, guest_domid: int, frontend: Frontend) -> dict[str, list[str | None]]:
        """What the guest's own configuration keys on (MAC and bridge; vdev), as dom0's `/libxl` record of
        the device now at the frontend's devid says, where it differs from before: {field: [was, is]}.
        The devid itself is the same by construction (this is the record at that devid)."""
        where = toolstack_path(guest_domid, frontend.kind, frontend.devid)
        params = frontend.params
        before: dict[str, str | None] = (
            {"mac": params.mac, "bridge": params.bridge}
            if isinstance(params, VifParams)
            else {"dev": params.vdev}
        )
        differences: dict[str, list[str | None]] = {}
        for key, was in before.items():
            raw = self._xs.read(f"{where}/{key}")
            now = raw.decode("utf-8", "replace").lower() if key == "mac" and raw else _decoded(raw)
            if now != was:
                differences["vdev" if key == "dev" else key] = [was, now]
        return differences

    def read(self, path: str) -> bytes | None:
        return self._xs.read(path)


def _decoded(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw is not None else None
