"""The Hypervisor protocol over both toolstacks of a dom0: libvirt for the guests and the driver domains it
owns, `xl` for the driver domains the config gives to xl (`toolstack = "xl"`) and their standbys.

Why two: a standby is promoted by renaming it while it runs, which libvirt's libxl driver cannot do, and a
domain libvirt did not create is invisible to it — so an xl-owned driver domain never shows in `virsh list`
under a name that is no longer true, and `xl list` shows both instances as they are. Guests stay with
libvirt whatever owns their driver domains: a `<backenddomain name='domnet'/>` is resolved by libxl from
xenstore at each attach, so it finds the promoted instance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from xenddd.adapters.hypervisor_api import DomainInfo, Hypervisor, LifecycleEvent
from xenddd.adapters.libxl_devices import LibxlDevices
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xl_domains import XlDomains
from xenddd.config.spec import Config, DriverDomainSpec
from xenddd.model import DeviceKind, VbdParams, VifParams

XL_CONFIGS = "xl"  # under the state directory: the xl.cfg files xenddd writes for its xl-owned domains


def toolstacks(
    config: Config,
    libvirt: Hypervisor,
    xenstore: Xenstore,
    devices: LibxlDevices | None = None,
    lister: LibxlDevices | None = None,
) -> Toolstacks:
    """`xenstore`: where xl's domains are renamed and a promoted one's moved disks looked at (connected
    at the first use); `devices`: libxl's helpers, which attach those disks; `lister`: those that list
    xl's domains (see XlDomains)."""
    xl = XlDomains(config.settings.state_dir / XL_CONFIGS, xenstore, devices=devices, lister=lister)
    return Toolstacks(libvirt, xl, xl_owned_names(config.driver_domains))


def xl_owned_names(specs: Iterable[DriverDomainSpec]) -> set[str]:
    """An xl driver domain's name and its standby's, enabled or not: a standby left running by a config
    that no longer enables one must still be seen, to be retired (recovery/standby.py)."""
    names: set[str] = set()
    for spec in specs:
        if spec.toolstack == "xl":
            names.update((spec.name, spec.standby_name))
    return names


LISTING_MAX_AGE = 30.0  # seconds: the daemon's safety resync, for a domain event that was lost


@dataclass(frozen=True)
class _Listing:
    taken: float
    libvirt: list[DomainInfo]
    xl: list[DomainInfo]  # every domain xl lists; only xl-owned ones are shown


class Toolstacks:
    """The domains' listing — libvirt's and xl's — is kept between passes: each `xl list` is a process,
    half a second of a dom0's CPU under emulation, libvirt's is a request per domain (0.1 to 0.5 s of a
    busy dom0 there), and a recovery makes a pass per watch event, some of them on its path (the one that
    sees the dead instance's nodes gone submits the stale frontends' detaches). It is taken again after
    any hint that a domain came, went or stopped (libvirt's lifecycle events; `@releaseDomain`, which comes
    for every shutdown and crash; a resync, after libvirtd's connection is back too), after any change
    made through here but a rename (which updates it), and when it is LISTING_MAX_AGE old. A listing that
    was under way when such a change was told (a destroy on a worker returning as a pass lists) may show
    the domain as it was: it serves the pass that took it, and is not kept."""

    def __init__(
        self,
        libvirt: Hypervisor,
        xl: XlDomains,
        xl_owned: Iterable[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._libvirt = libvirt
        self._xl = xl
        self._xl_owned = set(xl_owned)
        self._clock = clock
        self._lock = threading.Lock()
        self._listing: _Listing | None = None
        self._changes = 0  # how many changes were told: a listing taken across one is not kept

    def _owner(self, name: str) -> Hypervisor | XlDomains:
        return self._xl if name in self._xl_owned else self._libvirt

    def domains(self) -> list[DomainInfo]:
        now = self._clock()
        with self._lock:
            kept = self._listing
            if kept is None or now - kept.taken >= LISTING_MAX_AGE:
                kept = None
            changes = self._changes
        if kept is None:
            kept = _Listing(now, self._libvirt.domains(), self._xl.domains() if self._xl_owned else [])
            with self._lock:
                if changes == self._changes:
                    self._listing = kept
        return [*kept.libvirt, *(info for info in kept.xl if info.name in self._xl_owned)]

    def domains_may_have_changed(self) -> None:
        with self._lock:
            self._listing = None
            self._changes += 1

    def domain(self, name: str) -> DomainInfo | None:
        return self._owner(name).domain(name)

    def define(self, spec: DriverDomainSpec) -> None:
        """A reloaded config may hand a driver domain to the other toolstack: its next start goes there.
        libvirt lists a domain it has defined, running or not."""
        if spec.toolstack == "xl":
            self._xl_owned.add(spec.name)
        else:
            self._xl_owned.discard(spec.name)
        try:
            self._owner(spec.name).define(spec)
        finally:
            self.domains_may_have_changed()

    def start(self, name: str) -> DomainInfo:
        try:
            return self._owner(name).start(name)
        finally:
            self.domains_may_have_changed()

    def start_with_domid(self, name: str, domid: int) -> DomainInfo:
        try:
            return self._owner(name).start_with_domid(name, domid)
        finally:
            self.domains_may_have_changed()

    def save(self, name: str, path: Path) -> None:
        try:
            self._owner(name).save(name, path)
        finally:
            self.domains_may_have_changed()

    def restore(self, name: str, path: Path) -> DomainInfo:
        try:
            return self._owner(name).restore(name, path)
        finally:
            self.domains_may_have_changed()

    def destroy(self, name: str, domid: int | None = None) -> None:
        try:
            self._owner(name).destroy(name, domid)
        finally:
            self.domains_may_have_changed()

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        """A rename that succeeded is known exactly: a kept listing is brought up to date rather than
        taken again (on a promotion's path, `xl list` would be half a second of dom0's CPU before the
        guests' attaches). What it says of the renamed domain is xl's; the remains that had the name
        lost it in xenstore first, so `xl list` no longer shows them under it either."""
        try:
            info = self._owner(old).rename(old, new, domid)
        except BaseException:
            self.domains_may_have_changed()
            raise
        with self._lock:
            self._changes += 1  # a listing under way may show the old name: it is not kept
            kept = self._listing
            if kept is None or not any(d.domid == info.domid and d.name == old for d in kept.xl):
                self._listing = None
            else:
                renamed = [
                    replace(d, name=new) if d.domid == info.domid else d for d in kept.xl if d.name != new
                ]
                self._listing = replace(kept, xl=renamed)
        return info

    def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
        self._owner(spec.name).ensure_passthrough(spec, disks)

    def manages(self, guest: str) -> bool:
        return self._libvirt.manages(guest)

    def attach(
        self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams, backend: str
    ) -> None:
        self._libvirt.attach(guest, kind, devid, params, backend)

    def detach(self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams) -> None:
        self._libvirt.detach(guest, kind, devid, params)

    def iommu_available(self) -> bool:
        return self._libvirt.iommu_available()

    def watch_lifecycle(
        self, handler: Callable[[LifecycleEvent], None], on_reconnect: Callable[[], None]
    ) -> None:
        """libvirt's events only: an xl-owned domain's death reaches the daemon as @releaseDomain."""
        self._libvirt.watch_lifecycle(handler, on_reconnect)

    def close(self) -> None:
        self._libvirt.close()
