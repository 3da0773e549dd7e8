"""The recovery of one driver domain, as phases advanced one level-triggered step at a time.

detected → waiting-restart → waiting-ready → reattaching → (recovered)   or → failed
    └── stale frontends detached beside the restart ──┘

The restart is a promotion when the driver domain has a ready standby (standby.py): the dead instance's
remains are renamed out of the way (or destroyed first, where they hold PCI devices or writable disks the
standby is to get; else once the recovery is over), the standby is renamed to the driver domain's name and
given those devices, and its readiness holds already — no build, no boot. Without a ready standby it is a
cold start.

Each call to `advance` looks at the real state, takes the steps that are due, saves the record (intent)
before anything destructive, and returns when it wants to be called again. Nothing blocks: toolstack calls
(the start, each detach and attach) run on workers (`ToolstackCalls`) and wake the loop when they return;
readiness and reattach confirmations arrive as xenstore hints (watches on the readiness key, the new
backends and the frontends' states). So the restart is not held up by the detaches, and one driver
domain's slow call never holds another's recovery.

Stock netfront and blkfront read their backend only at probe (and on a resume), so a dead backend's
frontends are detached — libxl's "cleanup frontend only" — and attached again with the same devid, MAC and
vdev, which guests' own configuration recognises. Unless the driver domain reconnects in place
(`reconnect = "in-place"`, an xl driver domain): its new instance is then started as the dead one's domid,
whose event channels and grants the guests still hold, nothing is detached, and each device's backend
directory is written again (frontend_steps, registry/backend_restore) for netback/blkback to take the
guest's rings over; a device that cannot be so goes the detach/attach way, and so does the whole recovery
if the domid cannot be had.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from xenddd.adapters.hypervisor_api import DomainInfo, LifecycleKind, how_it_stopped, running_domid
from xenddd.config.spec import DriverDomainSpec, Settings
from xenddd.errors import XendddError
from xenddd.model import Frontend
from xenddd.recovery.frontend_steps import FrontendSteps, earliest
from xenddd.recovery.intent import DomainRecord, Incident, PendingFrontend, Phase
from xenddd.recovery.restart_policy import crash_loop_restarts, decide_restart
from xenddd.recovery.saved_instance import Restored, SavedInstances
from xenddd.recovery.standby import Standbys, remains_lane
from xenddd.recovery.tools import RecoveryTools
from xenddd.recovery.toolstack_calls import CallResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Promoted:
    """What a promotion's call returns: the standby's instance, now under the driver domain's name;
    `disks_follow`: its writable disks are still to be attached, beside the guests' reattach."""

    info: DomainInfo
    disks_follow: bool = False


@dataclass(frozen=True)
class InPlace:
    """What an in-place start's call returns: the new instance, with the dead one's domid."""

    info: DomainInfo


READY_RECHECK = 5.0  # readiness is watched; this only bounds what a lost watch event can cost
UPSTREAM_RECHECK = 1.0  # an upstream's progress makes passes anyway; this bounds a missed one
CLEANUP_WAIT = 10.0  # libvirt cleans up a crashed domain in about a second; beyond this, do it ourselves
NAME_FREE_POLL = 0.05  # a promotion's look at xenstore while the remains' destroy frees the name
REMAINS_RETRY = 30.0  # seconds before a failed destroy of a promotion's remains is tried again
NOT_READY = ", then not ready in time"  # added to an incident's reason when a restart was not ready
# Written by a driver domain whose `block` script waits for a target that is not there yet (the image's:
# xenddd/image/block.sh): its guests' disks may be attached while its own disk is still being given to it
BLOCK_WAIT_FEATURE = "data/feature-block-wait"

PrepareDomain = Callable[[DriverDomainSpec], None]
"""Called before each (re)start: re-hide the driver domain's PCI devices (and reset them per policy)."""

ServedBy = Callable[[str, int | None], list[Frontend]]
"""The registry's frontends of a driver domain's instance (by domid), orphaned ones included."""

UpstreamsWaited = Callable[[DriverDomainSpec], list[str]]
"""The driver domains a domain depends on that do not yet run ready to serve it."""


