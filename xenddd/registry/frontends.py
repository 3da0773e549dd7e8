"""The frontend registry: which guest device each driver domain serves, remembered across crashes.

This is the memory that makes reattachment possible: when a driver domain dies its xenstore subtree vanishes
with it, so what it served must have been recorded before. Entries are judged by `records` (hostile input,
cross-checked with dom0's toolstack records), kept in memory and persisted atomically in the state directory
whenever a durable field changes.

Life of an entry: created when a judged backend appears; updated on every re-read; marked `orphaned` while
the driver domain instance that served it is gone (crash, destroy, restart under a new domid) and un-marked
once a backend of the current instance serves it again; removed only when the guest instance is gone or
dom0's toolstack record of the device is gone (detached). A driver domain can thus never erase our memory of
its clients by deleting its own nodes.

Thread-safety: all methods may be called from any thread; reads of xenstore happen outside the lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path

from xenddd import state
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xenstore.errors import XenstoreError, XenstoreUnavailable
from xenddd.model import DeviceKind, Frontend, FrontendKey, XenbusState
from xenddd.registry.complaints import Complaints
from xenddd.registry.device_nodes import read_device_nodes
from xenddd.registry.domain_directory import DomainDirectory
from xenddd.registry.hinted_paths import HintedBackends, group_hinted_paths
from xenddd.registry.persistence import frontend_from_json, frontend_to_json
from xenddd.registry.records import (
    DeviceNodes,
    Judgement,
    Rejection,
    backend_path,
    backend_status,
    judge_device,
    parse_devid,
    parse_domid,
    toolstack_path,
)

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"
FILE_VERSION = 1
_MAX_REMEMBERED_REJECTIONS = 10_000
# A driver domain's backend tree is re-read this many times when reading it fails (each listing already
# restarts a few times when the tree changes under it) before it is judged without that read.
LISTING_ATTEMPTS = 3


_Device = tuple[int, int]  # (guest domid, devid)


class FrontendRegistry:
    """The frontends served by the configured driver domains, verified, persisted, and kept up to date.

    `state_dir=None` keeps the registry in memory only; `read_only` loads it from `state_dir` but never
    writes, nor moves a damaged file aside (the CLI's view while the daemon owns the file); `on_damage`
    hears of a damaged file (the daemon records it in the history).
    """

    def __init__(
        self,
        xenstore: Xenstore,
        driver_domains: Iterable[str],
        *,
        state_dir: Path | None = None,
        domains: DomainDirectory | None = None,
        read_only: bool = False,
        on_damage: state.DamageReport | None = None,
    ) -> None:
        self._xs = xenstore
        self._on_damage = on_damage
        self._read_only = read_only
        self.driver_domains = tuple(driver_domains)
        self.domains = domains or DomainDirectory(xenstore)
        self._path = state_dir / REGISTRY_FILE if state_dir is not None else None
        self._lock = threading.Condition()
        self._entries: dict[FrontendKey, Frontend] = {}
        self._keys_at: dict[tuple[int, DeviceKind, int, int], FrontendKey] = {}  # backend location → key
        self._touched: set[FrontendKey] = set()
        self._settled_version = -1
        self._rejected: dict[str, str] = {}
        self._warned: set[tuple[str, str]] = set()  # (backend path, warning) already said
        self._seen: set[str] | None = None  # during a resync: every backend path judged
        self._complaints = Complaints(log)
        self._troubles: dict[str, str] = {}  # driver domain → why its backend tree could not be read
        self._dirty = False
        self.generation = 0

    # -- queries ---------------------------------------------------------------------------------------

    def frontends(
        self, kind: DeviceKind | None = None, *, guest: str | None = None, backend: str | None = None
    ) -> list[Frontend]:
        """Entries sorted by guest, kind, devid; filter by kind, guest name, or serving driver domain."""
        with self._lock:
            selected = [
                f
                for f in self._entries.values()
                if (kind is None or f.kind is kind)
                and (guest is None or f.guest_name == guest)
                and (backend is None or f.backend_name == backend)
            ]
        return sorted(selected, key=lambda f: (f.guest_name, f.kind.value, f.devid))

    def get(self, key: FrontendKey) -> Frontend | None:
        with self._lock:
            return self._entries.get(key)

    def served_by(self, driver_domain: str) -> list[Frontend]:
        """What `driver_domain` serves or served (orphaned entries included): what recovery reattaches."""
        return self.frontends(backend=driver_domain)

    def rejected(self) -> dict[str, str]:
        """Backend paths currently not believed, with the reason."""
        with self._lock:
            return dict(self._rejected)

    def listing_troubles(self) -> dict[str, str]:
        """Driver domains whose backend tree could not be read on the last attempt, with the error: what
        is known of them is kept meanwhile (see `_confined`)."""
        with self._lock:
            return dict(self._troubles)

    def wait_for(self, predicate: Callable[[FrontendRegistry], bool], timeout: float) -> bool:
        """Block until `predicate(self)` holds after some update, or `timeout` passes; True if it held."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self), timeout)

    # -- updates ---------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the persisted registry (after a daemon restart); `resync()` then reconciles it.

        A damaged file is moved aside and reported (`state.read_json_or_quarantine`; only warned about
        when `read_only`): the registry starts empty and `resync()` rebuilds what xenstore still shows.
        Single malformed entries of a sound file are skipped with a warning.
        """
        if self._path is None:
            return
        items = state.read_json_or_quarantine(
            self._path, _persisted_items, on_damage=self._on_damage, move_aside=not self._read_only
        )
        loaded: dict[FrontendKey, Frontend] = {}
        for item in items or []:
            frontend = frontend_from_json(item)
            if frontend is None:
                log.warning("%s: ignoring a malformed entry: %.200r", self._path, item)
                continue
            loaded[frontend.key] = frontend
        with self._lock:
            self._entries, self._keys_at = {}, {}
            for frontend in loaded.values():
                self._store(frontend)
            self._dirty = False
            self._settled_version = -1
            self._changed()

    def resync(self) -> None:
        """Re-read everything: at start, after a reconnect to xenstored, and whenever in doubt — the names
        and UUIDs of every running domain included.

        Rejections and warnings remembered for backend paths this pass did not find are forgotten: the
        nodes are gone, and a domain must not fill dom0's memory by creating and deleting them.
        """
        self.domains.refresh(reread=True)
        with self._lock:
            self._seen = set()
        try:
            for name in self.driver_domains:
                domid = self.domains.domid_of(name)
                if domid is None:
                    continue
                errors = [
                    error
                    for kind in DeviceKind
                    if (error := self._confined(domid, kind, partial(self._scan, name, domid, kind, None)))
                ]
                with self._lock:
                    if errors:
                        self._troubles[name] = "; ".join(errors)
                    else:
                        self._troubles.pop(name, None)
        finally:
            with self._lock:
                seen, self._seen = self._seen, None
        self._forget_all_but(seen)
        self._complaints.flush()
        self._settle()

    def refresh(self, path: str) -> None:
        """Re-read what a xenstore hint points at: a backend subtree, or `@introduceDomain` and the like."""
        self.refresh_many([path])

    def refresh_many(self, paths: Iterable[str], *, domains_changed: bool = False) -> None:
        """`refresh` for a pass's batch of hints: what each driver domain's hints name — whole kinds,
        guests' directories, devices — is read in one pipelined scan, and the result is settled (and
        persisted) once. During a recovery every backend that comes up is several hints; one by one
        they would cost O(n²). `domains_changed` (a domain's hint) re-reads who runs, as a hinted
        `@introduceDomain` does."""
        domain_events, batches = group_hinted_paths(paths)
        if domain_events or domains_changed:
            self.domains.refresh()
        for (dd_domid, kind), batch in batches.items():
            name = self._driver_name(dd_domid)
            if name is None:
                self.domains.refresh()
                name = self._driver_name(dd_domid)
            if name is None:
                continue
            error = self._confined(dd_domid, kind, partial(self._rescan, name, dd_domid, kind, batch))
            if error is not None:
                with self._lock:
                    self._troubles[name] = error
        self._settle()

    def _rescan(self, name: str, dd_domid: int, kind: DeviceKind, batch: HintedBackends) -> None:
        if batch.everything:
            self._scan(name, dd_domid, kind, None)
            return
        base = f"/local/domain/{dd_domid}/backend/{kind.value}"
        guests = sorted(batch.guests)
        listings = self._xs.directory_many([f"{base}/{g}" for g in guests]) if guests else []
        judged = self._status_changed(dd_domid, kind, [d for d in batch.devices if batch.status_only(*d)])
        devices = dict.fromkeys(sorted(d for d in batch.devices if d not in judged))
        for guest, listing in zip(guests, listings, strict=True):
            devices.update(dict.fromkeys(self._devids(dd_domid, base, guest, listing)))
        if not devices and not guests:
            return

        def scope(guest: int, devid: int) -> bool:
            return batch.covers(guest, devid) and (guest, devid) not in judged

        self._scan(name, dd_domid, kind, list(devices), scope=scope)

    def _status_changed(self, dd_domid: int, kind: DeviceKind, devices: list[_Device]) -> set[_Device]:
        """Devices judged before whose hints name only their live status: that status is re-read (two
        requests, not a dozen) and the entry updated; returns those so handled. A device not recorded at
        this backend, or whose state node is gone, is left to the full scan. Any other change of a
        backend (its frontend, parameters, the device itself) is a hint of its own and re-judges it."""
        with self._lock:
            known = {
                d: self._entries[key]
                for d in devices
                if (key := self._keys_at.get((dd_domid, kind, *d))) is not None
            }
        paths = [
            f"{backend_path(dd_domid, kind, g, d)}/{k}" for g, d in known for k in ("state", "hotplug-status")
        ]
        values = iter(self._xs.read_many(paths) if paths else [])
        handled = set()
        with self._lock:
            for (g, d), frontend in known.items():
                state, hotplug = next(values), next(values)
                if state is None or self._entries.get(frontend.key) is not frontend:
                    continue
                status = backend_status(state, hotplug)
                if status is None:
                    continue  # malformed: the full judgement says so
                self._store(replace(frontend, backend_state=status[0], hotplug_status=status[1]))
                handled.add((g, d))
        return handled

    def _confined(self, dd_domid: int, kind: DeviceKind, scan: Callable[[], None]) -> str | None:
        """Run `scan` of one driver domain's `kind` backends; None, or the error it kept failing with.

        A driver domain owns its backend tree and can make it unreadable (a listing over one reply that
        keeps changing between its parts; xenstored refusing a request about its nodes): that is retried
        a few times, then judged without it — what was known of it stays, its remembered rejections
        included — and never stops the reading of another driver domain's tree. A lost connection to
        xenstored is everybody's trouble and is raised.
        """
        error = ""
        for _attempt in range(LISTING_ATTEMPTS):
            try:
                scan()
            except XenstoreUnavailable:
                raise
            except XenstoreError as exc:
                error = str(exc)
            else:
                return None
        prefix = f"/local/domain/{dd_domid}/backend/{kind.value}/"
        with self._lock:
            if self._seen is not None:
                self._seen.update(p for p in self._rejected if p.startswith(prefix))
                self._seen.update(p for p, _w in self._warned if p.startswith(prefix))
        return error

    # -- scanning --------------------------------------------------------------------------------------

    def _driver_name(self, domid: int) -> str | None:
        identity = self.domains.identity(domid)
        if identity is None or identity.name not in self.driver_domains:
            return None
        return identity.name if self.domains.domid_of(identity.name) == domid else None

    def _scan(
        self,
        name: str,
        dd_domid: int,
        kind: DeviceKind,
        devices: list[_Device] | None,
        scope: Callable[[int, int], bool] | None = None,
    ) -> None:
        """Judge the given devices (all of this driver domain's `kind` if None) in four pipelined batches.
        `scope(guest, devid)` bounds what the scan may find missing (None: everything of that kind)."""
        base = f"/local/domain/{dd_domid}/backend/{kind.value}"
        if devices is None:
            guests = self._guests(dd_domid, base, self._xs.directory(base) or [])
            listings = self._xs.directory_many([f"{base}/{g}" for g in guests])
            devices = [
                d
                for g, names in zip(guests, listings, strict=True)
                for d in self._devids(dd_domid, base, g, names)
            ]
        if any(not self.domains.is_running(g) for g, _ in devices):
            self.domains.refresh()
        nodes = read_device_nodes(self._xs, dd_domid, kind, devices)
        judged: dict[_Device, Judgement] = {}
        for (guest_domid, devid), device_nodes in zip(devices, nodes, strict=True):
            path = backend_path(dd_domid, kind, guest_domid, devid)
            if device_nodes is None:
                continue  # the backend vanished between listing and reading
            verdict = self._judge(name, dd_domid, kind, guest_domid, devid, device_nodes)
            if isinstance(verdict, Rejection):  # what rejects a device is the driver domain's or missing
                self._reject(dd_domid, path, verdict.reason)
            else:
                self._accept(dd_domid, guest_domid, path, verdict)
                judged[(guest_domid, devid)] = verdict
        self._apply(name, dd_domid, kind, judged, scope)

    def _guests(self, dd_domid: int, base: str, names: Iterable[str]) -> list[int]:
        guests = []
        for raw in names:
            domid = parse_domid(raw)
            if domid is None:
                self._reject(dd_domid, f"{base}/{raw}", "not a guest domid")
            else:
                guests.append(domid)
        return guests

    def _devids(self, dd_domid: int, base: str, guest: int, names: Iterable[str] | None) -> list[_Device]:
        found = []
        for raw in names or []:
            devid = parse_devid(raw)
            if devid is None:
                self._reject(dd_domid, f"{base}/{guest}/{raw}", "not a device id")
            else:
                found.append((guest, devid))
        return found

    def _judge(
        self, name: str, dd_domid: int, kind: DeviceKind, guest_domid: int, devid: int, nodes: DeviceNodes
    ) -> Judgement | Rejection:
        guest = self.domains.identity(guest_domid)
        if guest is None:
            return Rejection(f"guest domain {guest_domid} is not running (or has no valid name and vm)")
        return judge_device(name, dd_domid, kind, guest_domid, devid, guest, nodes)

    def _reject(self, source: int, path: str, reason: str) -> None:
        """Remember why `path` is not believed; say so once per reason, within domain `source`'s budget
        of complaints (the driver domain whose backend tree it is)."""
        with self._lock:
            if self._seen is not None:
                self._seen.add(path)
            if self._rejected.get(path) == reason:
                return
            if len(self._rejected) < _MAX_REMEMBERED_REJECTIONS:
                self._rejected[path] = reason
        self._complaints.warn(source, "not trusting backend %s: %s", path, reason)

    def _accept(self, dd_domid: int, guest_domid: int, path: str, verdict: Judgement) -> None:
        """Each warning is charged to the domain whose nodes it is about."""
        said = [(dd_domid, w) for w in verdict.warnings] + [(guest_domid, w) for w in verdict.guest_warnings]
        with self._lock:
            if self._seen is not None:
                self._seen.add(path)
            self._rejected.pop(path, None)
            fresh = [(source, w) for source, w in said if (path, w) not in self._warned]
            self._warned.update(
                (path, w) for _, w in fresh[: max(0, _MAX_REMEMBERED_REJECTIONS - len(self._warned))]
            )
        for source, warning in fresh:
            self._complaints.warn(source, "backend %s: %s", path, warning)

    def _forget_all_but(self, seen: set[str]) -> None:
        with self._lock:
            self._rejected = {p: reason for p, reason in self._rejected.items() if p in seen}
            self._warned = {(p, w) for p, w in self._warned if p in seen}

    def _apply(
        self,
        name: str,
        dd_domid: int,
        kind: DeviceKind,
        judged: dict[_Device, Judgement],
        scope: Callable[[int, int], bool] | None,
    ) -> None:
        """Merge a scan: judged devices are (re)recorded; previously recorded ones of this instance that the
        scan no longer finds (within its scope) stay while dom0's toolstack record still names their
        backend."""
        with self._lock:
            for verdict in judged.values():
                self._store(verdict.frontend)
            missing = [
                f
                for f in self._entries.values()
                if f.backend_name == name
                and f.backend_domid == dd_domid
                and f.kind is kind
                and (f.guest_domid, f.devid) not in judged
                and (scope is None or scope(f.guest_domid, f.devid))
            ]
        if not missing:
            return
        records = self._xs.read_many(
            [f"{toolstack_path(f.guest_domid, kind, f.devid)}/backend" for f in missing]
        )
        with self._lock:
            for frontend, recorded in zip(missing, records, strict=True):
                expected = backend_path(dd_domid, kind, frontend.guest_domid, frontend.devid)
                if recorded == expected.encode():
                    self._store(replace(frontend, backend_state=XenbusState.UNKNOWN, hotplug_status=None))
                else:
                    self._remove(frontend.key)
                    log.info("%s %s %d of %s is gone", name, kind.value, frontend.devid, frontend.guest_name)

    def _settle(self) -> None:
        """Drop entries of vanished guest instances, (un)mark orphans, persist changes, wake waiters."""
        driver_domids = {name: self.domains.domid_of(name) for name in self.driver_domains}
        version = self.domains.version
        newly_orphaned: dict[tuple[str, int], list[str]] = {}  # one line per dead instance, not per device
        with self._lock:
            # Only a change of the domain set can orphan or obsolete an untouched entry.
            keys = list(self._entries) if version != self._settled_version else list(self._touched)
            self._settled_version = version
            self._touched.clear()
            for key in keys:
                frontend = self._entries.get(key)
                if frontend is None:
                    continue
                identity = self.domains.identity(frontend.guest_domid)
                if identity is None or identity.uuid != frontend.guest_uuid:
                    self._remove(key)
                    log.info(
                        "forgetting %s %s %d: the guest is gone",
                        frontend.guest_name,
                        key.kind.value,
                        key.devid,
                    )
                    continue
                orphaned = driver_domids.get(frontend.backend_name) != frontend.backend_domid
                if orphaned != frontend.orphaned:
                    self._store(replace(frontend, orphaned=orphaned))
                    if orphaned:
                        newly_orphaned.setdefault((frontend.backend_name, frontend.backend_domid), []).append(
                            f"{frontend.guest_name} {key.kind.value} {key.devid}"
                        )
            if self._dirty and self._path is not None and not self._read_only:
                document = {
                    "version": FILE_VERSION,
                    "frontends": [frontend_to_json(f) for f in sorted(self._entries.values(), key=_order)],
                }
                state.write_json(self._path, document)
            self._dirty = False
            self._changed()
        for (backend_name, backend_domid), devices in newly_orphaned.items():
            log.warning(
                "%d frontends orphaned: %s (domid %d) is gone (%s%s)",
                len(devices), backend_name, backend_domid, ", ".join(devices[:5]),
                ", …" if len(devices) > 5 else "",
            )  # fmt: skip

    def _store(self, frontend: Frontend) -> None:
        """Record `frontend`; only a change of a durable field makes the state file worth rewriting."""
        previous = self._entries.get(frontend.key)
        if previous is None or frontend_to_json(previous) != frontend_to_json(frontend):
            self._dirty = True
        if previous is not None:
            self._keys_at.pop(_location(previous), None)
        self._entries[frontend.key] = frontend
        self._keys_at[_location(frontend)] = frontend.key
        self._touched.add(frontend.key)

    def _remove(self, key: FrontendKey) -> None:
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._keys_at.pop(_location(previous), None)
            self._dirty = True

    def _changed(self) -> None:
        self.generation += 1
        self._lock.notify_all()


def _persisted_items(document: object) -> list[object]:
    """The entries of a registry file; ValueError if it is not one (see `load`)."""
    if not isinstance(document, dict) or document.get("version") != FILE_VERSION:
        raise ValueError(f"not a version {FILE_VERSION} registry")
    items = document.get("frontends", [])
    if not isinstance(items, list):
        raise ValueError("frontends is not a list")
    return items


def _location(frontend: Frontend) -> tuple[int, DeviceKind, int, int]:
    return (frontend.backend_domid, frontend.kind, frontend.guest_domid, frontend.devid)


def _order(frontend: Frontend) -> tuple[str, str, int]:
    return (frontend.guest_uuid, frontend.kind.value, frontend.devid)
