"""What the core needs from a hypervisor toolstack, independent of whether libvirt or the simulator serves it.

The libvirt adapter (`xenddd.adapters.hypervisor`) implements this on real Xen; `xenddd.sim.hypervisor`
implements it on the simulated host, so the daemon runs unchanged against either.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from xenddd.config.spec import DriverDomainSpec
from xenddd.model import DeviceKind, VbdParams, VifParams


class DomainState(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    OTHER = "other"


@dataclass(frozen=True)
class DomainInfo:
    """A domain as the toolstack sees it now. `domid` is None while it is not running.

    Xen never reuses a domid until the 15-bit space wraps, so (name, domid) identifies one *instance* of a
    domain: a late event about an older domid must not be mistaken for the current one.
    """

    name: str
    uuid: str
    domid: int | None
    state: DomainState
    memory_kib: int
    vcpus: int
    cpu_time_ns: int = 0
    # How a domain that is not running stopped, when the toolstack knows: what tells an operator a
    # crash apart from somebody's `xl destroy` or a shutdown from inside.
    stopped: LifecycleKind | None = None


ALIVE = (DomainState.RUNNING, DomainState.PAUSED, DomainState.OTHER)


def running_domid(info: DomainInfo | None) -> int | None:
    """The domid of a live instance; a crashed or shut-down one that the toolstack still lists is dead."""
    if info is None or info.domid is None or info.state not in ALIVE:
        return None
    return info.domid


def how_it_stopped(info: DomainInfo | None) -> str:
    """crashed, destroyed or shutdown as the toolstack tells it; gone when it no longer knows the domain
    (undefined behind xenddd's back) or not how it stopped."""
    return info.stopped.value if info is not None and info.stopped is not None else "gone"


class LifecycleKind(enum.Enum):
    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    SHUTDOWN = "shutdown"  # stopped from inside the domain
    DESTROYED = "destroyed"  # stopped by a toolstack (xenddd itself, or somebody else's `xl destroy`)
    CRASHED = "crashed"


@dataclass(frozen=True)
class LifecycleEvent:
    """A hint from the toolstack; the reconciler re-reads real state rather than trusting it."""

    name: str
    uuid: str
    kind: LifecycleKind
    domid: int | None = None


@dataclass(frozen=True)
class GuestDevice:
    """A vif or vbd of a guest as the toolstack's live definition lists it, and the domain serving it."""

    kind: DeviceKind
    devid: int | None
    params: VifParams | VbdParams
    backend_name: str | None


class Hypervisor(Protocol):
    def domains(self) -> list[DomainInfo]:
        """Every domain the toolstack knows, running or defined."""
        ...

    def domain(self, name: str) -> DomainInfo | None: ...

    def domains_may_have_changed(self) -> None:
        """A hint said a domain came, went, stopped or was renamed: a listing kept from before it (one
        that costs a process per call, `xl list`) must not be reused."""
        ...

    def define(self, spec: DriverDomainSpec) -> None:
        """Define (or update the persistent definition of) a driver domain; does not start it."""
        ...

    def start(self, name: str) -> DomainInfo: ...

    def start_with_domid(self, name: str, domid: int) -> DomainInfo:
        """Start a driver domain as `domid`, its dead instance's (an in-place reconnect: the guests' rings,
        grants and unbound event channels name that domid). Refused while the domid is in use, and by a
        toolstack that cannot choose one (libvirt)."""
        ...

    def save(self, name: str, path: Path) -> None:
        """Save the running domain's memory and state to `path` (a new file), after which it is gone."""
        ...

    def restore(self, name: str, path: Path) -> DomainInfo:
        """Bring a domain saved to `path` back, running (with a new domid), under the name it was saved
        with, which must be `name`; the file stays, to be restored again."""
        ...

    def destroy(self, name: str, domid: int | None = None) -> None:
        """Stop the domain at once; a domain that is not running is not an error. `domid`: only that
        instance (the remains of a dead one) — another instance of the name, started meanwhile, stays."""
        ...

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        """Rename a domain (a standby promoted, or the dead instance's remains out of its way); refused
        while a domain called `new` exists, or (`domid`) if domain `domid` is not the one called `old`."""
        ...

    def manages(self, guest: str) -> bool:
        """True if `guest` is a domain of this toolstack; else `xl` created it and must attach its devices."""
        ...

    def attach(
        self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams, backend: str
    ) -> None:
        """Attach a frontend to `guest` served by driver domain `backend`, keeping devid/MAC/vdev."""
        ...

    def detach(self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams) -> None:
        """Detach a frontend; a device that is already gone is not an error."""
        ...

    def iommu_available(self) -> bool:
        """Whether Xen can pass PCI devices through (pv_ or hvm_directio); without it libxl fails late."""
        ...

    def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
        """For a running driver domain xenddd has no record of starting (a daemon killed between the
        start and the passthrough that follows it), or a standby just promoted: give it whatever devices
        of its own the start would have (PCI devices; for a promoted standby also its writable disks,
        unless `disks` is False: a promotion that attaches them beside the guests' reattach)."""
        ...

    def watch_lifecycle(
        self, handler: Callable[[LifecycleEvent], None], on_reconnect: Callable[[], None]
    ) -> None:
        """Deliver lifecycle events to `handler` (from the adapter's own thread); call `on_reconnect` after a
        lost connection came back, since events during the gap are lost and state must be re-read."""
        ...

    def close(self) -> None: ...
