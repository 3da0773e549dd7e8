"""Warm standbys: for each driver domain with `[driver_domain.standby] enabled`, a second instance
(`<name>-standby`) booted and ready beside the active one, so that a recovery promotes it (phases.py)
instead of booting: the boot is most of a cold recovery's time.

What this module owns: the standby's definition (the driver domain's, without its PCI devices, created
ready to receive them by hot-plug), starting it, restarting one that died — quietly, with a backoff of its
own, since no guest depends on it — and saying whether one is ready to promote. A new standby is booted
only once no recovery of its driver domain is under way, so that its boot never competes with the
recovery it exists to shorten. And retiring a standby its driver domain's config no longer enables (a
reload, or a daemon started with the new config), rather than leave it costing a domain's memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from xenddd.adapters.hypervisor_api import DomainInfo, running_domid
from xenddd.config.spec import DriverDomainSpec, SavedInstance, Standby
from xenddd.recovery.intent import DomainRecord
from xenddd.recovery.tools import RecoveryTools

log = logging.getLogger(__name__)

BACKOFF_BASE = 2.0  # seconds before the second attempt after a standby died young or failed to start
BACKOFF_CAP = 300.0


def standby_spec(spec: DriverDomainSpec) -> DriverDomainSpec:
    """The standby's own definition: nothing it would share with the active instance (the config refuses
    own vifs); its PCI devices and writable disks only after a promotion, by hot-plug, once the dead
    instance that held them is destroyed (two instances must not write one disk)."""
    return replace(
        spec,
        name=spec.standby_name,
        pci=(),
        pci_hotplug=bool(spec.pci),
        disks=tuple(disk for disk in spec.disks if disk.readonly),
        standby=Standby(),
        saved_instance=SavedInstance(),  # booted, as a standby is booted while nothing waits for it
    )


def remains_lane(name: str) -> tuple[str, str]:
    """The calls lane of the destroy of driver domain `name`'s remains a promotion left (phases.py)."""
    return (name, "remains")


@dataclass
class _Keeping:
    domid: int | None = None  # the instance last seen running
    started_at: float = 0.0
    failures: int = 0  # starts that failed, or instances that died before a healthy uptime, in a row
    not_before: float = 0.0
    error: str | None = None


