"""Which domain runs under which domid, from dom0-owned xenstore nodes only."""

from __future__ import annotations

import threading

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.registry.records import GuestIdentity, parse_domid, parse_guest_identity


class DomainDirectory:
    """Running domains by domid: name and UUID from dom0-owned `/local/domain/<id>/{name,vm}`.

    Cached because a domid's UUID does not change during its life, nor its name but by a rename
    (`renamed`); `refresh()` lists `/local/domain` and reads only domids not seen before, so
    @introduceDomain costs O(new domains).
    """

    def __init__(self, xenstore: Xenstore) -> None:
        self._xs = xenstore
        self._lock = threading.Lock()
        self._by_domid: dict[int, GuestIdentity | None] = {}
        self._by_name: dict[str, set[int]] = {}  # the same, by name: a lookup per frontend stays O(1)
        self.version = 0  # bumped whenever the set of domains (or their identities) may have changed

    def refresh(self, *, reread: bool = False) -> None:
        listing = self._xs.directory("/local/domain") or []
        domids = {d for d in (parse_domid(name) for name in listing) if d is not None}
        with self._lock:
            known = set() if reread else set(self._by_domid)
        new = sorted(domids - known)
        paths = [p for d in new for p in (f"/local/domain/{d}/name", f"/local/domain/{d}/vm")]
        values = self._xs.read_many(paths) if paths else []
        with self._lock:
            gone = set(self._by_domid) - domids
            for domid in gone:
                self._forget(domid)
            for i, domid in enumerate(new):
                self._forget(domid)
                identity = self._by_domid[domid] = parse_guest_identity(values[2 * i], values[2 * i + 1])
                if identity is not None:
                    self._by_name.setdefault(identity.name, set()).add(domid)
            if gone or new:
                self.version += 1

    def renamed(self, uuid: str) -> None:
        """libxl renamed the domain with this UUID (its `/vm/<uuid>/name` changed: a standby promoted, an
        operator's `xl rename`): the next refresh reads its name again."""
        with self._lock:
            for domid in [
                d for d, known in self._by_domid.items() if known is not None and known.uuid == uuid
            ]:
                self._forget(domid)
                self.version += 1

    def identity(self, domid: int) -> GuestIdentity | None:
        with self._lock:
            return self._by_domid.get(domid)

    def is_running(self, domid: int) -> bool:
        with self._lock:
            return domid in self._by_domid

    def domid_of(self, name: str) -> int | None:
        """The running domain called `name`; the newest domid if a dying instance still lingers."""
        with self._lock:
            matches = self._by_name.get(name)
            return max(matches) if matches else None

    def _forget(self, domid: int) -> None:
        identity = self._by_domid.pop(domid, None)
        if identity is not None:
            named = self._by_name[identity.name]
            named.discard(domid)
            if not named:
                del self._by_name[identity.name]
