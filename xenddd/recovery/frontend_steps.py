"""The frontends of one incident: detach from the dead backend, attach to the new one, confirm — each
device's toolstack call on a worker of its own (`ToolstackCalls`), a bounded number at a time.

A stale frontend is detached as soon as the toolstack has finished with the dead instance (libvirt's
cleanup of a crashed domain still holds its devices: a detach before that fails, and would cost a retry);
that runs beside the restart, not before it. A frontend is attached once it is detached and the new
instance is ready, and is confirmed only when both ends are Connected — seen through a watch on the
frontend's state (the backend's is watched with the driver domain's backend tree), set for the handshake
and removed after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from functools import partial

from xenddd.adapters.hypervisor_api import DomainState
from xenddd.config.spec import DriverDomainSpec
from xenddd.model import FrontendKey, XenbusState
from xenddd.recovery.intent import DomainRecord, Incident, PendingFrontend
from xenddd.recovery.tools import RecoveryTools
from xenddd.recovery.toolstack_calls import CallResult

log = logging.getLogger(__name__)

CONFIRM_RECHECK = 5.0  # a handshake is watched; this only bounds what a lost watch event can cost
DETACH_RETRY = 1.0


class FrontendSteps:
    def __init__(self, tools: RecoveryTools) -> None:
        self._t = tools
        self._what: dict[Hashable, tuple[str, int | None]] = {}  # call key → (step, new domid then)

    # -- results ---------------------------------------------------------------------------------------

    def collect(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        """Take every finished device call of this driver domain and record what it did."""
        changed = False
        by_key = {p.key: p for p in incident.frontends}
        for key in self._t.calls.keys(lambda k: _is_device_call(k, spec.name)):
            result = self._t.calls.take(key)
            if result is None:
                continue
            step, domid = self._what.pop(key, ("", None))
            assert isinstance(key, tuple)
            pending = by_key.get(key[2])
            if pending is None:
                continue  # dropped meanwhile (its guest is gone)
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
        if not incident.detached_reported and _none_stale(incident) and not self._busy(spec, incident):
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
        now = self._t.clock()
        wake: float | None = None
        for pending in list(incident.frontends):
            if pending.detached or pending.attached or self._t.calls.busy(self._key(spec, pending)):
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
        for pending in list(incident.frontends):
            if self._t.calls.busy(self._key(spec, pending)):
                continue
            guest = self._t.guests.current_domid(pending.frontend)
            if guest is None:
                self._drop(record, incident, pending, "guest is gone")
            else:
                present.append((pending, guest))
        attached = [(g, p.frontend) for p, g in present if p.attached]
        connected = dict(
            zip(
                (p.key for p, _ in present if p.attached),
                self._t.guests.connected_many(incident.new_domid, attached),
                strict=True,
            )
        )
        for pending, guest in present:
            if pending.attached:
                if connected[pending.key]:
                    differs = self._t.guests.identity_differences(guest, pending.frontend)
                    if differs:  # the guest's own configuration (udev rules, fstab) may not find it
                        self._t.event(
                            "reattach-differs", spec.name, incident, **pending.event_fields(), **differs
                        )
                    incident.frontends.remove(pending)
                    self._t.unwatch(_state_path(guest, pending))
                    self._t.event(
                        "reattached", spec.name, incident, **pending.event_fields(), attempts=pending.attempts
                    )
                    changed = True
                elif now >= pending.confirm_deadline or self._backend_gave_up(incident, pending, guest):
                    self._handshake_stalled(spec, incident, pending, guest)
                else:
                    wake = earliest(wake, min(pending.confirm_deadline - now, CONFIRM_RECHECK))
                continue
            if not pending.detached:
                continue  # still being detached
            if pending.not_before > now:
                wake = earliest(wake, pending.not_before - now)
                continue
            due.append(pending)
        if changed:
            self._t.unsaved = True
        self.attach(spec, record, incident, due)
        return wake

    def attach(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, due: list[PendingFrontend]
    ) -> None:
        """Submit attaches (their lane runs `max_parallel_reattach` at once); a device the new instance
        already serves is not attached twice. Attempts are saved before the calls: a daemon killed
        meanwhile knows they were made."""
        new_domid = incident.new_domid
        assert new_domid is not None
        todo: list[PendingFrontend] = []
        for pending in due:
            if self._paused(pending):
                continue  # a paused guest is reattached when it resumes (its lifecycle event wakes us)
            guest = self._t.guests.current_domid(pending.frontend)
            if guest is not None and self._t.guests.frontend_backend_id(guest, pending.frontend) == new_domid:
                pending.attached = True  # done before a daemon restart: never attach twice
                pending.confirm_deadline = self._t.clock() + spec.readiness.reattach_timeout_seconds
                self._t.watch(_state_path(guest, pending))
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
        """`backend-initwait` readiness: attach one frontend and call the domain ready once its backend
        reaches InitWait — the earliest proof that netback/blkback and the hotplug machinery run in it."""
        assert incident.new_domid is not None
        if not incident.frontends:
            return True
        first = next((p for p in incident.frontends if p.attached), None)
        if first is None:
            candidates = [p for p in incident.frontends if p.detached]
            if candidates and not self._t.calls.busy(self._key(spec, candidates[0])):
                self.attach(spec, record, incident, candidates[:1])
            return False
        guest = self._t.guests.current_domid(first.frontend)
        if guest is None:
            return True
        state = self._t.guests.backend_state(incident.new_domid, guest, first.frontend)
        return state is not None and XenbusState.INIT_WAIT <= state <= XenbusState.CONNECTED

    def forget_watches(self, incident: Incident) -> None:
        """The handshake watches of frontends that are about to be detached and attached anew."""
        for pending in incident.frontends:
            if pending.attached:
                guest = self._t.guests.current_domid(pending.frontend)
                if guest is not None:
                    self._t.unwatch(_state_path(guest, pending))

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
        if result.error is not None:
            self._attach_failed(spec, record, incident, pending, str(result.error))
            return
        pending.attached = True
        pending.last_error = None
        pending.confirm_deadline = self._t.clock() + spec.readiness.reattach_timeout_seconds
        guest = self._t.guests.current_domid(pending.frontend)
        if guest is not None:
            self._t.watch(_state_path(guest, pending))

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
        states = f"frontend {_state_name(front)}, backend {_state_name(back)}"
        pending.last_error = (
            f"not Connected within {spec.readiness.reattach_timeout_seconds:.0f} s ({states})"
            if self._t.clock() >= pending.confirm_deadline
            else f"its new backend gave up before Connected ({states})"
        )
        self._t.unwatch(_state_path(guest, pending))
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
        delay = pending.retry_delay()
        pending.not_before = self._t.clock() + delay
        self._t.event(
            "reattach-failed", spec.name, incident, **pending.event_fields(), error=error, retry_in=delay
        )
        log.error(
            "%s: reattaching %s failed (retry in %.0f s): %s", spec.name, pending.describe(), delay, error
        )

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

    def _busy(self, spec: DriverDomainSpec, incident: Incident) -> bool:
        return any(self._t.calls.busy(self._key(spec, p)) for p in incident.frontends)

    def _paused(self, pending: PendingFrontend) -> bool:
        info = self._t.hypervisor.domain(pending.frontend.guest_name)
        return info is not None and info.state is DomainState.PAUSED

    def _drop(self, record: DomainRecord, incident: Incident, pending: PendingFrontend, why: str) -> None:
        incident.frontends.remove(pending)
        incident.dropped.append(pending.describe())
        self._t.event("dropped", record.name, incident, **pending.event_fields(), reason=why)
        self._t.unsaved = True


def earliest(current: float | None, candidate: float | None) -> float | None:
    if candidate is None:
        return current
    return candidate if current is None else min(current, candidate)


def _none_stale(incident: Incident) -> bool:
    """No frontend of the incident is still attached to the dead instance."""
    return all(p.detached or p.attached for p in incident.frontends)


def _is_device_call(key: Hashable, driver_domain: str) -> bool:
    return isinstance(key, tuple) and key[:2] == (driver_domain, "frontend")


def _state_path(guest: int, pending: PendingFrontend) -> str:
    f = pending.frontend
    return f"/local/domain/{guest}/device/{f.kind.value}/{f.devid}/state"


def _state_name(state: XenbusState | None) -> str:
    return "absent" if state is None else state.name
