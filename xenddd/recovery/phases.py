"""The recovery of one driver domain, as phases advanced one level-triggered step at a time.

detected → waiting-restart → waiting-ready → reattaching → (recovered)   or → failed
    └── stale frontends detached beside the restart ──┘

Each call to `advance` looks at the real state, takes the steps that are due, saves the record (intent)
before anything destructive, and returns when it wants to be called again. Nothing blocks: toolstack calls
(the start, each detach and attach) run on workers (`ToolstackCalls`) and wake the loop when they return;
readiness and reattach confirmations arrive as xenstore hints (watches on the readiness key, the new
backends and the frontends' states). So the restart is not held up by the detaches, and one driver
domain's slow call never holds another's recovery.

Reconnecting a frontend in place is impossible with stock netfront (it reads its backend only at probe), so
a dead backend's frontends are detached — libxl's "cleanup frontend only" — and attached again with the same
devid, MAC and vdev, which guests' own configuration recognises.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from xenddd.adapters.hypervisor_api import DomainInfo, DomainState, Hypervisor
from xenddd.config.spec import DriverDomainSpec
from xenddd.model import Frontend
from xenddd.recovery.frontend_steps import FrontendSteps, earliest
from xenddd.recovery.history import History
from xenddd.recovery.intent import DomainRecord, Incident, IntentLog, PendingFrontend, Phase
from xenddd.recovery.restart_policy import crash_loop_restarts, decide_restart
from xenddd.recovery.toolstack_calls import CallResult, ToolstackCalls
from xenddd.registry.guest_view import GuestView

log = logging.getLogger(__name__)

READY_RECHECK = 5.0  # readiness is watched; this only bounds what a lost watch event can cost

PrepareDomain = Callable[[DriverDomainSpec], None]
"""Called before each (re)start: re-hide the driver domain's PCI devices (and reset them per policy)."""

ServedBy = Callable[[str, int | None], list[Frontend]]
"""The registry's frontends of a driver domain's instance (by domid), orphaned ones included."""

ALIVE = (DomainState.RUNNING, DomainState.PAUSED, DomainState.OTHER)


def running_domid(info: DomainInfo | None) -> int | None:
    """The domid of a live instance; a crashed or shut-down one that the toolstack still lists is dead."""
    if info is None or info.domid is None or info.state not in ALIVE:
        return None
    return info.domid


