"""The frontends of one incident: detach from the dead backend, attach to the new one, confirm — each
device's toolstack call on a worker of its own (`ToolstackCalls`), a bounded number at a time.

A stale frontend is detached as soon as the toolstack has finished with the dead instance (libvirt's
cleanup of a crashed domain still holds its devices: a detach before that fails, and would cost a retry);
that runs beside the restart, not before it. A frontend is attached once it is detached and the new
instance is ready, and is confirmed only when both ends are Connected — seen through a watch on the
frontend's state (the backend's is watched with the driver domain's backend tree), set for the handshake
and removed after it.

A frontend that is still not Connected after `reattach_attempts` attaches (a guest that does not answer)
is parked: it leaves the incident, which then ends for everybody else, and is retried every PARKED_RETRY
seconds outside any incident (`retry_parked`) until it connects or its guest is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from functools import partial

from xenddd.adapters.hypervisor_api import DomainState
from xenddd.config.spec import DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.model import Frontend, FrontendKey, XenbusState
from xenddd.recovery.handshake_window import HandshakeWindow
from xenddd.recovery.intent import DomainRecord, Incident, PendingFrontend
from xenddd.recovery.tools import RecoveryTools
from xenddd.recovery.toolstack_calls import CallResult

log = logging.getLogger(__name__)

CONFIRM_RECHECK = 5.0  # a handshake is watched; this only bounds what a lost watch event can cost
DETACH_RETRY = 1.0
PARKED_RETRY = 60.0  # a parked frontend's slow schedule
# A device restored in place is served by the new instance's `xl devd`, whose hotplug script libxl kills
# after 40 s: one not Connected well after that never will be, and each second more is the guest's outage.
IN_PLACE_CONFIRM = 60.0


def confirm_seconds(spec: DriverDomainSpec, pending: PendingFrontend) -> float:
    """How long an attached (or restored) device may take to reach Connected."""
    timeout = spec.readiness.reattach_timeout_seconds
    return min(timeout, IN_PLACE_CONFIRM) if pending.restore else timeout


class FrontendSteps:
    def __init__(self, tools: RecoveryTools) -> None:
        self._t = tools
        self._what: dict[Hashable, tuple[str, int | None]] = {}  # call key → (step, new domid then)
        # frontend → its watched state node: a guest that is gone has no domid left to name the path by
        self._watched: dict[FrontendKey, str] = {}
        self._window = HandshakeWindow(tools.calls.workers)

    # -- results ---------------------------------------------------------------------------------------

    def collect(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident | None) -> None:
        """Take every finished device call of this driver domain (of its incident, if one is open, and
        of its parked frontends) and record what it did."""
        changed = False
        by_key = {p.key: p for p in incident.frontends} if incident is not None else {}
        parked = {p.key: p for p in record.parked}
        for key in self._t.calls.keys(lambda k: _is_device_call(k, spec.name)):
            result = self._t.calls.take(key)
            if result is None:
                continue
            step, domid = self._what.pop(key, ("", None))
            assert isinstance(key, tuple)
            if step == "reattach-parked":
                pending = parked.get(key[2])
                if pending is not None and key[2] not in by_key:  # else an incident took it over
                    self._parked_returned(spec, record, pending, domid, result)
                    changed = True
                continue
            pending = by_key.get(key[2])
            if pending is None or incident is None:
                if result.error is not None:  # confirmed before it returned, or its guest is gone
                    log.warning("%s: %s, returning late, failed: %s", spec.name, step, result.error)
                continue
            changed = True
            if step == "detach":
                self._detached(spec, pending, result)
            elif domid != incident.new_domid:
                continue  # about an instance that died since: the next detach covers it
            elif step == "attach":
                self._attached(spec, record, incident, pending, result)
            else:
                self._redetached(spec, record, incident, pending, result)
        if changed:
            self._t.unsaved = True
        if (
            incident is not None
            and not incident.detached_reported
            and _none_stale(incident)
            and not self._detaching(spec, incident)
            and not incident.in_place  # nothing is detached then (but what failed in place, said apart)
        ):
            incident.detached_reported = True
            self._t.event("detached", spec.name, incident, frontends=len(incident.frontends))
            self._t.unsaved = True

    # -- steps -----------------------------------------------------------------------------------------

    def detach_stale(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, dead_present: bool
    ) -> float | None:
        """Submit the detaches that are due; None, or seconds until a failed one may be tried again."""
        if dead_present or _none_stale(incident):
            return None  # the toolstack's cleanup of the dead instance wakes us (a lifecycle event)
        self._t.guests.refresh()
        return self._submit_detaches(spec, record, incident)

    def detach_from_the_dead(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, dead: int
    ) -> float | None:
        """Detach the stale frontends now, while instance `dead` (which can never run again) is still
        listed: its backends of them are removed first, so that each detach cleans up the frontend only
        instead of waiting for the remains' destroy. A backend that cannot be removed leaves every
        detach to wait for that destroy, as ever."""
        if _none_stale(incident):
            return None
        self._t.guests.refresh()
        try:
            for pending in _detachable(incident):
                guest = self._t.guests.current_domid(pending.frontend)
                if guest is not None:
                    self._t.guests.release_dead_backend(dead, guest, pending.frontend)
        except XendddError as exc:
            log.warning("%s: the backends of dead domid %s stay until its destroy: %s", spec.name, dead, exc)
            return None
        return self._submit_detaches(spec, record, incident)

    def _submit_detaches(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident
    ) -> float | None:
        """The detaches due, on the guests' view as last refreshed."""
        now = self._t.clock()
        wake: float | None = None
        for pending in _detachable(incident):
            if self._t.calls.busy(self._key(spec, pending)):
                continue
            if self._t.guests.current_domid(pending.frontend) is None:
                self._drop(record, incident, pending, "guest is gone")
                continue
            if pending.not_before > now:
                wake = earliest(wake, pending.not_before - now)
                continue
            f = pending.frontend
            self._submit(
                spec,
                pending,
                "detach",
                None,
                partial(self._t.hypervisor.detach, f.guest_name, f.kind, f.devid, f.params),
            )
        return wake

    def reattach(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> float | None:
        """Confirm what is attached, attach what is due; None once nothing is left (or only calls run)."""
        assert incident.new_domid is not None
        self._t.guests.refresh()
        now = self._t.clock()
        due: list[PendingFrontend] = []
        wake: float | None = None
        changed = False
        present: list[tuple[PendingFrontend, int]] = []
        attaching: list[tuple[PendingFrontend, int]] = []  # its attach still running
        restore: list[tuple[PendingFrontend, int]] = []  # in place: its backend to write again
        for pending in list(incident.frontends):
            key = self._key(spec, pending)
            guest = self._t.guests.current_domid(pending.frontend)
            if self._t.calls.busy(key):
                if self._what.get(key) == ("attach", incident.new_domid) and guest is not None:
                    attaching.append((pending, guest))
            elif guest is None:
                self._drop(record, incident, pending, "guest is gone")
            else:
                present.append((pending, guest))
        # A device is judged by what xenstore shows, the call that attaches it only hints: one Connected
        # through the new instance by dom0's record is reattached even while its `xl` has not returned
        # (one that outlived its device's handshake by minutes held a whole recovery on a loaded host);
        # its late result finds it gone from the incident and is dropped.
        checked = [(p, g) for p, g in present if p.attached] + attaching
        connected = dict(
            zip(
                (p.key for p, _ in checked),
                self._t.guests.connected_many(incident.new_domid, [(g, p.frontend) for p, g in checked]),
                strict=True,
            )
        )
        present += [(p, g) for p, g in attaching if connected[p.key]]
        confirmed = [(guest, p.frontend) for p, guest in present if connected.get(p.key)]
        differences = dict(
            zip(
                (frontend.key for _g, frontend in confirmed),
                self._t.guests.identity_differences_many(confirmed),
                strict=True,
            )
        )
        for pending, guest in present:
            if pending.key in connected:
                if connected[pending.key]:
                    differs = differences[pending.key]
                    if differs:  # the guest's own configuration (udev rules, fstab) may not find it
                        self._t.event(
                            "reattach-differs", spec.name, incident, **pending.event_fields(), **differs
                        )
                    incident.frontends.remove(pending)
                    self._unwatch(pending)
                    self._window.connected(spec.name)
                    # in place or not: which way this guest got its device back
                    path = {"in_place": pending.restore} if incident.in_place else {}
                    self._t.event(
                        "reattached",
                        spec.name,
                        incident,
                        **pending.event_fields(),
                        attempts=pending.attempts,
                        **path,
                    )
                    changed = True
                elif now >= pending.confirm_deadline or self._backend_gave_up(incident, pending, guest):
                    self._handshake_stalled(spec, incident, pending, guest)
                else:
                    wake = earliest(wake, min(pending.confirm_deadline - now, CONFIRM_RECHECK))
                continue
            if pending.restore:
                restore.append((pending, guest))
                continue
            if not pending.detached:
                continue  # still being detached
            if pending.not_before > now:
                wake = earliest(wake, pending.not_before - now)
                continue
            due.append(pending)
        if restore:  # the rest wait for a handshake to end, as paced attaches do
            restore = restore[: self._window.restore_room(spec.name, self._in_handshake(spec, incident))]
        if changed or restore:
            self._t.unsaved = True
        for pending, guest in restore:
            self._restore(spec, incident, pending, guest)
        self.attach(spec, record, incident, due)
        return wake

    def unprobed(self, incident: Incident) -> list[PendingFrontend]:
        """Attached devices whose time to connect is over while their new backend is still below InitWait:
        the driver domain's kernel never probed them. netback and blkback probe a backend within a second
        of its creation, even under emulation, whatever the guest or the hotplug script does."""
        assert incident.new_domid is not None
        now = self._t.clock()
        stuck = []
        for pending in incident.frontends:
            if not pending.attached or now < pending.confirm_deadline:
                continue
            guest = self._t.guests.current_domid(pending.frontend)
            if guest is None:
                continue
            state = self._t.guests.backend_state(incident.new_domid, guest, pending.frontend)
            if state is not None and state < XenbusState.INIT_WAIT:
                stuck.append(pending)
        return stuck

    def attach_detached(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        """The attaches `reattach` would submit for frontends detached and not yet attached, without its
        confirmations of the others (see Recovery.take_returned)."""
        now = self._t.clock()
        due = [
            p
            for p in incident.frontends
            if p.detached
            and not p.attached
            and not p.restore
            and p.not_before <= now
            and not self._t.calls.busy(self._key(spec, p))
            and self._t.guests.current_domid(p.frontend) is not None  # (a guest gone: the pass drops it)
        ]
        if due:
            self.attach(spec, record, incident, due)

    def _restore(
        self, spec: DriverDomainSpec, incident: Incident, pending: PendingFrontend, guest: int
    ) -> None:
        """In place: the device's backend directory written again in the new instance, which has the dead
        one's domid, and confirmed like an attach (both ends Connected within reattach_timeout). One that
        cannot be restored, or does not connect so, goes the way of a stalled handshake: detached and
        attached anew."""
        assert incident.new_domid is not None
        why = self._t.guests.restore_backend(incident.new_domid, guest, pending.frontend)
        pending.attached = True
        pending.attempts += 1
        pending.confirm_deadline = self._t.clock() + confirm_seconds(spec, pending)
        if why is None:
            self._watch(pending, guest)
            return
        self._redetach(spec, incident, pending, why)

    def attach(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, due: list[PendingFrontend]
    ) -> None:
        """Submit attaches, as many as the driver domain's handshake window has room for (see
        `HandshakeWindow`; their lane runs `max_parallel_reattach` at once); a device the toolstack
        already attached to the new instance (dom0's record says so, not the guest's `backend-id`) is not
        attached twice. Attempts are saved before the calls: a daemon killed meanwhile knows they were
        made."""
        new_domid = incident.new_domid
        assert new_domid is not None
        todo: list[PendingFrontend] = []
        unpaused = [p for p in due if not self._paused(p)]  # a paused guest: when it resumes (its event)
        room = self._window.room(spec.name, self._in_handshake(spec, incident))
        if room is not None:  # the rest wait for a handshake to end (a confirmation, a stall: a pass)
            unpaused = unpaused[:room]
        guests = [self._t.guests.current_domid(p.frontend) for p in unpaused]
        present = [(g, p.frontend) for p, g in zip(unpaused, guests, strict=True) if g is not None]
        attached = iter(self._t.guests.attached_to_many(new_domid, present))
        for pending, guest in zip(unpaused, guests, strict=True):
            if guest is not None and next(attached):
                pending.attached = True  # done before a daemon restart: never attach twice
                pending.confirm_deadline = self._t.clock() + confirm_seconds(spec, pending)
                self._watch(pending, guest)
            else:
                pending.attempts += 1
                todo.append(pending)
        if not due:
            return
        self._t.save(record)  # the attempts, before the attaches
        for pending in todo:
            f = pending.frontend
            attach = partial(self._t.hypervisor.attach, f.guest_name, f.kind, f.devid, f.params, spec.name)
            self._submit(spec, pending, "attach", new_domid, attach)

    def backend_waiting(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> bool:
        """`backend-initwait` readiness: attach one frontend at a time and call the domain ready once the
        backend of any attached one reaches InitWait — the earliest proof that netback/blkback and the
        hotplug machinery run in it. A frontend whose guest is gone or paused, or whose attach failed, is
        passed over for the next one: no guest holds its driver domain's readiness hostage."""
        new_domid = incident.new_domid
        assert new_domid is not None
        probing = False
        candidates: list[PendingFrontend] = []
        now = self._t.clock()
        for pending in incident.frontends:
            guest = self._t.guests.current_domid(pending.frontend)
            if guest is None:
                continue
            if pending.attached:
                state = self._t.guests.backend_state(new_domid, guest, pending.frontend)
                if state is not None and XenbusState.INIT_WAIT <= state <= XenbusState.CONNECTED:
                    return True
                probing = True
            elif self._what.get(self._key(spec, pending), ("", None))[0] == "attach":
                probing = True
            elif pending.detached and pending.not_before <= now and not self._paused(pending):
                candidates.append(pending)
        if not probing and not candidates:
            # nobody left to probe with (every guest gone, paused or backing off): the reattach phase
            # drops the gone ones and waits for the others
            return not any(self._t.guests.current_domid(p.frontend) is not None for p in incident.frontends)
        if not probing:
            self.attach(spec, record, incident, [min(candidates, key=lambda p: p.attempts)])
        return False

    def retry_parked(self, spec: DriverDomainSpec, record: DomainRecord, domid: int) -> float | None:
        """Parked frontends, outside any incident, on their own slow schedule: one whose handshake
        completed is unparked; one due is detached (whatever is left of it) and attached to the running
        instance `domid` in one call, then given `reattach_timeout` to connect. Returns seconds until
        the next look."""
        self._t.guests.refresh()
        now = self._t.clock()
        wake: float | None = None
        changed = False
        for pending in list(record.parked):
            if self._t.calls.busy(self._key(spec, pending)):
                continue
            guest = self._t.guests.current_domid(pending.frontend)
            if guest is None:
                record.parked.remove(pending)
                self._unwatch(pending)
                self._t.history.record(
                    "dropped", driver_domain=spec.name, **pending.event_fields(), reason="guest is gone"
                )
                changed = True
                continue
            if self._t.guests.connected_many(domid, [(guest, pending.frontend)])[0]:
                record.parked.remove(pending)
                self._unwatch(pending)
                self._t.history.record(
                    "reattached", driver_domain=spec.name, **pending.event_fields(), attempts=pending.attempts
                )
                log.info("%s: parked %s connected at last", spec.name, pending.describe())
                changed = True
                continue
            due = max(pending.not_before, pending.confirm_deadline if pending.attached else 0.0)
            if due > now or self._paused(pending):
                wake = earliest(wake, max(due - now, CONFIRM_RECHECK) if pending.attached else PARKED_RETRY)
                continue
            self._unwatch(pending)
            pending.attached, pending.attempts = False, pending.attempts + 1
            pending.not_before = now + PARKED_RETRY
            self._t.save(record)  # the attempt is recorded before the detach it begins with
            f = pending.frontend

            def detach_and_attach(f: Frontend = f) -> None:
                self._t.hypervisor.detach(f.guest_name, f.kind, f.devid, f.params)
                self._t.hypervisor.attach(f.guest_name, f.kind, f.devid, f.params, spec.name)

            self._submit(spec, pending, "reattach-parked", domid, detach_and_attach)
        if changed:
            self._t.unsaved = True
        return wake

    def forget_watches(self, incident: Incident) -> None:
        """The handshake watches of frontends that are about to be detached and attached anew."""
        for pending in incident.frontends:
            self._unwatch(pending)

    # -- what a finished call means --------------------------------------------------------------------

    def _detached(self, spec: DriverDomainSpec, pending: PendingFrontend, result: CallResult) -> None:
        if result.error is None:
            pending.detached = True
            pending.last_error = None
            return
        pending.last_error = str(result.error)
        pending.not_before = self._t.clock() + DETACH_RETRY
        log.warning("%s: detaching stale %s: %s", spec.name, pending.describe(), result.error)

    def _attached(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        incident: Incident,
        pending: PendingFrontend,
        result: CallResult,
    ) -> None:
        guest = self._t.guests.current_domid(pending.frontend)
        if result.error is not None:
            assert incident.new_domid is not None
            recorded = (
                guest is not None
                and self._t.guests.attached_to_many(incident.new_domid, [(guest, pending.frontend)])[0]
            )
            if not recorded:
                self._attach_failed(spec, record, incident, pending, str(result.error))
                return
            # libxl gave up waiting for the backend (its 10 s for InitWait, a driver domain still
            # booting) but left the device in place, where the backend picks it up once loaded: it is
            # confirmed like any attach; detaching and attaching it again cost 20 to 30 s on real Xen
            log.warning(
                "%s: %s: the toolstack did not see its backend start (%s); it is in place, waiting for it",
                spec.name,
                pending.describe(),
                result.error,
            )
        pending.attached = True
        pending.last_error = None
        pending.confirm_deadline = self._t.clock() + spec.readiness.reattach_timeout_seconds
        if guest is not None:
            self._watch(pending, guest)

    def _redetached(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        incident: Incident,
        pending: PendingFrontend,
        result: CallResult,
    ) -> None:
        error = pending.last_error or "handshake stalled"
        if result.error is not None:
            pending.last_error = f"{error}; detaching it to attach it again: {result.error}"
            pending.confirm_deadline = self._t.clock() + pending.retry_delay()
            log.warning("%s: %s %s", spec.name, pending.describe(), pending.last_error)
            return
        pending.attached = False
        self._attach_failed(spec, record, incident, pending, error)

    def _parked_returned(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        pending: PendingFrontend,
        domid: int | None,
        result: CallResult,
    ) -> None:
        if domid != record.domid:
            return  # attached to an instance that died since: its next turn detaches it again
        if result.error is not None:
            pending.last_error = str(result.error)
            log.warning("%s: retrying parked %s: %s", spec.name, pending.describe(), result.error)
            return
        pending.attached = True
        pending.confirm_deadline = self._t.clock() + spec.readiness.reattach_timeout_seconds
        guest = self._t.guests.current_domid(pending.frontend)
        if guest is not None:
            self._watch(pending, guest)

    def _backend_gave_up(self, incident: Incident, pending: PendingFrontend, guest: int) -> bool:
        """The new backend is gone, or closing, before it ever connected: the driver domain's `xl devd`
        removes a device whose hotplug script or InitWait missed libxl's limits (40 s, 10 s), and the
        frontend closes after it. Nothing will connect it; waiting for `reattach_timeout` only costs."""
        assert incident.new_domid is not None
        back = self._t.guests.backend_state(incident.new_domid, guest, pending.frontend)
        return back is None or back in (XenbusState.CLOSING, XenbusState.CLOSED)

    def _handshake_stalled(
        self, spec: DriverDomainSpec, incident: Incident, pending: PendingFrontend, guest: int
    ) -> None:
        """Attached, but not Connected in time, or its backend gave up: a stalled handshake is not
        waited on forever (nothing would ever finish the recovery); the device is detached and, backing
        off, attached again."""
        assert incident.new_domid is not None
        front = self._t.guests.frontend_state(guest, pending.frontend)
        back = self._t.guests.backend_state(incident.new_domid, guest, pending.frontend)
        states = f"frontend {state_name(front)}, backend {state_name(back)}"
        error = (
            f"not Connected within {confirm_seconds(spec, pending):.0f} s ({states})"
            if self._t.clock() >= pending.confirm_deadline
            else f"its new backend gave up before Connected ({states})"
        )
        self._redetach(spec, incident, pending, error)

    def _redetach(
        self, spec: DriverDomainSpec, incident: Incident, pending: PendingFrontend, error: str
    ) -> None:
        """Detached, then (when the detach returns) attached again, backing off; one that was to reconnect
        in place goes the detach/attach way from now on, and says so."""
        if pending.restore:
            error = f"not reconnected in place: {error}"
            self._t.event("in-place-failed", spec.name, incident, **pending.event_fields(), error=error)
            log.warning("%s: %s %s", spec.name, pending.describe(), error)
        pending.last_error = error
        pending.restore = False
        self._unwatch(pending)
        self._window.stalled(spec.name)
        f = pending.frontend
        detach = partial(self._t.hypervisor.detach, f.guest_name, f.kind, f.devid, f.params)
        self._submit(spec, pending, "redetach", incident.new_domid, detach)

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
        pending.detached = False  # what a failed attach left (or a guest put there) is cleaned up first
        if pending.attempts >= spec.readiness.reattach_attempts:
            self._park(spec, record, incident, pending)
            return
        delay = pending.retry_delay()
        pending.not_before = self._t.clock() + delay
        self._t.event(
            "reattach-failed", spec.name, incident, **pending.event_fields(), error=error, retry_in=delay
        )
        log.error(
            "%s: reattaching %s failed (retry in %.0f s): %s", spec.name, pending.describe(), delay, error
        )

    def _park(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, pending: PendingFrontend
    ) -> None:
        """Out of the incident, so that it ends for every other guest; `retry_parked` takes it from here."""
        incident.frontends.remove(pending)
        pending.not_before = self._t.clock() + PARKED_RETRY
        record.parked = [p for p in record.parked if p.key != pending.key] + [pending]
        self._t.event(
            "parked",
            spec.name,
            incident,
            **pending.event_fields(),
            attempts=pending.attempts,
            error=pending.last_error,
            retry_every=PARKED_RETRY,
        )
        log.error(
            "%s: %s not Connected after %d attempts (%s); parked, retried every %.0f s",
            spec.name, pending.describe(), pending.attempts, pending.last_error, PARKED_RETRY,
        )  # fmt: skip

    # -- helpers ---------------------------------------------------------------------------------------

    def _submit(
        self,
        spec: DriverDomainSpec,
        pending: PendingFrontend,
        step: str,
        new_domid: int | None,
        call: Callable[[], object],
    ) -> None:
        key = self._key(spec, pending)
        self._what[key] = (step, new_domid)
        self._t.calls.submit(key, f"{spec.name}: {step} {pending.describe()}", call, lane=spec.name)

    def _key(self, spec: DriverDomainSpec, pending: PendingFrontend) -> tuple[str, str, FrontendKey]:
        return (spec.name, "frontend", pending.key)

    def _in_handshake(self, spec: DriverDomainSpec, incident: Incident) -> int:
        """Devices attached and not yet confirmed, or whose attach call runs."""
        return sum(
            p.attached or self._what.get(self._key(spec, p), ("", None))[0] == "attach"
            for p in incident.frontends
        )

    def _detaching(self, spec: DriverDomainSpec, incident: Incident) -> bool:
        """A call other than an attach still runs for one of the incident's frontends. The attaches that
        follow the detaches at once (a promoted standby is ready) do not hold the `detached` report,
        which would otherwise carry their time into the phase."""
        keys = [self._key(spec, p) for p in incident.frontends]
        return any(self._t.calls.busy(k) and self._what.get(k, ("", None))[0] != "attach" for k in keys)

    def _watch(self, pending: PendingFrontend, guest: int) -> None:
        path = _state_path(guest, pending)
        if self._watched.get(pending.key) != path:
            self._unwatch(pending)
            self._watched[pending.key] = path
            self._t.watch(path)

    def _unwatch(self, pending: PendingFrontend) -> None:
        path = self._watched.pop(pending.key, None)
        if path is not None:
            self._t.unwatch(path)

    def _paused(self, pending: PendingFrontend) -> bool:
        info = self._t.hypervisor.domain(pending.frontend.guest_name)
        return info is not None and info.state is DomainState.PAUSED

    def _drop(self, record: DomainRecord, incident: Incident, pending: PendingFrontend, why: str) -> None:
        incident.frontends.remove(pending)
        self._unwatch(pending)
        incident.dropped.append(pending.describe())
        self._t.event("dropped", record.name, incident, **pending.event_fields(), reason=why)
        self._t.unsaved = True


def earliest(current: float | None, candidate: float | None) -> float | None:
    if candidate is None:
        return current
    return candidate if current is None else min(current, candidate)


def _detachable(incident: Incident) -> list[PendingFrontend]:
    """The incident's frontends still attached to the dead instance; a device reconnecting in place is
    never detached: the guest keeps it."""
    return [p for p in incident.frontends if not (p.detached or p.attached or p.restore)]


def _none_stale(incident: Incident) -> bool:
    """No frontend of the incident is still attached to the dead instance."""
    return all(p.detached or p.attached for p in incident.frontends)


def _is_device_call(key: Hashable, driver_domain: str) -> bool:
    return isinstance(key, tuple) and key[:2] == (driver_domain, "frontend")


def _state_path(guest: int, pending: PendingFrontend) -> str:
    f = pending.frontend
    return f"/local/domain/{guest}/device/{f.kind.value}/{f.devid}/state"


def state_name(state: XenbusState | None) -> str:
    return "absent" if state is None else state.name
