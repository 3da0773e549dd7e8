"""The recovery of one driver domain, as a sequence of phases advanced one level-triggered step at a time.

detaching → waiting-restart → waiting-ready → reattaching → (recovered)   or → failed

Each call to `advance` looks at the real state, takes at most the next steps that are due, saves the record
(intent) before anything destructive, and returns when it wants to be called again. Nothing blocks for a
boot or a handshake: readiness and reattach confirmations arrive as xenstore hints (watches on the readiness
key and the new backends) or, at worst, at the returned re-check time.

Reconnecting a frontend in place is impossible on real Xen (netfront reads its backend only at probe), so a
dead backend's frontends are detached — libxl's "cleanup frontend only" — and attached again with the same
devid, MAC and vdev, which guests' own configuration recognises.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from xenddd.adapters.hypervisor_api import DomainState, Hypervisor
from xenddd.config.spec import DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.model import Frontend, XenbusState
from xenddd.recovery.history import History
from xenddd.recovery.intent import DomainRecord, Incident, IntentLog, PendingFrontend, Phase
from xenddd.recovery.restart_policy import decide_restart
from xenddd.registry.guest_view import GuestView

log = logging.getLogger(__name__)

CONFIRM_RECHECK = 0.5  # frontend state changes are not watched; re-look this often while confirming

PrepareDomain = Callable[[DriverDomainSpec], None]
"""Called before each (re)start: re-hide the driver domain's PCI devices (and reset them per policy)."""

ServedBy = Callable[[str, int | None], list[Frontend]]
"""The registry's frontends of a driver domain's instance (by domid), orphaned ones included."""