class Recovery:
    def __init__(
        self,
        hypervisor: Hypervisor,
        guests: GuestView,
        history: History,
        intents: IntentLog,
        calls: ToolstackCalls,
        *,
        prepare: PrepareDomain,
        served_by: ServedBy,
        watch: Callable[[str], None],
        unwatch: Callable[[str], None],
        clock: Callable[[], float],
        max_parallel: int,
        rng: random.Random | None = None,
    ) -> None:
        self._hv = hypervisor
        self._guests = guests
        self._history = history
        self._intents = intents
        self._calls = calls
        self._prepare = prepare
        self._served_by = served_by
        self._watch = watch
        self._unwatch = unwatch
        self._clock = clock
        self._rng = rng or random.Random()
        self._steps = FrontendSteps(
            hypervisor,
            guests,
            history,
            intents,
            calls,
            watch=watch,
            unwatch=unwatch,
            clock=clock,
            max_parallel=max_parallel,
        )

    # -- public ----------------------------------------------------------------------------------------

    def advance(self, spec: DriverDomainSpec, record: DomainRecord, info: DomainInfo | None) -> float | None:
        """Take every step of the record's incident that is due; return seconds until the next re-check
        (None: a hint will come — a call returning, a watch firing, a lifecycle event)."""
        incident = record.incident
        assert incident is not None
        running = running_domid(info)
        started = self._calls.take((spec.name, "start"))
        self._steps.collect(spec, record, incident)
        if incident.phase in (Phase.WAITING_READY, Phase.REATTACHING) and running != incident.new_domid:
            self._died_again(spec, record, incident, running)
        if incident.phase is Phase.DETECTED:
            self._decide(spec, record, incident)
        dead_present = info is not None and info.domid is not None and info.domid == incident.dead_domid
        wake = self._steps.detach_stale(spec, record, incident, dead_present)
        if incident.phase is Phase.WAITING_RESTART:
            wake = earliest(wake, self._restart(spec, record, incident, running, started))
        if incident.phase is Phase.WAITING_READY:
            wake = earliest(wake, self._await_ready(spec, record, incident))
        if incident.phase is Phase.REATTACHING:
            wake = earliest(wake, self._steps.reattach(spec, record, incident))
            if not incident.frontends:
                self._finish(spec, record, incident)
                return None
        return wake

    def retry_parked(self, spec: DriverDomainSpec, record: DomainRecord, domid: int) -> float | None:
        """Outside any incident: the parked frontends' slow retries on the running instance `domid`."""
        self._steps.collect(spec, record, None)
        return self._steps.retry_parked(spec, record, domid)

    def abandon(self, spec: DriverDomainSpec, incident: Incident) -> None:
        """An incident replaced by another (a planned restart): its watches go with it."""
        self._steps.forget_watches(incident)
        waiting_key = incident.phase is Phase.WAITING_READY and spec.readiness.condition == "xenstore-key"
        if waiting_key and incident.new_domid is not None:
            self._unwatch(f"/local/domain/{incident.new_domid}/{spec.readiness.key}")

    # -- phases ----------------------------------------------------------------------------------------

    def _decide(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        """Just detected: restart at once (or after the crash loop's backoff), while the stale frontends
        are detached — unless somebody else already started a new instance, which is adopted."""
        if incident.new_domid is not None:
            self._enter_ready_wait(spec, record, incident, incident.new_domid)
            return
        self._schedule_restart(spec, record, incident, planned=incident.planned, uptime=incident.dead_uptime)

    def _restart(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        incident: Incident,
        running: int | None,
        started: CallResult | None,
    ) -> float | None:
        if started is not None:
            return self._started(spec, record, incident, started)
        if self._calls.busy((spec.name, "start")):
            return None  # our start is under way; its return wakes us
        now = self._clock()
        if running is not None:
            # Started meanwhile (e.g. by an operator with xl/virsh): adopt that instance.
            self._enter_ready_wait(spec, record, incident, running)
            return None
        if now < incident.not_before:
            return incident.not_before - now
        record.restart_times.append(now)
        self._save(record)
        self._calls.submit((spec.name, "start"), f"{spec.name}: start", lambda: self._start(spec))
        return None

    def _start(self, spec: DriverDomainSpec) -> DomainInfo:
        self._prepare(spec)
        self._hv.define(spec)
        return self._hv.start(spec.name)

    def _started(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, result: CallResult
    ) -> float | None:
        if result.error is not None:
            self._event("restart-failed", spec.name, incident, error=str(result.error))
            log.error("%s: restart failed: %s", spec.name, result.error)
            self._schedule_restart(spec, record, incident, planned=False, uptime=0.0)
            return 0.0 if incident.phase is Phase.WAITING_RESTART else None
        info: DomainInfo = result.value
        if info.domid == incident.dead_domid:  # Xen never reuses a domid at once: that is the dead one
            log.warning(
                "%s: the toolstack still reports dead domid %s as running; retrying", spec.name, info.domid
            )
            record.restart_times.pop()  # not a restart: it must not count towards the crash-loop limit
            incident.not_before = self._clock() + 1.0
            self._save(record)
            return 1.0
        record.restarts += 1
        self._event("restarted", spec.name, incident, domid=info.domid)
        if info.domid is None:
            self._schedule_restart(spec, record, incident, planned=False, uptime=0.0)
            return 0.0
        record.started_at = self._clock()
        self._enter_ready_wait(spec, record, incident, info.domid)
        return None

    def _await_ready(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> float | None:
        assert incident.new_domid is not None
        readiness = spec.readiness
        ready = readiness.condition == "running"
        key_path = f"/local/domain/{incident.new_domid}/{readiness.key}"
        if readiness.condition == "xenstore-key":
            value = self._guests.read(key_path)
            ready = value is not None and value.decode("utf-8", "replace") == readiness.value
        elif readiness.condition == "backend-initwait":
            ready = self._steps.backend_waiting(spec, record, incident)
        now = self._clock()
        if ready:
            if readiness.condition == "xenstore-key":
                self._unwatch(key_path)
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
            self._schedule_restart(spec, record, incident, planned=False, uptime=0.0)
            return 0.0
        return min(incident.ready_deadline - now, READY_RECHECK)

    # -- transitions -----------------------------------------------------------------------------------

    def _schedule_restart(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        incident: Incident,
        *,
        planned: bool,
        uptime: float | None,
    ) -> None:
        """`uptime`: how long the instance that died had run (None: unknown); a healthy run ends any crash
        loop, so that instance is restarted at once."""
        now = self._clock()
        if planned:
            incident.phase, incident.not_before = Phase.WAITING_RESTART, now
        else:
            record.restart_times = crash_loop_restarts(spec.restart, record.restart_times, uptime)
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
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, running: int | None
    ) -> None:
        """Every frontend of the incident points at the dead instance again, and so do those already
        confirmed on it (no longer in the incident): all of them are detached and reattached anew."""
        record.crashes += 1
        self._steps.forget_watches(incident)
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
        now = self._clock()
        incident.dead_uptime = None if record.started_at is None else now - record.started_at
        incident.dead_domid, incident.new_domid = incident.new_domid, running
        incident.detached_reported = False
        incident.phase = Phase.DETECTED
        record.domid = running
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

    def _event(self, event: str, dd: str, incident: Incident, **fields: object) -> dict[str, object]:
        return self._history.record(event, driver_domain=dd, incident=incident.id, **fields)

    def _save(self, record: DomainRecord) -> None:
        self._intents.save(record)
