"""Watches the backend trees of every driver domain and turns xenstore watch events into reconciler hints.

Watches are `@introduceDomain`, `@releaseDomain`, `/vm` (where libxl's rename of a running domain shows:
a standby promoted to a driver domain's name is no new domain), and `/local/domain/<dd>/backend/{vif,vbd}`
of each configured driver domain, re-armed whenever a driver domain appears under a new domid (restart,
promotion) or goes away.
Watch events fire spuriously and coalesce, so an event carries no information beyond "look again here": every
batch of events is reduced to one `XenstoreHint` per device subtree (`.../backend/<kind>/<guest>/<devid>`).
After a lost connection to xenstored comes back, events of the gap are lost: a `ResyncHint` says so.

Threading: `start()` runs one daemon thread ("xenddd-backend-watcher") which is the only consumer of the
xenstore adapter's watch stream; `emit` is called from that thread and must not block for long (a queue's
`put` is the intended use). `stop()` ends the thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from xenddd.adapters.xenstore.client import Reconnected, WatchEvent, Xenstore
from xenddd.adapters.xenstore.errors import XenstoreError
from xenddd.adapters.xenstore.paths import split_path
from xenddd.hints import DomainHint, Hint, ResyncHint, XenstoreHint
from xenddd.model import DeviceKind
from xenddd.registry.domain_directory import DomainDirectory

log = logging.getLogger(__name__)

DOMAIN_WATCHES = ("@introduceDomain", "@releaseDomain")
NAMES_WATCH = "/vm"  # dom0-owned: libxl writes /vm/<uuid>/name at a domain's creation and at its rename
_BATCH_LIMIT = 4096
_DEVICE_DEPTH = 7  # local / domain / <dd> / backend / <kind> / <guest> / <devid>


def backend_watch_paths(driver_domid: int) -> tuple[str, ...]:
    return tuple(f"/local/domain/{driver_domid}/backend/{kind.value}" for kind in DeviceKind)


class BackendWatcher:
    """Keeps xenstore watches on the configured driver domains' backends and reports changes as hints."""

    def __init__(
        self,
        xenstore: Xenstore,
        driver_domains: Iterable[str],
        emit: Callable[[Hint], None],
        *,
        domains: DomainDirectory | None = None,
    ) -> None:
        self._xs = xenstore
        self.driver_domains = tuple(driver_domains)
        self._emit = emit
        self.domains = domains or DomainDirectory(xenstore)
        self._armed: dict[str, int | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        """Start the watcher thread; returns at once (the first arming happens on the thread)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="xenddd-backend-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._xs.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_armed(self, timeout: float) -> bool:
        """True once the watches have been registered the first time (for start-up ordering and tests)."""
        return self._ready.wait(timeout)

    def driver_domids(self) -> dict[str, int | None]:
        """The domid each driver domain's watches are armed for (None: not running)."""
        return dict(self._armed)

    # -- the thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._arm()
                break
            except XenstoreError as exc:
                log.warning("cannot arm xenstore watches yet: %s", exc)
                self._stop.wait(1.0)
        self._ready.set()
        while not self._stop.is_set():
            try:
                self._step(None)  # (stop() wakes it)
            except XenstoreError as exc:
                # The adapter reconnects from next_event and reports Reconnected; re-arming happens then.
                log.warning("xenstore watch handling failed: %s", exc)
            except Exception:  # thread boundary: a bug must not silently end watching
                log.exception("unexpected error in the backend watcher; continuing")
                self._stop.wait(0.5)

    def _arm(self) -> None:
        for path in (*DOMAIN_WATCHES, NAMES_WATCH):
            self._xs.watch(path)
        self._rearm()

    def _step(self, timeout: float | None) -> None:
        first = self._xs.next_event(timeout)
        if first is None:
            return
        batch: list[WatchEvent | Reconnected] = [first]
        while len(batch) < _BATCH_LIMIT:
            more = self._xs.next_event(0)
            if more is None:
                break
            batch.append(more)
        self._handle(batch)

    def _handle(self, batch: list[WatchEvent | Reconnected]) -> None:
        reconnected = any(isinstance(e, Reconnected) for e in batch)
        renamed = [
            uuid for e in batch if isinstance(e, WatchEvent) and (uuid := _renamed_uuid(e)) is not None
        ]
        for uuid in renamed:
            self.domains.renamed(uuid)
        domains_changed = (
            reconnected
            or bool(renamed)
            or any(isinstance(e, WatchEvent) and e.watched in DOMAIN_WATCHES for e in batch)
        )
        paths: dict[str, None] = {}
        for event in batch:
            if isinstance(event, WatchEvent) and event.watched != NAMES_WATCH:
                paths[event.watched if event.watched in DOMAIN_WATCHES else device_subtree(event.path)] = None
        if domains_changed:
            self._rearm()
        for path in paths:
            self._emit(XenstoreHint(path))
        if reconnected:
            self._emit(ResyncHint("reconnected to xenstored; watch events may have been lost"))

    def _rearm(self) -> None:
        """Point the backend watches at each driver domain's current domid."""
        self.domains.refresh()
        for name in self.driver_domains:
            current = self.domains.domid_of(name)
            previous = self._armed.get(name)
            if name in self._armed and current == previous:
                continue
            if previous is not None:
                for path in backend_watch_paths(previous):
                    self._xs.unwatch(path)
            if current is not None:
                for path in backend_watch_paths(current):
                    self._xs.watch(path)
            self._armed[name] = current
            log.info("driver domain %s: backend watches armed for domid %s", name, current)
            self._emit(DomainHint("xenstore", name=name, domid=current))


def _renamed_uuid(event: WatchEvent) -> str | None:
    """The UUID whose `/vm/<uuid>/name` changed, if that is what the event says."""
    if event.watched != NAMES_WATCH:
        return None
    parts = split_path(event.path)
    return parts[1] if len(parts) == 3 and parts[0] == "vm" and parts[2] == "name" else None


def device_subtree(path: str) -> str:
    """Cut a changed path down to its device (`.../backend/<kind>/<guest>/<devid>`): the unit re-read."""
    parts = split_path(path)
    if len(parts) > _DEVICE_DEPTH and parts[:2] == ["local", "domain"] and parts[3] == "backend":
        return "/" + "/".join(parts[:_DEVICE_DEPTH])
    return path