class Standbys:
    def __init__(self, tools: RecoveryTools) -> None:
        self._t = tools
        self._kept: dict[str, _Keeping] = {}

    def keep(self, spec: DriverDomainSpec, record: DomainRecord, info: DomainInfo | None) -> float | None:
        """Start the standby if it should run and does not; `info` is the toolstack's view of it. Returns
        when to look again (None: a call's return or a domain event will say)."""
        kept = self._kept.setdefault(spec.name, _Keeping())
        lane = (spec.standby_name, "start")
        now = self._t.clock()
        if self._take_start(spec, kept, now) and running_domid(info) is None:
            return 0.0  # started since the pass's listing, which cannot show it yet: the next one will
        if record.incident is not None or record.failed or record.stopped_by_request:
            return None
        if self._t.calls.busy(lane) or self._t.calls.busy(remains_lane(spec.name)):
            return None  # (the remains hold a domain's memory until their destroy returns)
        running = running_domid(info)
        if running is not None and running == record.domid:
            # the driver domain's own instance: a listing taken before the promotion's rename, which the
            # pass's turn then took, still names it the standby (never the standby: it would be found
            # gone on the next pass, "died", and the next standby would miss the crash loop's backoff)
            return 0.0
        if running is not None:
            if kept.domid != running:
                kept.domid, kept.started_at = running, now
            return None
        if kept.domid is not None:
            self._died(spec, kept, now)
        if now < kept.not_before:
            return kept.not_before - now
        self._t.calls.submit(lane, f"{spec.standby_name}: start", lambda: self._start(spec), lane=lane)
        return None

    def retire(self, spec: DriverDomainSpec, record: DomainRecord, info: DomainInfo | None) -> float | None:
        """Destroy the standby of an xl driver domain whose config does not enable one, if it runs — never
        during a recovery (a promotion under way would lose its instance); `info` is the toolstack's view
        of it. Returns when to try again after a failed destroy."""
        kept = self._kept.setdefault(spec.name, _Keeping())
        lane = (spec.standby_name, "destroy")
        now = self._t.clock()
        result = self._t.calls.take(lane)
        if result is not None and result.error is not None:
            kept.error = str(result.error)
            self._back_off(kept, now)
            log.warning("%s: its standby %s not destroyed: %s", spec.name, spec.standby_name, result.error)
        elif result is not None:
            self._t.history.record("standby-retired", driver_domain=spec.name, domid=kept.domid)
            log.info("%s: standby %s destroyed: the config enables none", spec.name, spec.standby_name)
            self._kept[spec.name] = _Keeping()
            return None
        running = running_domid(info)
        if running is None or record.incident is not None or self._t.calls.busy(lane):
            return None
        if now < kept.not_before:
            return kept.not_before - now
        kept.domid = running
        self._t.calls.submit(
            lane,
            f"{spec.standby_name}: destroy",
            lambda: self._t.hypervisor.destroy(spec.standby_name),
            lane=lane,
        )
        return None

    def ready_domid(self, spec: DriverDomainSpec, info: DomainInfo | None) -> int | None:
        """The standby's domid if it runs and meets the driver domain's readiness condition (a condition
        on backends cannot be judged of a domain that serves nothing yet: running is enough then)."""
        running = running_domid(info)
        if running is None or spec.readiness.condition != "xenstore-key":
            return running
        value = self._t.guests.read(f"/local/domain/{running}/{spec.readiness.key}")
        return running if value == spec.readiness.value.encode() else None

    def promoted(self, spec: DriverDomainSpec, *, not_before: float) -> None:
        """The standby now is the driver domain: the next one is a new instance, not a death. It boots
        no earlier than `not_before`, when a cold restart would have: the promotion skipped the crash
        loop's backoff, which thus paces the standbys' boots instead of the guests' outage. The start
        call of the instance just promoted may not have been taken yet (a standby is promotable once it
        runs ready, whenever its call's return is taken): taken later, it made that instance, now the
        driver domain, the standby again, found gone, "died", and booted another after 2 s instead of
        the backoff. It is taken here, before the record of that standby is replaced."""
        self._take_start(spec, self._kept.setdefault(spec.name, _Keeping()), self._t.clock())
        self._kept[spec.name] = _Keeping(not_before=not_before)

    def status(self, spec: DriverDomainSpec, info: DomainInfo | None) -> dict[str, object]:
        kept = self._kept.get(spec.name, _Keeping())
        ready = self.ready_domid(spec, info)
        state = "ready" if ready is not None else "booting" if running_domid(info) is not None else "absent"
        if state == "absent" and self._t.calls.busy((spec.standby_name, "start")):
            state = "starting"
        return {
            "name": spec.standby_name,
            "domid": running_domid(info),
            "state": state,
            "memory_mib": spec.memory_mib,  # what it costs: a whole second instance
            "error": kept.error,
        }

    def _start(self, spec: DriverDomainSpec) -> DomainInfo:
        standby = standby_spec(spec)
        self._t.hypervisor.define(standby)
        return self._t.hypervisor.start(standby.name)

    def _take_start(self, spec: DriverDomainSpec, kept: _Keeping, now: float) -> bool:
        """The standby's start call, if it has returned and was not taken yet: whether it had."""
        result = self._t.calls.take((spec.standby_name, "start"))
        if result is not None:
            self._started(spec, kept, result.value, result.error, now)
        return result is not None

    def _started(
        self,
        spec: DriverDomainSpec,
        kept: _Keeping,
        info: DomainInfo | None,
        error: Exception | None,
        now: float,
    ) -> None:
        if error is not None:
            kept.error = str(error)
            self._back_off(kept, now)
            self._t.history.record("standby-failed", driver_domain=spec.name, error=kept.error)
            log.warning("%s: its standby did not start: %s", spec.name, error)
            return
        assert info is not None
        kept.domid, kept.started_at, kept.error = info.domid, now, None
        self._t.history.record("standby-started", driver_domain=spec.name, domid=info.domid)
        log.info("%s: standby %s started as domid %s", spec.name, spec.standby_name, info.domid)

    def _died(self, spec: DriverDomainSpec, kept: _Keeping, now: float) -> None:
        uptime = now - kept.started_at
        if uptime >= spec.restart.healthy_uptime_seconds:
            kept.failures, kept.not_before = 0, now
        else:
            self._back_off(kept, now)
        self._t.history.record(
            "standby-died", driver_domain=spec.name, domid=kept.domid, uptime=round(uptime, 3)
        )
        log.info("%s: standby domid %s is gone after %.0f s; starting another", spec.name, kept.domid, uptime)
        kept.domid = None

    @staticmethod
    def _back_off(kept: _Keeping, now: float) -> None:
        kept.not_before = now + min(BACKOFF_CAP, BACKOFF_BASE * 2**kept.failures)
        kept.failures += 1
