"""What recovery needs to know about guests and their devices, read fresh from xenstore every time.

Guest names and UUIDs come from dom0-owned nodes (`/local/domain/<id>/{name,vm}`); device states come from
the frontend (guest-writable) and backend (driver-domain-writable) nodes and are parsed strictly — a hostile
value simply reads as "not connected", which can delay a confirmation but never cause an action.
"""

from __future__ import annotations

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.model import Frontend, XenbusState
from xenddd.registry.domain_directory import DomainDirectory
from xenddd.registry.records import backend_path, frontend_path, parse_domid, parse_state, toolstack_path
from xenddd.registry.toolstack_records import recorded_frontends


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

    def attached_to(self, driver_domid: int, guest_domid: int, frontend: Frontend) -> bool:
        """Whether the toolstack attached the device to instance `driver_domid`: dom0's own record
        (`/libxl/<guest>/device/<kind>/<devid>/backend`, which neither the guest nor a driver domain can
        write) names that instance's backend. The guest's `backend-id` is not asked: a guest can write the
        next domid there before the new instance exists."""
        path = backend_path(driver_domid, frontend.kind, guest_domid, frontend.devid)
        recorded = self._xs.read(f"{toolstack_path(guest_domid, frontend.kind, frontend.devid)}/backend")
        return recorded == path.encode()

    def recorded_on(self, driver_name: str, driver_domid: int) -> list[Frontend]:
        """The running guests' devices dom0's toolstack records as served by that instance (see
        `toolstack_records`): what a dead instance leaves to recover when the registry never saw it."""
        return recorded_frontends(self._xs, self._domains, driver_name, driver_domid)

    def frontend_state(self, guest_domid: int, frontend: Frontend) -> XenbusState | None:
        return parse_state(
            self._xs.read(f"{frontend_path(guest_domid, frontend.kind, frontend.devid)}/state")
        )

    def backend_state(self, driver_domid: int, guest_domid: int, frontend: Frontend) -> XenbusState | None:
        path = backend_path(driver_domid, frontend.kind, guest_domid, frontend.devid)
        return parse_state(self._xs.read(f"{path}/state"))

    def connected(self, driver_domid: int, guest_domid: int, frontend: Frontend) -> bool:
        """Attached to that instance (dom0's record) and both ends Connected (XenbusState 4): the only
        proof that a reattach worked."""
        return (
            self.attached_to(driver_domid, guest_domid, frontend)
            and self.frontend_backend_id(guest_domid, frontend) == driver_domid
            and self.frontend_state(guest_domid, frontend) is XenbusState.CONNECTED
            and self.backend_state(driver_domid, guest_domid, frontend) is XenbusState.CONNECTED
        )

    def read(self, path: str) -> bytes | None:
        return self._xs.read(path)
