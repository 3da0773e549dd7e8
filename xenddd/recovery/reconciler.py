"""The reconciler: desired state (config) against observed state (toolstack + xenstore), one pass at a time.

Every pass re-reads the toolstack's view of each driver domain and compares the running instance's domid
with the one recorded: a domain that is gone, or running under a domid xenddd did not start, opened an
incident (see `recovery`). Hints only say when to look; a missed, duplicated or late event changes nothing,
because what is acted on is always what is observed now. All calls happen on one thread (the daemon's), so
planned operations from the control socket never race a recovery.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from xenddd.adapters.hypervisor_api import DomainInfo, Hypervisor, how_it_stopped, running_domid
from xenddd.config.spec import Config, DriverDomainSpec
from xenddd.errors import InputError, XendddError
from xenddd.hints import (
    ControlRequest,
    DomainHint,
    Hint,
    ResyncHint,
    XenstoreHint,
    domain_gone,
)
from xenddd.model import Frontend, FrontendKey
from xenddd.recovery.frontend_steps import earliest
from xenddd.recovery.history import History
from xenddd.recovery.intent import DomainRecord, Incident, IntentLog, PendingFrontend, Phase
from xenddd.recovery.own_devices import OwnDevices
from xenddd.recovery.phases import UPSTREAM_RECHECK, PrepareDomain, Recovery
from xenddd.recovery.saved_instance import Restored, SavedInstances
from xenddd.recovery.stage_clock import StageClock
from xenddd.recovery.standby import Standbys
from xenddd.recovery.tools import RecoveryTools
from xenddd.recovery.toolstack_calls import ToolstackCalls
from xenddd.registry.frontends import FrontendRegistry
from xenddd.registry.guest_view import GuestView

log = logging.getLogger(__name__)

REGISTRY_BATCH = 0.5  # seconds between re-reads of hinted backend paths


class Reconciler:
    def __init__(
        self,
        config: Config,
        hypervisor: Hypervisor,
        registry: FrontendRegistry,
        history: History,
        *,
        guests: GuestView,
        intents: IntentLog,
        prepare: PrepareDomain,
        watch: Callable[[str], None],
        unwatch: Callable[[str], None] = lambda _path: None,
        wake: Callable[[], None] = lambda: None,
        progress: Callable[[str], None] = lambda _name: None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """`progress(name)` is called before each driver domain's turn in a pass: the first pass starts
        them one by one, which on a slow host takes long without anything being stuck (see the daemon).
        `wake()` is called from a worker thread when a recovery's toolstack call returns."""
        self.config = config
        self._progress = progress
        self._hv = hypervisor
        self._registry = registry
        self._history = history
        self._intents = intents
        self._prepare = prepare
        self._clock = clock
        self._guests = guests
        self.calls = ToolstackCalls(wake, workers=config.settings.max_parallel_reattach)
        tools = RecoveryTools(
            hypervisor, guests, history, intents, self.calls, watch=watch, unwatch=unwatch, clock=clock
        )
        self._own_devices = OwnDevices(tools)
        self._standbys = Standbys(tools)
        self._saved = SavedInstances(tools, config.settings.state_dir)
        self._recovery = Recovery(
            tools,
            prepare=prepare,
            served_by=self._served_by,
            upstreams_waited=self._upstreams_waited,
            standbys=self._standbys,
            saved=self._saved,
            rng=rng,
        )
        self._records: dict[str, DomainRecord] = {s.name: intents.load(s.name) for s in config.driver_domains}
        self.last_pass_seconds: float | None = None
        self.pass_cpu = StageClock()
        self._observed: dict[str, DomainInfo] | None = None
        self._errors: dict[str, str] = {}  # driver domain → the error its last failed pass ended with
        self._hinted: dict[str, None] = {}  # xenstore paths hinted and not yet re-read (in order)
        self._registry_read_at = 0.0
        self._listing_errors: dict[str, str] = {}  # driver domain → why its backend tree is unreadable

    # -- the interface the daemon uses ----------------------------------------------------------------

    def reconcile(self, hints: Sequence[Hint] = ()) -> float | None:
        """One level-triggered pass over every configured driver domain, in dependency order."""
        started = time.monotonic()
        stage = self.pass_cpu.stage
        stage("")
        for hint in hints:
            if isinstance(hint, ControlRequest):
                self.handle(hint)
        stage("requests")
        if hints and all(isinstance(h, XenstoreHint) for h in hints) and self._at_rest(hints):
            wake = self._refresh_registry(hints)
            self._report_listing_troubles()
            stage("registry at rest")
            self.last_pass_seconds = time.monotonic() - started
            return wake
        self._take_returned(every_attach=True)
        if any(about_domains(h) for h in hints):
            self._hv.domains_may_have_changed()
        taken = time.monotonic()
        stage("results")
        observed = self._observe()
        stage("listing")
        self._detect_crashes(observed)
        if self._take_returned(every_attach=False):
            observed = self._observe()  # a start returned during the listing: its instance is newer
        listed = time.monotonic()
        stage("detection")
        wake = self._refresh_registry(hints)
        self._report_listing_troubles()
        refreshed = time.monotonic()
        stage("registry")
        for spec in self.config.start_order():
            self._progress(spec.name)
            try:
                delay = self._reconcile_domain(spec, observed.get(spec.name))
            except XendddError as exc:
                self._failed_pass(spec.name, str(exc))
                delay = 5.0
            else:
                self._errors.pop(spec.name, None)
            wake = earliest(wake, delay)
        stage("domains")
        self.last_pass_seconds = time.monotonic() - started
        if log.isEnabledFor(logging.DEBUG):  # where a pass's time goes: its hints, then each stage's
            log.debug(
                "pass for %s: results %.3f s, listing %.3f s, registry %.3f s, domains %.3f s",
                _kinds(hints),
                taken - started,
                listed - taken,
                refreshed - listed,
                time.monotonic() - refreshed,
            )
        return wake

    def _take_returned(self, *, every_attach: bool) -> bool:
        """What the recovery's calls returned, taken as soon as the pass can (see Recovery.take_returned).
        True if a start or promotion returned (an instance or an error): a listing taken before may not
        show what it did."""
        took = False
        for spec in self.config.start_order():
            try:
                if self._recovery.take_returned(spec, self._records[spec.name], every_attach=every_attach):
                    took = True
            except XendddError:
                # the pass's own turn for this domain meets the error again and reports it; a start may
                # have been taken before it (a readiness key's read that failed), so the pass lists again
                took = True
        return took

    def _detect_crashes(self, observed: dict[str, DomainInfo]) -> None:
        """Open the incident of every driver domain whose known instance is gone, and take its first steps
        (the restart or promotion, the stale devices' detaches), before the registry is re-read: what the
        dead instance served is already known, and the re-read takes a while (most of a second with a
        thousand frontends; 0.1 to 0.5 s of a loaded test bed's pass, on the outage's path). The pass
        then goes on as always, and its turn for the domain finds those steps under way."""
        for spec in self.config.start_order():
            record = self._records[spec.name]
            info = observed.get(spec.name)
            if (
                record.incident is None
                and not record.stopped_by_request
                and not record.failed
                and record.domid is not None
                and running_domid(info) is None
            ):
                # an error here: the pass's own turn for this domain meets it again and reports it
                with contextlib.suppress(XendddError):
                    self._reconcile_instance(spec, info, opening_only=True)

    def _at_rest(self, hints: Sequence[Hint]) -> bool:
        """Nothing under way (no incident, no failed pass to retry, no driver domain's own device waiting
        to connect) and no hint about a driver domain's own device or a domain gone: a xenstore change
        then concerns the registry only, and libvirt need not be asked — a driver domain's death comes as
        a lifecycle or domain hint, and the safety resync finds one whose hint was lost. `@releaseDomain`
        is the earliest of those hints: libvirt may list the domain as crashed before it has destroyed
        it and sent its event."""
        quiet = all(not r.incident and not r.parked for r in self._records.values())
        gone = any(domain_gone(h) for h in hints)
        return (
            quiet
            and not gone
            and not self._errors
            and not self._own_devices.waiting()
            and not self._own(hints)
        )

    def _own(self, hints: Sequence[Hint]) -> bool:
        """A hint about a backend (`/local/domain/<upstream>/backend/<kind>/<guest>/…`) whose guest is a
        driver domain with upstreams: its own device may have just left Connected."""
        downstream = {str(self._records[s.name].domid) for s in self.config.driver_domains if s.upstreams}
        return any(
            len(parts := h.path.split("/")) > 6 and parts[4] == "backend" and parts[6] in downstream
            for h in hints
            if isinstance(h, XenstoreHint)
        )

    def _observe(self) -> dict[str, DomainInfo]:
        """The toolstack's domains, listed once per pass; `snapshot(fresh=False)` reuses the listing."""
        self._observed = {d.name: d for d in self._hv.domains()}
        return self._observed

    def _failed_pass(self, name: str, error: str) -> None:
        """Retried on every pass; said once per distinct error (an event, an error line, `status`), not
        every five seconds while the operator fixes the config."""
        if self._errors.get(name) != error:
            self._errors[name] = error
            log.error("%s: %s", name, error)
            self._history.record("error", driver_domain=name, error=error)

    def _report_listing_troubles(self) -> None:
        """A driver domain whose backend tree cannot be read is judged on what was known of it (see the
        registry); said once per distinct error, and once when its tree reads again."""
        troubles = self._registry.listing_troubles()
        for name, error in troubles.items():
            if self._listing_errors.get(name) != error:
                self._listing_errors[name] = error
                log.error("%s: its backend tree cannot be read; keeping what is known: %s", name, error)
                self._history.record("registry-error", driver_domain=name, error=error)
        for name in [n for n in self._listing_errors if n not in troubles]:
            del self._listing_errors[name]
            log.info("%s: its backend tree reads again", name)

    def _refresh_registry(self, hints: Sequence[Hint]) -> float | None:
        """Re-read only what xenstore hints point at; everything on a resync (the daemon's start, a
        reconnect, SIGHUP, the safety timer: what makes a missed watch event harmless).

        A domain's hint (a lifecycle event, a driver domain's watches re-armed) re-reads who runs, at once
        — gone guests are forgotten, a dead instance's entries orphaned — but no backend tree: whatever a
        domain's coming or going changes there is a watch event of its own (a new instance's watches fire
        when armed), and re-reading every tree on each of a recovery's several lifecycle events was most
        of the registry's requests in a recovery of the simulated host's two driver domains.

        Hinted paths are re-read in batches at most every REGISTRY_BATCH seconds: while a recovery's calls
        return one by one (each a pass), every new backend goes through several states, and re-reading
        each device on every pass would cost many times the devices. Returns when the batch is due."""
        now = time.monotonic()
        if not hints or any(isinstance(h, ResyncHint) for h in hints):
            self._registry.resync()
            self._hinted.clear()
            self._registry_read_at = now
            return None
        self._hinted.update(dict.fromkeys(h.path for h in hints if isinstance(h, XenstoreHint)))
        domains_changed = any(isinstance(h, DomainHint) for h in hints)
        if not self._hinted and not domains_changed:
            return None
        due = self._registry_read_at + REGISTRY_BATCH
        if now < due and not domains_changed:
            return due - now
        self._registry.refresh_many(list(self._hinted), domains_changed=domains_changed)
        self._hinted.clear()
        self._registry_read_at = now
        return None

    def handle(self, request: ControlRequest) -> None:
        """Planned operations and queries; replies exactly once, with `ok` and either data or an error."""
        try:
            reply = self._dispatch(request)
        except XendddError as exc:
            request.reply({"ok": False, "error": str(exc), "exit_code": exc.exit_code})
            return
        request.reply({"ok": True, **reply})

    def summary(self) -> tuple[int, list[str], list[str]]:
        """How many driver domains are configured, which of them are being recovered and which have
        failed, from the records alone (no toolstack, no xenstore): the daemon's status line."""
        records = [self._records[spec.name] for spec in self.config.driver_domains]
        recovering = [r.name for r in records if r.incident is not None]
        return len(records), recovering, [r.name for r in records if r.failed]

    def snapshot(self, *, fresh: bool = True) -> dict[str, Any]:
        """What `status` and `list` show; `fresh=False` (the daemon's status line and metrics after each
        pass) reuses the last pass's listing of the domains instead of asking libvirt again."""
        observed = self._observe() if fresh or self._observed is None else self._observed
        domains = []
        for spec in self.config.driver_domains:
            record = self._records[spec.name]
            info = observed.get(spec.name)
            incident = record.incident
            domains.append(
                {
                    "name": spec.name,
                    "domid": info.domid if info else None,
                    "state": _state(record, info),
                    "memory_mib": (info.memory_kib // 1024) if info else spec.memory_mib,
                    "vcpus": info.vcpus if info else spec.vcpus,
                    "cpu_time_s": round(info.cpu_time_ns / 1e9, 1) if info else None,
                    "restarts": record.restarts,
                    "manual_restarts": record.manual_restarts,
                    "crashes": record.crashes,
                    "failed": record.failed,
                    "frontends": len(self._registry.served_by(spec.name)),
                    "upstreams": list(spec.upstreams),
                    "reattach_failures": record.reattach_failures,
                    "parked": [p.describe() for p in record.parked],
                    "incident": None
                    if incident is None
                    else {
                        "id": incident.id,
                        "phase": incident.phase.value,
                        "waiting": len(incident.frontends),
                        "in_place": incident.in_place,
                    },
                    "last_incident": record.last_incident,
                    "error": self._errors.get(spec.name) or self._listing_errors.get(spec.name),
                    "reconnect": spec.reconnect,
                    "reattach_guests": sorted(spec.reattach_guests),
                    "standby": self._standbys.status(spec, observed.get(spec.standby_name))
                    if spec.standby.enabled
                    else None,
                    "saved_instance": self._saved.status(spec) if spec.saved_instance.enabled else None,
                }
            )
        return {"driver_domains": domains, "last_reconcile_seconds": self.last_pass_seconds}

    # -- per domain ------------------------------------------------------------------------------------

    def _reconcile_domain(self, spec: DriverDomainSpec, info: DomainInfo | None) -> float | None:
        wake = self._reconcile_instance(spec, info)
        if spec.standby.enabled:
            record = self._records[spec.name]
            wake = earliest(wake, self._standbys.keep(spec, record, self._standby_info(spec)))
        elif spec.toolstack == "xl":
            left = (self._observed or {}).get(spec.standby_name)
            wake = earliest(wake, self._standbys.retire(spec, self._records[spec.name], left))
        if not spec.upstreams:
            return wake
        record, running = self._records[spec.name], running_domid(info)
        if running is None or running != record.domid:
            self._own_devices.forget(spec.name)
            return wake
        serving = {name: domid for name in spec.upstreams if (domid := self._serving_domid(name)) is not None}
        return earliest(wake, self._own_devices.check(spec, record, running, serving, self._owned_by))

    def _owned_by(self, upstream: str, key: FrontendKey) -> bool:
        """The upstream's recovery holds that device now: parked, or under a call of its own."""
        parked = any(p.key == key for p in self._records[upstream].parked)
        return parked or self.calls.busy((upstream, "frontend", key))

    def _reconcile_instance(
        self, spec: DriverDomainSpec, info: DomainInfo | None, *, opening_only: bool = False
    ) -> float | None:
        """`opening_only`: open an incident, with its first steps, if there is one to open; nothing else."""
        record = self._records[spec.name]
        running = running_domid(info)
        if record.saving:  # the domain is away for its save, which is no death
            if opening_only:
                return None  # (nor is it an incident to open)
            if self._saved.take(spec, record):
                return 0.0  # a look at the instance it left, in a pass that lists it
            if not self._saved.saving(spec):
                self._finish_a_cut_save(spec, record, running)
            return None  # else the save's return wakes us
        if record.incident is not None:
            return self._recovery.advance(spec, record, info, self._standby_info(spec))
        if record.stopped_by_request or record.failed:
            return self._recovery.destroy_remains(spec, record)
        if running is not None and record.domid in (None, running):
            if record.domid is None:  # running, but not started by xenddd as far as its records go
                self._prepare(spec)
                self._hv.ensure_passthrough(spec)
                record.domid, record.started_at = running, None
                self._intents.save(record)
            if spec.saved_instance.enabled:
                serving = bool(self._registry.served_by(spec.name))
                self._saved.keep(spec, record, running, serving)
            return self._recovery.idle(spec, record, running)
        if running is None and record.domid is None:
            # No record of an instance (a first start, or a damaged record): a dead instance the
            # registry remembers serving guests is still one to recover. No instance runs, so every entry
            # is one of a dead instance — `orphaned` only says what the last re-read saw, and a crashed
            # instance's nodes stay until the toolstack has cleaned it up
            orphans = self._registry.served_by(spec.name)
            if not orphans:
                waiting = self._upstreams_waited(spec)
                if waiting:
                    log.info("%s: its start waits for %s to serve", spec.name, ", ".join(waiting))
                    return UPSTREAM_RECHECK
                self._start(spec, record)
                return None
            record.domid = orphans[0].backend_domid
        # The instance xenddd knew is gone (crashed, destroyed or shut down behind its back, perhaps already
        # replaced by someone else's start): that is an incident, whatever the events did or did not say.
        now = self._clock()
        # A crash is reported as soon as it is seen; what only dom0's toolstack records name (a scan of
        # every guest's records) is added right after. A replacement needs it first: it decides adoption.
        frontends = self._served_by(spec.name, record.domid, with_records=running is not None)
        if running is not None and not frontends:
            self._adopt_replacement(spec, record, running)
            return None
        reason = how_it_stopped(info) if running is None else f"replaced by domid {running}"
        uptime = None if record.started_at is None else now - record.started_at
        incident = Incident.new(record.domid, now, reason, frontends, dead_uptime=uptime)
        if running is not None:
            incident.new_domid = running
        else:
            record.crashes += 1  # a replaced instance may have been stopped cleanly: not counted
        record.domid = running
        record.incident = incident
        taken_over = {f.key for f in frontends}  # a parked frontend the dead instance served
        record.parked = [p for p in record.parked if p.key not in taken_over]
        self._intents.save(record)
        self._history.record(
            "detected",
            driver_domain=spec.name,
            incident=incident.id,
            domid=incident.dead_domid,
            reason=reason,
            frontends=len(frontends),
        )
        if running is None and incident.dead_domid is not None:
            self._guests.refresh()
            recorded = self._guests.recorded_on(spec.name, incident.dead_domid, {f.key for f in frontends})
            if recorded:
                incident.frontends += [PendingFrontend(f) for f in recorded]
                self._intents.save(record)
                log.warning(
                    "%s: %d more frontends that only dom0's toolstack records name",
                    spec.name, len(recorded),
                )  # fmt: skip
        log.warning(
            "%s: domid %s %s; recovering %d frontends%s",
            spec.name, incident.dead_domid, reason, len(incident.frontends),
            _ignored(self._registry.rejected()),
        )  # fmt: skip
        return self._recovery.advance(spec, record, info, self._standby_info(spec))

    def _standby_info(self, spec: DriverDomainSpec) -> DomainInfo | None:
        """The pass's listing of the driver domain's standby (None: it has none, or none runs)."""
        return (self._observed or {}).get(spec.standby_name) if spec.standby.enabled else None

    def _finish_a_cut_save(self, spec: DriverDomainSpec, record: DomainRecord, running: int | None) -> None:
        """A save whose daemon was killed (or whose config then dropped the saved instance): the instance
        its restore brought back is adopted, or, if the save took the domain away and nothing brought it
        back, the domain is started — restored if the file was completed. No crash happened."""
        record.saving = False
        if running is not None:
            record.domid, record.started_at = running, self._clock()
            self._intents.save(record)
            self._history.record("saved-instance-resumed", driver_domain=spec.name, domid=running)
            log.info("%s: domid %s, from a save a previous daemon left: adopted", spec.name, running)
            return
        self._history.record("saved-instance-resumed", driver_domain=spec.name, domid=None)
        log.info("%s: away for a save a previous daemon left: starting it", spec.name)
        self._start(spec, record)

    def _adopt_replacement(self, spec: DriverDomainSpec, record: DomainRecord, running: int) -> None:
        """Somebody else restarted it while xenddd was not looking, and it served nobody then: nothing
        to recover, and no crash to count — the new instance is simply the one supervised from now on."""
        self._prepare(spec)
        self._hv.ensure_passthrough(spec)
        self._history.record("adopted", driver_domain=spec.name, domid=running, replaced=record.domid)
        log.info(
            "%s: domid %s replaced by domid %s (serving nobody): adopted", spec.name, record.domid, running
        )
        record.domid, record.started_at = running, None
        self._intents.save(record)

    def _upstreams_waited(self, spec: DriverDomainSpec) -> list[str]:
        return [name for name in spec.dependencies if not self._serving(name)]

    def _serving(self, name: str) -> bool:
        """Running, ready by its readiness condition, and not itself being recovered before the reattach:
        what a driver domain whose vifs or disks it serves needs before it can be created."""
        spec = self.config.driver_domain(name)
        record = self._records[name]
        if record.incident is not None and record.incident.phase is not Phase.REATTACHING:
            return False
        # the pass's listing, or the instance this very pass started (listed before it)
        domid = running_domid((self._observed or {}).get(name)) or record.domid
        if domid is None:
            return False
        if spec.readiness.condition != "xenstore-key":
            return self._guests.read(f"/local/domain/{domid}/domid") is not None
        ready = self._guests.read(f"/local/domain/{domid}/{spec.readiness.key}")
        return ready == spec.readiness.value.encode()

    def _serving_domid(self, name: str) -> int | None:
        """The instance of upstream `name` that serves and is not being recovered (its recovery owns the
        devices it serves, a downstream domain's own among them)."""
        if self._records[name].incident is not None or not self._serving(name):
            return None
        return running_domid((self._observed or {}).get(name))

    def _served_by(self, name: str, domid: int | None, *, with_records: bool = True) -> list[Frontend]:
        """What instance `domid` of driver domain `name` served: what its death leaves to recover — the
        registry's entries, and (`with_records`) the devices dom0's toolstack records name that the
        registry never saw."""
        known = [f for f in self._registry.served_by(name) if f.backend_domid == domid or f.orphaned]
        if domid is None or not with_records:
            return known
        keys = {f.key for f in known}
        self._guests.refresh()
        return known + self._guests.recorded_on(name, domid, keys)

    def _start(self, spec: DriverDomainSpec, record: DomainRecord) -> None:
        self._prepare(spec)
        self._hv.define(spec)
        started = self._saved.start(spec)
        info = started.info if isinstance(started, Restored) else started
        record.domid, record.started_at = info.domid, self._clock()
        self._intents.save(record)
        self._history.record("started", driver_domain=spec.name, domid=info.domid)
        log.info("%s: started as domid %s", spec.name, info.domid)

    # -- planned operations ----------------------------------------------------------------------------

    def _dispatch(self, request: ControlRequest) -> dict[str, Any]:
        op = request.op
        if op in ("status", "list"):
            return self.snapshot()
        name = request.args.get("name")
        if not isinstance(name, str):
            raise InputError(f"'{op}' needs a driver domain name")
        spec = self.config.driver_domain(name)
        record = self._records[spec.name]
        if op == "create":
            record.stopped_by_request = False
            record.failed = False
            self._intents.save(record)
            info = self._hv.domain(name)
            if record.detached_by_destroy and record.incident is None:
                return self._create_and_reattach(spec, record, running_domid(info))
            if info is None or info.domid is None:
                record.domid = None
                self._start(spec, record)
            return {"name": name, "reattaching": 0}
        if op == "destroy":
            return self._destroy(spec, record, force=bool(request.args.get("force")))
        if op == "restart":
            return self._restart(spec, record)
        raise InputError(f"unknown operation {op!r}")

    def _create_and_reattach(
        self, spec: DriverDomainSpec, record: DomainRecord, running: int | None
    ) -> dict[str, Any]:
        """The frontends `destroy --force` detached come back as after a recovery: a planned incident
        whose frontends are already detached, so its phases start the domain (or take the instance
        somebody else started), wait until it is ready and attach them again."""
        incident = Incident.new(None, self._clock(), "created by operator", record.detached_by_destroy)
        incident.planned, incident.by_operator, incident.new_domid = True, True, running
        for pending in incident.frontends:
            pending.detached = True
        record.detached_by_destroy = []
        record.incident, record.domid = incident, running
        self._intents.save(record)
        self._history.record(
            "create-requested",
            driver_domain=spec.name,
            incident=incident.id,
            frontends=len(incident.frontends),
        )
        return {"name": spec.name, "reattaching": len(incident.frontends)}

    def _destroy(self, spec: DriverDomainSpec, record: DomainRecord, force: bool) -> dict[str, Any]:
        if record.incident is None and running_domid(self._hv.domain(spec.name)) is None:
            raise InputError(f"{spec.name} is not running; nothing changed")
        served = self._registry.served_by(spec.name)
        if served and not force:
            guests = sorted({f.guest_name for f in served})
            raise InputError(
                f"{spec.name} serves {len(served)} frontend(s) of {', '.join(guests)}; nothing changed: "
                "detach them first or use --force"
            )
        record.stopped_by_request = True
        if record.incident is not None:
            self._recovery.abandon(spec, record.incident)
        record.incident = None
        record.detached_by_destroy = list(served)
        self._intents.save(record)
        for frontend in served:
            self._hv.detach(frontend.guest_name, frontend.kind, frontend.devid, frontend.params)
        self._hv.destroy(spec.name)
        if spec.standby.enabled:
            self._hv.destroy(spec.standby_name)  # started again with the domain (`create`)
        record.domid = None
        self._intents.save(record)
        self._history.record("destroyed", driver_domain=spec.name, detached=len(served), by="operator")
        return {"name": spec.name, "detached": len(served)}

    def _restart(self, spec: DriverDomainSpec, record: DomainRecord) -> dict[str, Any]:
        """A planned restart: same phases as a recovery, but no restart-policy accounting or backoff. It
        always restarts: an incident under way (stuck, failed or not) is replaced by the planned restart,
        which takes over its frontends, those the running instance serves and the parked ones."""
        record.failed = False
        record.stopped_by_request = False
        record.restart_times.clear()
        old = record.incident
        frontends = [p.frontend for p in old.frontends] if old is not None else []
        frontends += [p.frontend for p in record.parked]
        frontends += self._registry.served_by(spec.name)
        if old is not None:
            self._recovery.abandon(spec, old)
        running = running_domid(self._hv.domain(spec.name))
        dead = running if running is not None else (old.dead_domid if old is not None else record.domid)
        incident = Incident.new(dead, self._clock(), "restart requested", list(_unique(frontends).values()))
        incident.planned = incident.by_operator = True
        record.incident = incident
        record.parked = []
        self._intents.save(record)
        self._history.record(
            "restart-requested",
            driver_domain=spec.name,
            incident=incident.id,
            frontends=len(incident.frontends),
            replaced=old.id if old is not None else None,
        )
        self._hv.destroy(spec.name)
        record.domid = None
        self._intents.save(record)
        return {"name": spec.name}


def about_domains(hint: Hint) -> bool:
    """A hint after which the toolstack's listing is to be taken again: a domain came, went, stopped (its
    lifecycle event, xenstored's @introduceDomain/@releaseDomain), a resync, an operator's request."""
    xenstore_domain = isinstance(hint, XenstoreHint) and hint.path.startswith("@")
    return xenstore_domain or isinstance(hint, DomainHint | ResyncHint | ControlRequest)


def _unique(frontends: list[Frontend]) -> dict[FrontendKey, Frontend]:
    """By key, the first seen kept (an incident's copy over the registry's)."""
    unique: dict[FrontendKey, Frontend] = {}
    for frontend in frontends:
        unique.setdefault(frontend.key, frontend)
    return unique


def _ignored(rejected: dict[str, str], shown: int = 5) -> str:
    """The backends not trusted, for one log line: a few named, the rest counted (a hostile driver domain
    can make thousands, and once made a single line of 340 KB)."""
    if not rejected:
        return ""
    paths = sorted(rejected)
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return f" (not trusted, ignored: {', '.join(paths[:shown])}{more})"


def _state(record: DomainRecord, info: DomainInfo | None) -> str:
    if record.failed:
        return "failed"
    if record.incident is not None:
        return f"recovering ({record.incident.phase.value})"
    if record.stopped_by_request:
        return "stopped"
    return info.state.value if info is not None else "undefined"


def _kinds(hints: Sequence[Hint]) -> str:
    """The hints of a pass, counted by kind (`3 XenstoreHint, 1 CallReturned`), for the debug log."""
    counts: dict[str, int] = {}
    for hint in hints:
        counts[type(hint).__name__] = counts.get(type(hint).__name__, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no hint"
