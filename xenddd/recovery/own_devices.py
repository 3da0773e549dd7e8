"""A driver domain's own devices that another driver domain serves — a filtering domain's uplink: each must
reach Connected, or it is detached and attached again.

The toolstack creates them with the domain, and no guest's recovery looks at them again. When the
upstream's hotplug machinery misses libxl's limits (its `xl devd` kills a hotplug script after 40 s on a
loaded host), such a device stays in InitWait for good, or its backend is removed; the filtering domain
then comes back serving its clients with no uplink. So while a driver domain runs, each of them must
reach Connected within `reattach_timeout`, and one whose backend gave up is not waited for: it is
detached and attached again to the upstream's running instance, backing off (at most once a minute), as
a guest's frontend is after a recovery.

One owner per device: while the upstream is being recovered, or holds the device parked or under a call
of its own, the upstream's recovery owns it (it is its frontend like any guest's), and nothing here
touches it. What is checked comes from dom0's own records (`/libxl/<domid>/device/...`); a device about
to be detached is saved in the driver domain's record first, so one whose attach then failed is attached
again after a daemon restart too. Waiting times are held in memory only: a daemon restarted meanwhile
gives each device a fresh `reattach_timeout`, which costs time, never a device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from xenddd.config.spec import DriverDomainSpec
from xenddd.model import Frontend, FrontendKey, XenbusState
from xenddd.recovery.frontend_steps import CONFIRM_RECHECK, earliest, state_name
from xenddd.recovery.intent import DomainRecord, PendingFrontend, attach_backoff
from xenddd.recovery.tools import RecoveryTools

log = logging.getLogger(__name__)

OwnedElsewhere = Callable[[str, FrontendKey], bool]
"""Whether upstream `name`'s recovery holds that device now (parked, or under a call of its own)."""


@dataclass
class _Unconnected:
    upstream_domid: int
    since: float  # first seen not Connected, or when the last detach-and-attach returned
    attempts: int = 0

    def backoff(self) -> float:
        """After an attempt: at least this long before the next, doubling (a minute at most)."""
        return attach_backoff(self.attempts) if self.attempts else 0.0