class Recovery:
    def __init__(
        self,
        hypervisor: Hypervisor,
        guests: GuestView,
        history: History,
        intents: IntentLog,
        *,
        prepare: PrepareDomain,
        served_by: ServedBy,
        progress: Callable[[str], None],
        watch: Callable[[str], None],
        clock: Callable[[], float],
        max_parallel: int,
        rng: random.Random | None = None,
    ) -> None:
        self._hv = hypervisor
        self._guests = guests
        self._history = history
        self._intents = intents
        self._prepare = prepare
        self._served_by = served_by
        self._progress = progress  # between slow toolstack calls of one pass (see the daemon's watchdog)
        self._watch = watch
        self._clock = clock
        self._max_parallel = max_parallel
        self._rng = rng or random.Random()

    # -- public ----------------------------------------------------------------------------------------

    def advance(
        self, spec: DriverDomainSpec, record: DomainRecord, running_domid: int | None
    ) -> float | None:
        """Take every step of the record's incident that is due; return seconds until the next re-check."""
        incident = record.incident
        assert incident is not None
        if incident.phase is Phase.FAILED:
            return None
        if incident.phase in (Phase.WAITING_READY, Phase.REATTACHING) and running_domid != incident.new_domid:
            self._died_again(spec, record, incident, running_domid)
        if incident.phase is Phase.DETACHING:
            self._detach(spec, record, incident)
            if incident.phase is Phase.DETACHING:
                return CONFIRM_RECHECK
        if incident.phase is Phase.WAITING_RESTART:
            wait = self._restart(spec, record, incident, running_domid)
            if wait is not None:
                return wait
        if incident.phase is Phase.WAITING_READY:
            wait = self._await_ready(spec, record, incident)
            if wait is not None:
                return wait
        if incident.phase is Phase.REATTACHING:
            return self._reattach(spec, record, incident)
        return None

    # -- phases ----------------------------------------------------------------------------------------

    def _detach(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        """The incident (with every frontend) was saved before this; detaching is tolerant of "already
        gone", so progress is saved once at the end rather than after each device."""
        self._guests.refresh()
        for pending in list(incident.frontends):
            if pending.detached:
                continue
            frontend = pending.frontend
            if self._guests.current_domid(frontend) is None:
                self._drop(record, incident, pending, "guest is gone", save=False)
                continue
            self._progress(spec.name)
            try:
                self._hv.detach(frontend.guest_name, frontend.kind, frontend.devid, frontend.params)
            except XendddError as exc:
                pending.last_error = str(exc)
                log.warning("%s: detaching stale %s: %s", spec.name, pending.describe(), exc)
                self._save(record)
                return
            pending.detached = True
        self._event("detached", spec.name, incident, frontends=len(incident.frontends))
        if record.domid is not None and incident.new_domid == record.domid:
            # Somebody else already started a new instance: no restart of ours, go straight to readiness.
            self._enter_ready_wait(spec, record, incident, record.domid)
            return
        self._schedule_restart(spec, record, incident, planned=incident.planned)

    def _restart(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, running_domid: int | None
    ) -> float | None:
        now = self._clock()
        if running_domid is not None:
            # Started meanwhile (e.g. by an operator with xl/virsh): adopt that instance.
            self._enter_ready_wait(spec, record, incident, running_domid)
            return None
        if now < incident.not_before:
            return incident.not_before - now
        record.restart_times.append(now)
        self._save(record)
        try:
            self._prepare(spec)
            self._hv.define(spec)
            info = self._hv.start(spec.name)
        except XendddError as exc:
            self._event("restart-failed", spec.name, incident, error=str(exc))
            log.error("%s: restart failed: %s", spec.name, exc)
            self._schedule_restart(spec, record, incident, planned=False)
            return 0.0 if incident.phase is Phase.WAITING_RESTART else None
        if info.domid == incident.dead_domid:  # Xen never reuses a domid at once: that is the dead one
            log.warning(
                "%s: the toolstack still reports dead domid %s as running; retrying", spec.name, info.domid
            )
            record.restart_times.pop()  # not a restart: it must not count towards the crash-loop limit
            self._save(record)
            return 1.0
        record.restarts += 1
        self._event("restarted", spec.name, incident, domid=info.domid)
        if info.domid is None:
            self._schedule_restart(spec, record, incident, planned=False)
            return 0.0
        self._enter_ready_wait(spec, record, incident, info.domid)
        return None

    def _await_ready(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> float | None:
        assert incident.new_domid is not None
        readiness = spec.readiness
        ready = readiness.condition == "running"
        if readiness.condition == "xenstore-key":
            value = self._guests.read(f"/local/domain/{incident.new_domid}/{readiness.key}")
            ready = value is not None and value.decode("utf-8", "replace") == readiness.value
        elif readiness.condition == "backend-initwait":
            ready = self._first_backend_waiting(spec, record, incident)
        now = self._clock()
        if ready:
            self._event("ready", spec.name, incident, domid=incident.new_domid)
            incident.phase = Phase.REATTACHING
            self._save(record)
            return None
        if now >= incident.ready_deadline:
            self._event("not-ready", spec.name, incident, timeout=readiness.timeout_seconds)
            log.error(
                "%s: not ready within %.0f s; destroying it to try again",
                spec.name,
                readiness.timeout_seconds,
            )
            self._hv.destroy(spec.name)
            self._schedule_restart(spec, record, incident, planned=False)
            return 0.0
        return min(incident.ready_deadline - now, CONFIRM_RECHECK)

    def _first_backend_waiting(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident
    ) -> bool:
        """`backend-initwait`: attach one frontend and call the domain ready once its backend reaches
        InitWait — the earliest proof that netback/blkback and the hotplug machinery run in it."""
        assert incident.new_domid is not None
        pending = [p for p in incident.frontends if not p.attached]
        if not pending and not any(p.attached for p in incident.frontends):
            return True
        first = next((p for p in incident.frontends if p.attached), None) or pending[0]
        if not first.attached:
            self._attach_all(spec, record, incident, [first])
        guest = self._guests.current_domid(first.frontend)
        if guest is None:
            return True
        state = self._guests.backend_state(incident.new_domid, guest, first.frontend)
        return state is not None and XenbusState.INIT_WAIT <= state <= XenbusState.CONNECTED

    def _reattach(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> float | None:
        assert incident.new_domid is not None
        self._guests.refresh()
        now = self._clock()
        due: list[PendingFrontend] = []
        wake: float | None = None
        changed = False
        for pending in list(incident.frontends):
            guest = self._guests.current_domid(pending.frontend)
            if guest is None:
                self._drop(record, incident, pending, "guest is gone", save=False)
                changed = True
                continue
            if pending.attached:
                if self._guests.connected(incident.new_domid, guest, pending.frontend):
                    differs = self._guests.identity_differences(guest, pending.frontend)
                    if differs:  # the guest's own configuration (udev rules, fstab) may not find it
                        self._event(
                            "reattach-differs", spec.name, incident, **pending.event_fields(), **differs
                        )
                    incident.frontends.remove(pending)
                    self._event(
                        "reattached", spec.name, incident, **pending.event_fields(), attempts=pending.attempts
                    )
                    changed = True
                    continue
                if now >= pending.confirm_deadline:
                    self._handshake_stalled(spec, record, incident, pending, guest)
                wake = _earliest(wake, CONFIRM_RECHECK)
                continue
            if self._paused(pending):
                continue  # a paused guest is reattached when it resumes (its RESUMED event wakes us)
            if pending.not_before > now:
                wake = _earliest(wake, pending.not_before - now)
                continue
            due.append(pending)
        if changed:
            self._save(record)  # confirmations are not destructive: one save per pass is enough
        if due:
            self._attach_all(spec, record, incident, due)
            wake = _earliest(wake, 0.0)
        if not incident.frontends:
            self._finish(spec, record, incident)
            return None
        return wake

    # -- helpers ---------------------------------------------------------------------------------------

    def _attach_all(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, due: list[PendingFrontend]
    ) -> None:
        """Attach in parallel (bounded); a device already served by the new instance is not attached twice."""
        assert incident.new_domid is not None
        new_domid = incident.new_domid
        todo = []
        deadline = self._clock() + spec.readiness.reattach_timeout_seconds
        for pending in due:
            guest = self._guests.current_domid(pending.frontend)
            if guest is not None and self._guests.frontend_backend_id(guest, pending.frontend) == new_domid:
                pending.attached = True  # done before a daemon restart: never attach twice
                pending.confirm_deadline = deadline
            else:
                pending.attempts += 1
                todo.append(pending)
        self._save(record)
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(self._max_parallel, len(todo))) as pool:
            results = list(pool.map(lambda p: self._attach_one(spec, p), todo))
        for pending, error in zip(todo, results, strict=True):
            if error is None:
                pending.attached = True
                pending.last_error = None
                pending.confirm_deadline = self._clock() + spec.readiness.reattach_timeout_seconds
                guest = self._guests.current_domid(pending.frontend)
                if guest is not None:
                    self._watch(
                        f"/local/domain/{guest}/device/{pending.frontend.kind.value}/{pending.frontend.devid}/state"
                    )
            else:
                self._attach_failed(spec, record, incident, pending, error)
        self._save(record)

    def _attach_failed(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        incident: Incident,
        pending: PendingFrontend,
        error: str,
    ) -> None:
        record.reattach_failures += 1
        pending.last_error = error
        delay = pending.retry_delay()
        pending.not_before = self._clock() + delay
        self._event(
            "reattach-failed", spec.name, incident, **pending.event_fields(), error=error, retry_in=delay
        )
        log.error(
            "%s: reattaching %s failed (retry in %.0f s): %s", spec.name, pending.describe(), delay, error
        )

    def _handshake_stalled(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        incident: Incident,
        pending: PendingFrontend,
        guest: int,
    ) -> None:
        """Attached, but not Connected in time: a stalled handshake is not waited on forever (nothing
        would ever finish the recovery); the device is detached and, backing off, attached again."""
        assert incident.new_domid is not None
        front = self._guests.frontend_state(guest, pending.frontend)
        back = self._guests.backend_state(incident.new_domid, guest, pending.frontend)
        error = (
            f"not Connected within {spec.readiness.reattach_timeout_seconds:.0f} s "
            f"(frontend {_state_name(front)}, backend {_state_name(back)})"
        )
        frontend = pending.frontend
        try:
            self._hv.detach(frontend.guest_name, frontend.kind, frontend.devid, frontend.params)
        except XendddError as exc:
            pending.last_error = f"{error}; detaching it to attach it again: {exc}"
            pending.confirm_deadline = self._clock() + pending.retry_delay()
            log.warning("%s: %s %s", spec.name, pending.describe(), pending.last_error)
            self._save(record)
            return
        pending.attached = False
        self._attach_failed(spec, record, incident, pending, error)
        self._save(record)

    def _attach_one(self, spec: DriverDomainSpec, pending: PendingFrontend) -> str | None:
        frontend = pending.frontend
        try:
            self._hv.attach(frontend.guest_name, frontend.kind, frontend.devid, frontend.params, spec.name)
        except XendddError as exc:
            return str(exc)
        return None

    def _paused(self, pending: PendingFrontend) -> bool:
        info = self._hv.domain(pending.frontend.guest_name)
        return info is not None and info.state is DomainState.PAUSED

    def _schedule_restart(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, planned: bool
    ) -> None:
        now = self._clock()
        if planned:
            incident.phase, incident.not_before = Phase.WAITING_RESTART, now
        else:
            decision = decide_restart(spec.restart, record.restart_times, now, self._rng)
            if decision.failed:
                incident.phase = Phase.FAILED
                record.failed = True
                self._event(
                    "failed",
                    spec.name,
                    incident,
                    restarts=len(record.restart_times),
                    window=spec.restart.window_seconds,
                    waiting=len(incident.frontends),
                )
                log.error(
                    "%s: %d restarts within %.0f s; marked failed until `xenddd restart %s`",
                    spec.name,
                    spec.restart.max_restarts,
                    spec.restart.window_seconds,
                    spec.name,
                )
            else:
                incident.phase, incident.not_before = Phase.WAITING_RESTART, now + decision.delay
                self._event("restart-scheduled", spec.name, incident, delay=round(decision.delay, 3))
        incident.planned = False
        self._save(record)

    def _enter_ready_wait(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, domid: int
    ) -> None:
        record.domid = domid
        incident.new_domid = domid
        incident.phase = Phase.WAITING_READY
        incident.ready_deadline = self._clock() + spec.readiness.timeout_seconds
        if spec.readiness.condition == "xenstore-key":
            self._watch(f"/local/domain/{domid}/{spec.readiness.key}")
        self._save(record)

    def _died_again(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, running_domid: int | None
    ) -> None:
        """Every frontend of the incident points at the dead instance again, and so do those already
        confirmed on it (no longer in the incident): all of them are detached and reattached anew."""
        record.crashes += 1
        for pending in incident.frontends:
            pending.attached = False
            pending.detached = False
        known = {pending.key for pending in incident.frontends}
        confirmed = [f for f in self._served_by(spec.name, incident.new_domid) if f.key not in known]
        incident.frontends.extend(PendingFrontend(f) for f in confirmed)
        self._event(
            "crashed-again",
            spec.name,
            incident,
            domid=incident.new_domid,
            frontends=len(incident.frontends),
        )
        incident.dead_domid, incident.new_domid = incident.new_domid, running_domid
        incident.phase = Phase.DETACHING
        record.domid = running_domid
        self._save(record)

    def _finish(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        now = self._clock()
        entry = self._event(
            "recovered", spec.name, incident, domid=incident.new_domid, dropped=len(incident.dropped)
        )
        record.last_incident = {
            "id": incident.id,
            "reason": incident.reason,
            "detected_at": incident.detected_at,
            "recovered_at": entry["ts"],
            "mttr_seconds": round(now - incident.detected_at, 3),
            "dropped": list(incident.dropped),
        }
        record.incident = None
        self._save(record)
        log.info("%s: recovered in %.2f s (incident %s)", spec.name, now - incident.detected_at, incident.id)

    def _drop(
        self, record: DomainRecord, incident: Incident, pending: PendingFrontend, why: str, save: bool = True
    ) -> None:
        incident.frontends.remove(pending)
        incident.dropped.append(pending.describe())
        self._event("dropped", record.name, incident, **pending.event_fields(), reason=why)
        if save:
            self._save(record)

    def _event(self, event: str, dd: str, incident: Incident, **fields: object) -> dict[str, object]:
        return self._history.record(event, driver_domain=dd, incident=incident.id, **fields)

    def _save(self, record: DomainRecord) -> None:
        self._intents.save(record)


def _state_name(state: XenbusState | None) -> str:
    return "absent" if state is None else state.name


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)
