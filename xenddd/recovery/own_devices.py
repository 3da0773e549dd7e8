"""A driver domain's own devices that another driver domain serves — a filtering domain's uplink: each must
reach Connected, or it is detached and attached again.

The toolstack creates them with the domain, and no guest's recovery looks at them again. When the
upstream's hotplug machinery misses libxl's limits (its `xl devd` kills a hotplug script after 40 s on a
loaded host), such a device stays in InitWait for good, or its backend is removed; the filtering domain
then comes back serving its clients with no uplink. So while a driver domain runs, each of them must
reach Connected within `reattach_timeout`, and one whose backend gave up is not waited for: it is
detached and attached again to the upstream's running instance, backing off, as a guest's frontend is
after a recovery. While the upstream itself is being recovered its recovery owns them (they are its
frontends like any guest's), so only upstreams that serve are looked at.

What is checked comes from dom0's own records (`/libxl/<domid>/device/...`), never from what the upstream
wrote. It is held in memory only: a daemon restarted meanwhile gives each such device a fresh
`reattach_timeout`, which costs time, never a device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from xenddd.config.spec import DriverDomainSpec
from xenddd.model import Frontend, XenbusState
from xenddd.recovery.frontend_steps import CONFIRM_RECHECK, earliest
from xenddd.recovery.intent import ATTACH_RETRY_BASE, ATTACH_RETRY_CAP
from xenddd.recovery.tools import RecoveryTools

log = logging.getLogger(__name__)

_Key = tuple[str, int, str, int]  # driver domain, its domid, device kind, devid


@dataclass
class _Unconnected:
    frontend: Frontend
    upstream: str
    since: float  # first seen not Connected, or when the last detach-and-attach returned
    attempts: int = 0

    def backoff(self) -> float:
        """After an attempt: at least this long before the next, doubling (a minute at most)."""
        if not self.attempts:
            return 0.0
        return min(ATTACH_RETRY_CAP, ATTACH_RETRY_BASE * 2.0 ** min(self.attempts - 1, 16))


class OwnDevices:
    def __init__(self, tools: RecoveryTools) -> None:
        self._t = tools
        self._unconnected: dict[_Key, _Unconnected] = {}

    def waiting(self) -> bool:
        """Some device not Connected yet: the upstream's backend tree changing is then worth a full pass."""
        return bool(self._unconnected)

    def check(self, spec: DriverDomainSpec, domid: int, upstreams: Mapping[str, int]) -> float | None:
        """Instance `domid` of `spec`; `upstreams`: the domid of each upstream that serves now. Returns
        seconds until the next look while a device is not Connected, else None."""
        for key in [k for k in self._unconnected if k[0] == spec.name and k[1] != domid]:
            del self._unconnected[key]  # an instance that is gone
        self._collect(spec)
        self._t.guests.refresh()
        now = self._t.clock()
        timeout = spec.readiness.reattach_timeout_seconds
        wake: float | None = None
        for upstream, upstream_domid in upstreams.items():
            recorded = self._t.guests.recorded_on(upstream, upstream_domid, guests=[domid])
            lost = [  # detached by an attempt whose attach then failed: no record names them any more
                u.frontend
                for k, u in self._unconnected.items()
                if k[:2] == (spec.name, domid) and u.upstream == upstream
                and not any(f.key == u.frontend.key for f in recorded)
            ]  # fmt: skip
            devices = recorded + lost
            connected = self._t.guests.connected_many(upstream_domid, [(domid, f) for f in devices])
            for frontend, ok in zip(devices, connected, strict=True):
                key = (spec.name, domid, frontend.kind.value, frontend.devid)
                if self._t.calls.busy(_call_key(key)):
                    continue
                if ok:
                    done = self._unconnected.pop(key, None)
                    if done is not None and done.attempts:
                        self._t.history.record(
                            "own-device-connected", driver_domain=spec.name, upstream=upstream,
                            kind=frontend.kind.value, devid=frontend.devid, attempts=done.attempts,
                        )  # fmt: skip
                    continue
                entry = self._unconnected.setdefault(key, _Unconnected(frontend, upstream, now))
                back = self._t.guests.backend_state(upstream_domid, domid, frontend)
                gave_up = (
                    frontend in lost or back is None or back in (XenbusState.CLOSING, XenbusState.CLOSED)
                )
                due = entry.since + (entry.backoff() if gave_up else max(timeout, entry.backoff()))
                if now < due:
                    wake = earliest(wake, min(due - now, CONFIRM_RECHECK))
                    continue
                reason = (
                    f"its backend gave up ({_state_name(back)})"
                    if gave_up
                    else f"not Connected within {timeout:.0f} s (backend {_state_name(back)})"
                )
                self._again(spec, key, entry, reason)
        return wake

    def _again(self, spec: DriverDomainSpec, key: _Key, entry: _Unconnected, reason: str) -> None:
        entry.attempts += 1
        f = entry.frontend
        self._t.history.record(
            "own-device-stalled", driver_domain=spec.name, upstream=entry.upstream, kind=f.kind.value,
            devid=f.devid, reason=reason, attempt=entry.attempts,
        )  # fmt: skip
        log.warning(
            "%s: its %s %d served by %s: %s; detaching and attaching it again (attempt %d)",
            spec.name, f.kind.value, f.devid, entry.upstream, reason, entry.attempts,
        )  # fmt: skip

        def detach_and_attach() -> None:
            self._t.hypervisor.detach(f.guest_name, f.kind, f.devid, f.params)
            self._t.hypervisor.attach(f.guest_name, f.kind, f.devid, f.params, entry.upstream)

        self._t.calls.submit(
            _call_key(key), f"{spec.name}: {f.kind.value} {f.devid} again", detach_and_attach, lane=spec.name
        )

    def _collect(self, spec: DriverDomainSpec) -> None:
        for call in self._t.calls.keys(lambda k: isinstance(k, tuple) and k[:2] == (spec.name, "own")):
            result = self._t.calls.take(call)
            assert isinstance(call, tuple)
            entry = self._unconnected.get(call[2])
            if result is None or entry is None:
                continue
            entry.since = self._t.clock()  # the handshake's time, or the backoff, counts from here
            if result.error is not None:
                log.error(
                    "%s: attaching its %s %d served by %s again: %s",
                    spec.name, entry.frontend.kind.value, entry.frontend.devid, entry.upstream, result.error,
                )  # fmt: skip


def _call_key(key: _Key) -> tuple[str, str, _Key]:
    return (key[0], "own", key)


def _state_name(state: XenbusState | None) -> str:
    return "absent" if state is None else state.name