class Recovery:
    def __init__(
        self,
        tools: RecoveryTools,
        *,
        prepare: PrepareDomain,
        served_by: ServedBy,
        upstreams_waited: UpstreamsWaited = lambda _spec: [],
        standbys: Standbys | None = None,
        saved: SavedInstances | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._t = tools
        self._standbys = standbys or Standbys(tools)
        self._saved = saved or SavedInstances(tools, Settings().state_dir)
        self._prepare = prepare
        self._served_by = served_by
        self._upstreams_waited = upstreams_waited
        self._upstream_reported: set[str] = set()  # incidents whose wait for an upstream was said
        self._rng = rng or random.Random()
        self._remains_retry_at: dict[str, float] = {}  # driver domain → when its remains' destroy may retry
        self._steps = FrontendSteps(tools)

    # -- public ----------------------------------------------------------------------------------------

    def advance(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        info: DomainInfo | None,
        standby: DomainInfo | None = None,
    ) -> float | None:
        """Take every step of the record's incident that is due; return seconds until the next re-check
        (None: a hint will come — a call returning, a watch firing, a lifecycle event). `standby`: the
        toolstack's view of the driver domain's standby, if it has one."""
        incident = record.incident
        assert incident is not None
        running = running_domid(info)
        started = self._t.calls.take((spec.name, "start"))
        self._steps.collect(spec, record, incident)
        if incident.phase in (Phase.WAITING_READY, Phase.REATTACHING) and running != incident.new_domid:
            self._died_again(spec, record, incident, running, how_it_stopped(info))
        if incident.phase is Phase.DETECTED:
            self._decide(spec, record, incident)
        # (an instance started in place runs as the dead one's domid, and is not its remains)
        dead_present = (
            info is not None
            and info.domid is not None
            and info.domid == incident.dead_domid
            and not (incident.in_place and running == incident.dead_domid)
        )
        if dead_present and spec.toolstack == "xl" and incident.dead_domid is not None:
            # Nothing but xenddd destroys an xl domain's remains, and libxl's detach needs only their
            # backend nodes gone: xenstore says so at once, where a listing (an `xl list`) comes later
            self._t.guests.refresh()
            dead_present = self._t.guests.is_running(incident.dead_domid)
        if dead_present and spec.pci and info is not None and info.stopped is LifecycleKind.CRASHED:
            self._release_pci(spec, incident)
        wake = self._steps.detach_stale(spec, record, incident, dead_present)
        if incident.phase is Phase.WAITING_RESTART:
            wake = earliest(
                wake, self._restart(spec, record, incident, running, started, dead_present, standby)
            )
        self._follow_disks(spec, record, incident)
        if incident.phase is Phase.WAITING_READY:
            wake = earliest(wake, self._await_ready(spec, record, incident))
        if incident.phase is Phase.REATTACHING and incident.key_pending:
            if self._refused_after_restore(spec, record, incident):
                return 0.0
            wake = earliest(wake, self._key_deadline(incident))
        if incident.phase is Phase.REATTACHING and self._unresponsive(spec, record, incident):
            return 0.0
        if incident.phase is Phase.REATTACHING:
            wake = earliest(wake, self._steps.reattach(spec, record, incident))
            if not incident.frontends and not incident.disks_pending:
                self._finish(spec, record, incident)
                # What it parked is retried on its own schedule from now on, and no event will come to
                # say when: the pass that ends the incident asks to be woken for it.
                assert incident.new_domid is not None
                return self.idle(spec, record, incident.new_domid)
        if self._t.unsaved:
            self._t.save(record)
        return wake

    def take_returned(
        self, spec: DriverDomainSpec, record: DomainRecord, *, every_attach: bool = True
    ) -> bool:
        """At the start of a pass, before the domains are listed, and again once they are: a start or
        promotion that has returned is taken (a promoted standby is ready at once, and its stale
        frontends' detaches go at once: the promotion destroyed the remains, backends and all, before
        its rename), and the attaches of the frontends whose detach has returned, to an instance already
        ready, are submitted. A listing after a domain hint (the dead instance's remains going, which
        comes while the detaches run) is an `xl list` and a registry resync, a second or more of a busy
        dom0 under emulation, and nothing in it changes whether these are due; what the pass then sees
        (an instance that died meanwhile) is judged as ever. The promotion's own rename of the remains is
        such a hint, and its pass begins while the promotion still runs: taken again after the listing,
        the promotion's result does not wait for the registry's resync (0.1 to 0.4 s on the test bed).
        That second look (`every_attach` False) submits attaches only when it took such a result: the
        others were looked at as the pass began, and each look reads the state of every handshake
        under way (the handshake window), a quarter more of a large recovery's xenstore requests when
        made twice a pass. True if it took a start or promotion that returned, with an instance or an
        error: a listing taken before may not show what it did (a pass that saw a death submits the
        restart before the rest of its work, and a quick one returns within that pass; a promotion that
        failed had renamed the standby before it destroyed it)."""
        incident = record.incident
        took = False
        if incident is not None and incident.phase is Phase.WAITING_RESTART:
            started = self._t.calls.take((spec.name, "start"))
            took = started is not None
            if started is not None:
                self._started(spec, record, incident, started)
                self._ready_already(spec, record, incident)
                if started.error is None and isinstance(started.value, Promoted):
                    self._steps.detach_stale(spec, record, incident, dead_present=False)
        if incident is not None and incident.phase is Phase.REATTACHING and (every_attach or took):
            self._steps.collect(spec, record, incident)
            self._steps.attach_detached(spec, record, incident)
        if self._t.unsaved:
            self._t.save(record)
        return took

    def _ready_already(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        """An instance just started or promoted goes on to its reattach if it is ready already (a
        promoted standby is, and a restored saved instance was made so as it returned); otherwise the
        pass waits for it as ever."""
        if incident.phase is Phase.WAITING_READY:
            self._await_ready(spec, record, incident)

    def idle(self, spec: DriverDomainSpec, record: DomainRecord, domid: int) -> float | None:
        """Outside any incident: what device calls an ended incident left running return (a device
        confirmed before its attach returned), the remains a promotion left, and the parked frontends'
        slow retries on the running instance `domid`."""
        self._steps.collect(spec, record, None)
        wake = self.destroy_remains(spec, record)
        return earliest(wake, self._steps.retry_parked(spec, record, domid) if record.parked else None)

    def destroy_remains(self, spec: DriverDomainSpec, record: DomainRecord) -> float | None:
        """Outside any incident: the dead instance's remains a promotion renamed out of the way
        (`record.remains`), destroyed by domid on a worker — only if xenstore still names them as the
        promotion did, so never another domain that has their domid since. Under emulation their
        destroy (an `xl destroy`, the hypervisor freeing their memory) took dom0 a second and more, and
        beside the promotion it came just as the guests' attaches were prepared. One that fails is said
        and tried again after REMAINS_RETRY. Returns when to look again."""
        lane = remains_lane(spec.name)
        now = self._t.clock()
        result = self._t.calls.take(lane)
        if result is not None and result.error is not None:
            log.error(
                "%s: destroying the remains of domid %s failed: %s", spec.name, record.remains, result.error
            )
            self._remains_retry_at[spec.name] = now + REMAINS_RETRY
        elif result is not None:
            log.info("%s: the remains of domid %s destroyed", spec.name, record.remains)
            record.remains = None
            self._t.save(record)
            return None
        dead = record.remains
        if dead is None or self._t.calls.busy(lane):
            return None
        retry_at = self._remains_retry_at.get(spec.name, 0.0)
        if now < retry_at:
            return retry_at - now
        if self._t.guests.read(f"/local/domain/{dead}/name") != _parked(spec, dead):
            record.remains = None  # destroyed already (by an interrupted promotion's next daemon), or gone
            self._t.save(record)
            return None
        self._t.calls.submit(
            lane,
            f"{spec.name}: destroy the remains of domid {dead}",
            partial(self._t.hypervisor.destroy, spec.name, dead),
            lane=lane,
        )
        return None

    def abandon(self, spec: DriverDomainSpec, incident: Incident) -> None:
        """An incident replaced by another (a planned restart): its watches go with it."""
        self._steps.forget_watches(incident)
        waiting_key = incident.phase is Phase.WAITING_READY and spec.readiness.condition == "xenstore-key"
        if waiting_key and incident.new_domid is not None:
            self._t.unwatch(f"/local/domain/{incident.new_domid}/{spec.readiness.key}")

    # -- phases ----------------------------------------------------------------------------------------

    def _decide(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        """Just detected: restart at once (or after the crash loop's backoff), while the stale frontends
        are detached — unless somebody else already started a new instance, which is adopted."""
        if incident.new_domid is not None:
            self._enter_ready_wait(spec, record, incident, incident.new_domid)
            return
        # an operator's restart may have closed the backends on its way down: reattached as usual
        incident.in_place = (
            spec.reconnect == "in-place" and incident.dead_domid is not None and not incident.by_operator
        )
        for pending in incident.frontends:
            pending.restore = _restores(spec, incident, pending.frontend)
        self._schedule_restart(spec, record, incident, planned=incident.planned, uptime=incident.dead_uptime)

    def _release_pci(self, spec: DriverDomainSpec, incident: Incident) -> None:
        """The dead instance's PCI devices, which its destroy (libvirt's cleanup, or ours before a start
        or a promotion) would otherwise hold 10 s waiting for its pcifront (see GuestView). Only once the
        toolstack says it crashed (libvirt lists it shut off, reason crashed, while its cleanup runs): a
        domain shutting down may still have its pcifront answering. On every pass
        while it is listed, since a destroy already under way may write the backend's state again."""
        assert incident.dead_domid is not None
        if self._t.guests.release_pci_backend(incident.dead_domid):
            log.info(
                "%s: domid %s is dead: its PCI backend released, so that its destroy does not wait for "
                "its pcifront",
                spec.name,
                incident.dead_domid,
            )

    def _restart(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        incident: Incident,
        running: int | None,
        started: CallResult | None,
        dead_present: bool,
        standby: DomainInfo | None,
    ) -> float | None:
        """`dead_present`: the toolstack still lists the dead instance (libvirt cleaning up a crash); a
        start now would race that cleanup, so it waits for it — at most CLEANUP_WAIT, after which the
        start destroys the remains itself, as it must for a domain kept with on_crash = "preserve". A
        promotion does not wait: it destroys the remains first, as it must before the rename, and the
        stale frontends are detached meanwhile (their detach needs the remains' backends gone only)."""
        if started is not None:
            return self._started(spec, record, incident, started)
        if self._t.calls.busy((spec.name, "start")):
            return None  # our start is under way; its return wakes us
        now = self._t.clock()
        if running is not None:
            # Started meanwhile (e.g. by an operator with xl/virsh, or a promotion whose daemon was killed
            # before its call returned): adopt that instance, with the PCI devices it must have.
            self._prepare(spec)
            self._t.hypervisor.ensure_passthrough(spec)
            self._destroy_parked_remains(spec, incident.dead_domid)
            self._enter_ready_wait(spec, record, incident, running)
            return None
        start = (spec.name, "start")
        # A ready standby is promoted without the crash loop's backoff, which keeps the host from booting
        # a crashing domain over and over: a promotion boots nothing (the next standby's boot waits for
        # its own backoff), and waiting would only lengthen the outage. It still counts as a restart.
        promotable = self._standbys.ready_domid(spec, standby) if spec.standby.enabled else None
        if promotable is not None:
            record.restart_times.append(now)
            dead = incident.dead_domid
            if dead is not None and not spec.pci and all(disk.readonly for disk in spec.disks):
                record.remains = dead  # renamed out of the way by the promotion (_rename_past_the_remains)
            self._t.save(record)
            self._t.event("promoting", spec.name, incident, standby=promotable)
            what = f"{spec.name}: promote {spec.standby_name}"
            self._t.calls.submit(start, what, lambda: self._promote(spec, dead, promotable), lane=start)
            # the dead instance's stale frontends need not wait for the promotion's destroy of its remains
            return None if dead is None else self._steps.detach_from_the_dead(spec, record, incident, dead)
        if now < incident.not_before:
            return incident.not_before - now
        cleanup_ends = incident.detected_at + CLEANUP_WAIT
        # only libvirt cleans up after a crash: xl's domains are created with no monitor (adapters/xl_domains)
        cleaned_up_by_libvirt = spec.toolstack == "libvirt" and spec.on_crash != "preserve"
        if dead_present and cleaned_up_by_libvirt and now < cleanup_ends:
            return cleanup_ends - now  # the cleanup's lifecycle event wakes us sooner
        waiting = self._upstreams_waited(spec)
        if waiting:
            # libxl's create of a domain whose vif or disk an absent (or not yet ready) driver domain
            # serves fails; its own clients are detached meanwhile
            if incident.id not in self._upstream_reported:
                self._upstream_reported.add(incident.id)
                self._t.event("waiting-upstream", spec.name, incident, upstreams=waiting)
                log.info("%s: restart waits for %s to serve", spec.name, ", ".join(waiting))
            return UPSTREAM_RECHECK
        self._upstream_reported.discard(incident.id)
        record.restart_times.append(now)
        self._t.save(record)
        if incident.in_place and incident.dead_domid is not None:
            domid = incident.dead_domid
            what = f"{spec.name}: start as domid {domid}"
            self._t.calls.submit(start, what, lambda: self._start_in_place(spec, domid), lane=start)
            return None
        self._t.calls.submit(start, f"{spec.name}: start", lambda: self._start(spec), lane=start)
        return None

    def _promote(self, spec: DriverDomainSpec, dead: int | None, standby: int) -> Promoted:
        """On a worker. The remains of the dead instance (domid `dead`) go first — libxl refuses a name
        that is taken, and their destroy releases the PCI devices the standby is to get — by domid, so
        that a new instance somebody started meanwhile is left alone: the rename then refuses its name,
        and the next pass adopts it. (Without a dead domid on record, the name is checked first: one
        process more, on the outage's path.) A standby that cannot take the devices is destroyed
        rather than left serving without its hardware: the retry is then a cold start.

        The writable disks of a standby (domid `standby`) that says its `block` script waits for them
        are left to `_follow_disks`: dom0's `block` script for such a disk takes seconds, and so does the
        standby's for each guest disk it serves on it, which can run meanwhile."""
        hv = self._t.hypervisor
        follow = (
            any(not disk.readonly for disk in spec.disks)
            and self._t.guests.read(f"/local/domain/{standby}/{BLOCK_WAIT_FEATURE}") == b"1"
        )
        if dead is None and running_domid(hv.domain(spec.name)) is not None:
            raise XendddError(f"{spec.name}: a new instance runs already; not promoting its standby")
        if dead is None or spec.pci:  # PCI devices are released only at the end of the destroy
            hv.destroy(spec.name, dead)
            info = hv.rename(spec.standby_name, spec.name)
        elif any(not disk.readonly for disk in spec.disks):
            # the remains hold the writable disks the standby is to get until their destroy has torn
            # their devices down, which it does before it frees the name
            info = self._rename_as_the_name_frees(spec, dead)
        else:
            info = self._rename_past_the_remains(spec, dead)
        try:
            self._prepare(spec)
            hv.ensure_passthrough(spec, disks=not follow)
        except XendddError:
            hv.destroy(spec.name)
            raise
        if follow:  # at once, not on the pass that takes this result: that pass lists, a second or more
            self._submit_disks(spec)
        return Promoted(info, disks_follow=follow)

    def _rename_past_the_remains(self, spec: DriverDomainSpec, dead: int) -> DomainInfo:
        """A name is nothing but two xenstore nodes: the remains of instance `dead` are renamed out of the
        way (`<name>-dead-<domid>`, by domid, so never a new instance somebody started meanwhile) and
        the standby takes the name at once. The remains are destroyed once the recovery is over
        (`destroy_remains`): their destroy frees the name only once it has torn down the domain's own
        devices, a second of every promotion's outage under emulation, and beside the recovery it takes
        dom0's processors from the guests' attaches. Nothing the promoted instance or the guests'
        reattach needs is left in the remains (the backends of the guests' devices in them are removed
        before the detaches). Remains that cannot be renamed (gone already, or renamed by a promotion
        the daemon was killed in) leave the rename to wait for the destroy to free the name."""
        hv = self._t.hypervisor
        began = self._t.clock()
        try:
            hv.rename(spec.name, _parked(spec, dead).decode(), dead)
        except XendddError as exc:
            log.info("%s: waiting for the destroy of domid %s to free the name: %s", spec.name, dead, exc)
            return self._rename_as_the_name_frees(spec, dead)
        parked = self._t.clock()
        try:
            return hv.rename(spec.standby_name, spec.name)
        finally:
            log.debug(
                "%s: promotion: remains renamed in %.3f s, standby in %.3f s",
                spec.name,
                parked - began,
                self._t.clock() - parked,
            )

    def _destroy_parked_remains(self, spec: DriverDomainSpec, dead: int | None) -> None:
        """Remains a promotion renamed out of the way and a daemon killed meanwhile never destroyed: found
        by their domid and the name the promotion gave them, nothing else."""
        if dead is not None and self._t.guests.read(f"/local/domain/{dead}/name") == _parked(spec, dead):
            log.info("%s: destroying the remains of domid %s an interrupted promotion left", spec.name, dead)
            self._t.hypervisor.destroy(spec.name, dead)

    def _rename_as_the_name_frees(self, spec: DriverDomainSpec, dead: int) -> DomainInfo:
        """libxl's rename needs only the name free in xenstore, which the remains' destroy frees first;
        `xl destroy` returns about 0.7 s later under emulation, once the hypervisor is done with the
        domain. So the rename runs as soon as xenstore no longer names the dead instance, and the
        promotion goes on without waiting for the rest of the destroy. A destroy that fails before the
        name is free is the promotion's error; one that fails later is logged."""
        name = f"/local/domain/{dead}/name"
        destroy = self._destroy_remains(spec, dead)
        while not destroy.done() and self._t.guests.read(name) is not None:
            time.sleep(NAME_FREE_POLL)
        if destroy.done():
            destroy.result()  # failed before the name was freed: its error says more than the rename's
        try:
            return self._t.hypervisor.rename(spec.standby_name, spec.name)
        finally:
            destroy.add_done_callback(partial(self._remains_destroyed, spec, dead))

    def _destroy_remains(self, spec: DriverDomainSpec, dead: int) -> Future[None]:
        """The destroy of instance `dead`'s remains, by domid, on a thread of its own."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xenddd-remains")
        destroy = pool.submit(self._t.hypervisor.destroy, spec.name, dead)
        pool.shutdown(wait=False)
        return destroy

    @staticmethod
    def _remains_destroyed(spec: DriverDomainSpec, dead: int, future: Future[None]) -> None:
        error = future.exception()
        if error is not None:
            log.error("%s: destroying the remains of domid %s failed: %s", spec.name, dead, error)

    def _start(self, spec: DriverDomainSpec) -> DomainInfo | Restored:
        self._prepare(spec)
        self._t.hypervisor.define(spec)
        return self._saved.start(spec)

    def _start_in_place(self, spec: DriverDomainSpec, domid: int) -> InPlace:
        """On a worker: the dead instance's remains go (the toolstack's start destroys them: they hold the
        domid), then a new instance is created as that domid."""
        self._prepare(spec)
        self._t.hypervisor.define(spec)
        return InPlace(self._t.hypervisor.start_with_domid(spec.name, domid))

    def _started(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, result: CallResult
    ) -> float | None:
        if result.error is not None and incident.in_place:
            # the guests' devices are still there, waiting: they are detached and attached to a new
            # instance with a domid of its own, as they would be without in-place
            incident.in_place = False
            for pending in incident.frontends:
                pending.restore = False
            self._t.event("in-place-failed", spec.name, incident, error=str(result.error))
            log.error("%s: restart as the same domid failed, restarting cold: %s", spec.name, result.error)
            record.restart_times.pop()  # the cold start follows at once and is the restart that counts
            incident.not_before = self._t.clock()
            self._t.save(record)
            return 0.0
        if result.error is not None:
            self._t.event("restart-failed", spec.name, incident, error=str(result.error))
            log.error("%s: restart failed: %s", spec.name, result.error)
            self._schedule_restart(spec, record, incident, planned=False, uptime=0.0)
            return 0.0 if incident.phase is Phase.WAITING_RESTART else None
        promoted = isinstance(result.value, Promoted)
        in_place = isinstance(result.value, InPlace)
        restored = isinstance(result.value, Restored)
        info: DomainInfo = result.value.info if promoted or in_place or restored else result.value
        if promoted:
            self._standbys.promoted(spec, not_before=incident.not_before)
            self._t.guests.renamed(info.uuid)
            incident.disks_pending = result.value.disks_follow
        if info.domid == incident.dead_domid and not in_place:  # Xen never reuses a domid at once
            log.warning(
                "%s: the toolstack still reports dead domid %s as running; retrying", spec.name, info.domid
            )
            record.restart_times.pop()  # not a restart: it must not count towards the crash-loop limit
            incident.not_before = self._t.clock() + 1.0
            self._t.save(record)
            return 1.0
        if incident.by_operator:
            record.manual_restarts += 1
        else:
            record.restarts += 1
        fields: dict[str, object] = {"in_place": True} if in_place else {}
        event = "promoted" if promoted else "restarted"
        self._t.event(event, spec.name, incident, domid=info.domid, **fields)
        if info.domid is None:
            self._schedule_restart(spec, record, incident, planned=False, uptime=0.0)
            return 0.0
        record.started_at = self._t.clock()
        if restored:  # ready as it was saved (see Restored): no wait for its key, only a deadline
            record.domid = incident.new_domid = info.domid
            incident.key_pending = True
            incident.ready_deadline = self._t.clock() + spec.readiness.timeout_seconds
            self._become_ready(spec, record, incident)
            return None
        self._enter_ready_wait(spec, record, incident, info.domid)
        return None

    def _await_ready(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> float | None:
        assert incident.new_domid is not None
        readiness = spec.readiness
        ready = readiness.condition == "running"
        key_path = f"/local/domain/{incident.new_domid}/{readiness.key}"
        if readiness.condition == "xenstore-key":
            ready = self._key_written(spec, incident.new_domid)
        elif readiness.condition == "backend-initwait":
            ready = self._steps.backend_waiting(spec, record, incident)
        now = self._t.clock()
        if ready:
            if readiness.condition == "xenstore-key":
                self._t.unwatch(key_path)
            self._become_ready(spec, record, incident)
            return None
        if now >= incident.ready_deadline:
            self._t.event("not-ready", spec.name, incident, timeout=readiness.timeout_seconds)
            if not incident.reason.endswith(NOT_READY):  # what status shows once it is recovered
                incident.reason += NOT_READY
            log.error(
                "%s: not ready within %.0f s; destroying it to try again",
                spec.name,
                readiness.timeout_seconds,
            )
            self._t.hypervisor.destroy(spec.name)
            self._schedule_restart(spec, record, incident, planned=False, uptime=0.0)
            return 0.0
        return min(incident.ready_deadline - now, READY_RECHECK)

    # -- transitions -----------------------------------------------------------------------------------

    def _become_ready(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        self._t.event("ready", spec.name, incident, domid=incident.new_domid)
        incident.phase = Phase.REATTACHING
        self._t.save(record)

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
        now = self._t.clock()
        if planned:
            incident.phase, incident.not_before = Phase.WAITING_RESTART, now
        else:
            record.restart_times = crash_loop_restarts(spec.restart, record.restart_times, uptime)
            decision = decide_restart(spec.restart, record.restart_times, now, self._rng)
            if decision.failed:
                incident.phase = Phase.FAILED
                record.failed = True
                self._t.event(
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
                self._t.event("restart-scheduled", spec.name, incident, delay=round(decision.delay, 3))
        incident.planned = False
        self._t.save(record)

    def _enter_ready_wait(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident, domid: int
    ) -> None:
        record.domid = domid
        incident.new_domid = domid
        incident.phase = Phase.WAITING_READY
        incident.ready_deadline = self._t.clock() + spec.readiness.timeout_seconds
        if spec.readiness.condition == "xenstore-key":
            self._t.watch(f"/local/domain/{domid}/{spec.readiness.key}")
        self._t.save(record)

    def _died_again(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        incident: Incident,
        running: int | None,
        reason: str,
    ) -> None:
        """Every frontend of the incident points at the dead instance again, and so do those already
        confirmed on it (no longer in the incident): all of them are detached and reattached anew.
        `reason` as the first death's: an instance that dies while it boots is told from one xenddd
        judged dead (destroyed) or one a toolstack no longer lists (gone)."""
        record.crashes += 1
        incident.disks_pending = incident.key_pending = False
        self._steps.forget_watches(incident)
        for pending in incident.frontends:
            # in place, a device attached to the instance that died (restored, or attached after a
            # failed restore) has its dom0 record naming that domid, and is restored again
            pending.restore = pending.attached and _restores(spec, incident, pending.frontend)
            pending.attached = False
            pending.detached = False
        known = {pending.key for pending in incident.frontends}
        confirmed = [f for f in self._served_by(spec.name, incident.new_domid) if f.key not in known]
        incident.frontends.extend(PendingFrontend(f, restore=_restores(spec, incident, f)) for f in confirmed)
        self._t.event(
            "crashed-again",
            spec.name,
            incident,
            domid=incident.new_domid,
            reason=reason,
            frontends=len(incident.frontends),
        )
        now = self._t.clock()
        incident.dead_uptime = None if record.started_at is None else now - record.started_at
        incident.dead_domid, incident.new_domid = incident.new_domid, running
        incident.detached_reported = False
        incident.phase = Phase.DETECTED
        record.domid = running
        self._t.save(record)

    def _unresponsive(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> bool:
        """A new instance that has not probed a device attached to it `reattach_timeout` ago, and serves
        none, is destroyed and judged at once as an instance that died: its kernel no longer answers
        xenstore (seen once on real Xen, a promoted instance's: its hotplug script waited 10 minutes on a
        read), and every detach and attach again would meet the same silence. Not on one guest's word:
        a guest that removes its own frontend directory keeps its backend from being probed too, so
        a single device Connected through the instance (any guest's) clears it. Not for `running`
        readiness either, which says nothing of the backends having loaded."""
        if spec.readiness.condition == "running":
            return False
        stuck = self._steps.unprobed(incident)
        if not stuck or self._serves(spec, incident):
            return False
        assert incident.new_domid is not None
        devices = [pending.describe() for pending in stuck]
        self._t.event("unresponsive", spec.name, incident, domid=incident.new_domid, devices=devices)
        log.error(
            "%s: domid %s has not probed %s within %g s of its attach; destroying it to start again",
            spec.name,
            incident.new_domid,
            ", ".join(devices),
            spec.readiness.reattach_timeout_seconds,
        )
        return self._destroyed_as_dead(spec, record, incident)

    def _refused_after_restore(
        self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident
    ) -> bool:
        """A restored instance's init writes its readiness key again once it has restarted `xl devd` for
        the new domid, and takes it back, saying why in `<key>-error`, if that failed: its guests'
        backends then never get their hotplug, and the handshakes would only time out and be parked. So
        an instance that refused, or has not written the key within the readiness timeout, is destroyed
        and judged as one that died, as a booted one that never gets ready is; its saved file goes, so
        that the next start boots. True if it was judged so."""
        assert incident.new_domid is not None
        if self._key_written(spec, incident.new_domid):
            incident.key_pending = False
            self._t.save(record)
            return False
        refused = self._t.guests.read(f"/local/domain/{incident.new_domid}/{spec.readiness.key}-error")
        if refused is None and self._t.clock() < incident.ready_deadline:
            return False
        why = (
            f"its init refused after the restore: {refused.decode('utf-8', 'replace')}"
            if refused is not None
            else f"no readiness key within {spec.readiness.timeout_seconds:g} s of its restore"
        )
        self._t.event("not-ready", spec.name, incident, domid=incident.new_domid, error=why)
        log.error("%s: restored domid %s: %s; destroying it", spec.name, incident.new_domid, why)
        self._saved.drop(spec, why)
        return self._destroyed_as_dead(spec, record, incident)  # (if it still runs: judged again)

    def _key_written(self, spec: DriverDomainSpec, domid: int) -> bool:
        """The driver domain's readiness key holds its value in instance `domid`'s home."""
        value = self._t.guests.read(f"/local/domain/{domid}/{spec.readiness.key}")
        return value is not None and value.decode("utf-8", "replace") == spec.readiness.value

    def _key_deadline(self, incident: Incident) -> float | None:
        """When to look again for a restored instance's key (None: it was seen)."""
        if not incident.key_pending:
            return None
        return max(0.0, min(incident.ready_deadline - self._t.clock(), READY_RECHECK))

    def _serves(self, spec: DriverDomainSpec, incident: Incident) -> bool:
        """Any device Connected through the incident's new instance, by dom0's record and both ends."""
        assert incident.new_domid is not None
        attached = [pending.frontend for pending in incident.frontends if pending.attached]
        frontends = [*self._served_by(spec.name, incident.new_domid), *attached]
        present = [(guest, f) for f in frontends if (guest := self._t.guests.current_domid(f)) is not None]
        return any(self._t.guests.connected_many(incident.new_domid, present))

    def _follow_disks(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        """A promoted standby's writable disks (`Promoted.disks_follow`), attached on a worker while its
        guests' disks are reattached; submitted again after a daemon restart lost the call. One that
        fails leaves the promoted instance serving without its storage: it is destroyed and judged at once
        as an instance that died (cold, unless another standby is ready) — not left to the next pass, since
        this pass would otherwise end the incident if every guest's device had connected to it meanwhile."""
        if self._t.calls.busy((spec.name, "start")):
            return  # the promotion submits the disks' attach before it returns: its result comes first
        done = self._t.calls.take((spec.name, "disks"))
        if not incident.disks_pending or incident.new_domid is None:
            return  # (a result for an instance that died meanwhile: nothing to do with it)
        if done is None:
            self._submit_disks(spec)  # (after a daemon restart; the promotion's call runs otherwise)
            return
        if done.error is None:
            incident.disks_pending = False
            self._t.event("disks-attached", spec.name, incident, domid=incident.new_domid)
            self._t.save(record)
            return
        log.error("%s: its disks could not be attached after its promotion: %s", spec.name, done.error)
        self._t.event("disks-failed", spec.name, incident, domid=incident.new_domid, error=str(done.error))
        self._destroyed_as_dead(spec, record, incident)  # (if it is still running: tried again next pass)

    def _destroyed_as_dead(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> bool:
        """The incident's new instance destroyed and judged at once as one that died; False if the destroy
        failed (it still runs, and the next pass judges it again)."""
        try:
            self._t.hypervisor.destroy(spec.name, incident.new_domid)
        except XendddError as exc:
            log.error("%s: destroying domid %s failed: %s", spec.name, incident.new_domid, exc)
            return False
        self._died_again(spec, record, incident, None, "destroyed")
        return True

    def _submit_disks(self, spec: DriverDomainSpec) -> None:
        key = (spec.name, "disks")
        if not self._t.calls.busy(key):
            what = f"{spec.name}: attach its disks"
            self._t.calls.submit(key, what, lambda: self._t.hypervisor.ensure_passthrough(spec), lane=key)

    def _finish(self, spec: DriverDomainSpec, record: DomainRecord, incident: Incident) -> None:
        now = self._t.clock()
        entry = self._t.event(
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
        self._t.save(record)
        log.info("%s: recovered in %.2f s (incident %s)", spec.name, now - incident.detected_at, incident.id)


def _parked(spec: DriverDomainSpec, dead: int) -> bytes:
    """The name a promotion gives the dead instance's remains, out of the standby's way until destroyed."""
    return f"{spec.name}-dead-{dead}".encode()


def _restores(spec: DriverDomainSpec, incident: Incident, frontend: Frontend) -> bool:
    """Whether this incident restores the frontend's backend in place, or detaches and attaches it: the
    incident may reconnect in place, and the guest may be one the config reattaches all the same."""
    return incident.in_place and spec.restores_in_place(frontend.guest_name)