class OwnDevices:
    def __init__(self, tools: RecoveryTools) -> None:
        self._t = tools
        self._unconnected: dict[tuple[str, FrontendKey], _Unconnected] = {}  # (driver domain, device)

    def waiting(self) -> bool:
        """Some device not Connected yet: the upstream's backend tree changing is then worth a full pass."""
        return bool(self._unconnected)

    def forget(self, name: str) -> None:
        """Driver domain `name` does not run as recorded: nothing of it to wait for."""
        for key in [k for k in self._unconnected if k[0] == name]:
            del self._unconnected[key]

    def check(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        domid: int,
        upstreams: Mapping[str, int],
        owned_elsewhere: OwnedElsewhere,
    ) -> float | None:
        """Instance `domid` of `spec`; `upstreams`: the domid of each upstream that serves now (running,
        ready, not being recovered). Returns seconds until the next look while a device is not
        Connected, else None."""
        self._collect(spec)
        stale = [p for p in record.own_reattaching if p.frontend.guest_domid != domid]
        if stale:  # devices of an instance that is gone: the new one got its own from its definition
            record.own_reattaching = [p for p in record.own_reattaching if p not in stale]
            self._t.save(record)
        self._t.guests.refresh()
        if not self._t.guests.is_running(domid):
            # died since the pass listed it: its devices are gone with it, and its incident comes next —
            # judging them now would report a stall of a dead instance's uplink
            return None
        now = self._t.clock()
        wake: float | None = None
        watched: set[tuple[str, FrontendKey]] = set()
        for upstream, upstream_domid in upstreams.items():
            recorded = self._t.guests.recorded_on(upstream, upstream_domid, guests=[domid])
            keys = {f.key for f in recorded}
            lost = [  # detached by an attempt whose attach then failed: no record names them any more
                p.frontend
                for p in record.own_reattaching
                if p.frontend.backend_name == upstream and p.key not in keys
            ]
            devices = [f for f in recorded + lost if not owned_elsewhere(upstream, f.key)]
            connected = self._t.guests.connected_many(upstream_domid, [(domid, f) for f in devices])
            for frontend, ok in zip(devices, connected, strict=True):
                key = (spec.name, frontend.key)
                if self._t.calls.busy(_call_key(spec, frontend)):
                    watched.add(key)
                    continue
                if ok:
                    self._connected(spec, record, frontend, self._unconnected.pop(key, None))
                    continue
                watched.add(key)
                entry = self._unconnected.get(key)
                if entry is None or entry.upstream_domid != upstream_domid:
                    entry = self._unconnected[key] = _Unconnected(upstream_domid, now)
                back = self._t.guests.backend_state(upstream_domid, domid, frontend)
                if back is None and frontend not in lost and not self._t.guests.recorded(domid, frontend):
                    watched.discard(key)  # its record went with the instance, which died since the listing
                    continue
                gave_up = (
                    frontend in lost or back is None or back in (XenbusState.CLOSING, XenbusState.CLOSED)
                )
                timeout = spec.readiness.reattach_timeout_seconds
                due = entry.since + (entry.backoff() if gave_up else max(timeout, entry.backoff()))
                if now < due:
                    wake = earliest(wake, min(due - now, CONFIRM_RECHECK))
                    continue
                reason = (
                    f"its backend gave up ({state_name(back)})"
                    if gave_up
                    else f"not Connected within {timeout:.0f} s (backend {state_name(back)})"
                )
                self._again(spec, record, domid, frontend, entry, reason)
        for key in [k for k in self._unconnected if k[0] == spec.name and k not in watched]:
            del self._unconnected[key]  # its upstream stopped serving, or took the device over
        return wake

    def _connected(
        self, spec: DriverDomainSpec, record: DomainRecord, frontend: Frontend, entry: _Unconnected | None
    ) -> None:
        if any(p.key == frontend.key for p in record.own_reattaching):
            record.own_reattaching = [p for p in record.own_reattaching if p.key != frontend.key]
            self._t.save(record)
        if entry is not None and entry.attempts:
            self._t.history.record(
                "own-device-connected", driver_domain=spec.name, upstream=frontend.backend_name,
                kind=frontend.kind.value, devid=frontend.devid, attempts=entry.attempts,
            )  # fmt: skip

    def _again(
        self,
        spec: DriverDomainSpec,
        record: DomainRecord,
        domid: int,
        f: Frontend,
        entry: _Unconnected,
        reason: str,
    ) -> None:
        entry.attempts += 1
        if not any(p.key == f.key for p in record.own_reattaching):
            record.own_reattaching.append(PendingFrontend(f))
        self._t.save(record)  # before the detach
        self._t.history.record(
            "own-device-stalled", driver_domain=spec.name, upstream=f.backend_name, kind=f.kind.value,
            devid=f.devid, reason=reason, attempt=entry.attempts,
        )  # fmt: skip
        log.warning(
            "%s: its %s %d served by %s: %s; detaching and attaching it again (attempt %d)",
            spec.name, f.kind.value, f.devid, f.backend_name, reason, entry.attempts,
        )  # fmt: skip

        def detach_and_attach() -> None:
            info = self._t.hypervisor.domain(spec.name)
            if info is None or info.domid != domid:
                return  # restarted meanwhile: the new instance got the device from its definition
            self._t.hypervisor.detach(f.guest_name, f.kind, f.devid, f.params)
            self._t.hypervisor.attach(f.guest_name, f.kind, f.devid, f.params, f.backend_name)

        self._t.calls.submit(
            _call_key(spec, f),
            f"{spec.name}: its {f.kind.value} {f.devid} again",
            detach_and_attach,
            lane=(spec.name, "own"),  # never holding a worker its clients' reattaches need
        )

    def _collect(self, spec: DriverDomainSpec) -> None:
        for call in self._t.calls.keys(lambda k: isinstance(k, tuple) and k[:2] == (spec.name, "own")):
            result = self._t.calls.take(call)
            assert isinstance(call, tuple)
            if result is None:
                continue
            if result.error is not None:
                log.error("%s: attaching its device %s again: %s", spec.name, call[2], result.error)
            entry = self._unconnected.get((spec.name, call[2]))
            if entry is not None:
                entry.since = self._t.clock()  # the handshake's time, or the backoff, counts from here


def _call_key(spec: DriverDomainSpec, frontend: Frontend) -> tuple[str, str, FrontendKey]:
    return (spec.name, "own", frontend.key)
