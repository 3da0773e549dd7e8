"""The configuration's model: what the operator declared, as frozen dataclasses the rest of xenddd trusts.

Built only by `loader`, which validates every value at the boundary; defaults are where Debian's Xen and
libvirt packages put things, and do nothing on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from xenddd.errors import InputError
from xenddd.model import Bdf, DriverDomainKind

Policy = Literal["strict", "relaxed"]
Virt = Literal["pv", "hvm"]
OnCrash = Literal["destroy", "preserve"]
Reconnect = Literal["reattach", "in-place"]
Toolstack = Literal["libvirt", "xl"]
ReadinessCondition = Literal["xenstore-key", "backend-initwait", "running"]


@dataclass(frozen=True)
class Settings:
    """Host-wide settings; defaults are where Debian's Xen and libvirt packages put things."""

    libvirt_uri: str = "xen:///system"
    xenstore_socket: Path = Path("/run/xenstored/socket")
    state_dir: Path = Path("/var/lib/xenddd")
    control_socket: Path = Path("/run/xenddd/control.sock")
    control_group: str | None = None
    sysfs_root: Path = Path("/sys")
    log_level: str = "info"
    metrics_textfile: Path | None = None
    max_parallel_reattach: int = 8


@dataclass(frozen=True)
class PciDeviceSpec:
    """A PCI device handed to a driver domain, with the passthrough options libxl knows."""

    bdf: Bdf
    permissive: bool = False
    rdm_policy: Policy = "strict"
    reset: Policy = "strict"


DOM0_BACKEND = "dom0"  # `backend = "dom0"`: the device is served by dom0, as a domain's disks usually are


@dataclass(frozen=True)
class DiskSpec:
    """A disk of the driver domain itself (its root or data filesystem), served by dom0 or, with
    `backend`, by a storage driver domain."""

    path: Path
    vdev: str = "xvda"
    format: str = "raw"
    readonly: bool = False
    backend: str = DOM0_BACKEND
    # the hotplug script its backend runs, as xl's `script=` names it (a name under /etc/xen/scripts or
    # an absolute path); None: the toolstack's own (`block` for a device)
    script: str | None = None


@dataclass(frozen=True)
class VifSpec:
    """A vif of the driver domain itself: a filtering driver domain's uplink, served by dom0 or by the
    driver domain that holds the NIC. Its MAC is fixed (generated from the domain's name when the config
    gives none) so that the filtering domain's view of its uplink survives every restart.

    `rate_kib` is libvirt's `<bandwidth><outbound average>` in KiB/s, which libxl turns into its rate."""

    mac: str
    backend: str = DOM0_BACKEND
    bridge: str | None = None
    ip: str | None = None
    script: str | None = None
    rate_kib: int | None = None
    mac_generated: bool = False


@dataclass(frozen=True)
class RestartPolicy:
    """How hard xenddd tries to bring a crashed driver domain back before declaring it failed.

    A crash after `healthy_uptime` of running ends any crash loop: that domain is restarted at once, and
    only restarts since then count. Backoff and the `max_restarts`-in-`window` limit are for crash loops.
    """

    max_restarts: int = 5
    window_seconds: float = 600.0
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    healthy_uptime_seconds: float = 60.0


@dataclass(frozen=True)
class Readiness:
    """When a (re)started driver domain can serve, i.e. when it is safe to reattach frontends to it.

    `xenstore-key`: the DD writes `key` (relative to /local/domain/<domid>) with `value` once its backends and
    `xl devd` run; `backend-initwait`: its first backend reaches InitWait; `running`: libvirt says running.
    `reattach_timeout`: how long a reattached frontend may take to reach Connected before xenddd detaches
    and attaches it again (a handshake that stalls, e.g. a guest kernel that did not probe the new device).
    `reattach_attempts`: after this many attaches without Connected, the frontend is parked: it leaves the
    recovery (which then ends for everybody else) and is retried on its own slow schedule.
    """

    condition: ReadinessCondition = "xenstore-key"
    key: str = "data/ready"
    value: str = "1"
    timeout_seconds: float = 120.0
    reattach_timeout_seconds: float = 120.0
    reattach_attempts: int = 5


@dataclass(frozen=True)
class Standby:
    """A second, booted instance (`<name>-standby`) kept ready to take a crashed instance's place: it is
    renamed to the driver domain's name and given its PCI devices, with no boot on the recovery's path.
    It costs one more domain's memory for as long as it runs."""

    enabled: bool = False


STANDBY_SUFFIX = "-standby"


@dataclass(frozen=True)
class SavedInstance:
    """A ready instance saved to disk once (`<state_dir>/saved/<name>.save`) and restored instead of
    booted at every later start: a restore of a small domain takes about half its boot. It costs the
    domain's memory in disk space, not in RAM. Its image must answer a restore (a new domid): xenddd's
    driver-domain image restarts `xl devd` and writes its readiness key again."""

    enabled: bool = False


@dataclass(frozen=True)
class DriverDomainSpec:
    """One driver domain as the operator declared it: the desired state the reconciler converges to."""

    name: str
    kinds: frozenset[DriverDomainKind]
    virt: Virt = "pv"
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    memory_mib: int = 256
    vcpus: int = 1
    disks: tuple[DiskSpec, ...] = ()
    vifs: tuple[VifSpec, ...] = ()
    pci: tuple[PciDeviceSpec, ...] = ()
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    readiness: Readiness = field(default_factory=Readiness)
    depends_on: tuple[str, ...] = ()
    on_crash: OnCrash = "destroy"
    # Who creates and owns the domain. `xl`: created with `xl create`, invisible to libvirt, and
    # renameable while it runs (libxl_domain_rename), which a standby's promotion needs and libvirt's
    # libxl driver has no call for.
    toolstack: Toolstack = "libvirt"
    standby: Standby = field(default_factory=Standby)
    saved_instance: SavedInstance = field(default_factory=SavedInstance)
    # How its guests get their devices back after a crash. `reattach`: detached from the dead instance and
    # attached to the new one (new devices in the guests). `in-place`: the new instance is created with the
    # dead one's domid and takes the guests' rings over as they are (their devices never go); only xl can
    # choose a domid, and a device that does not reconnect so within reattach_timeout is reattached.
    reconnect: Reconnect = "reattach"
    # Guests whose devices are detached and attached again even when the driver domain reconnects in
    # place: in place, a guest's I/O on them waits out the outage; detached, it fails at once, which a
    # guest that fails over itself (a RAID mirror or a bond over two driver domains) must see.
    reattach_guests: frozenset[str] = frozenset()
    # Created ready for PCI devices passed through while it runs (Xen's IOMMU context, a PCI hole in a PV
    # domain's memory map): a standby, which gets the crashed instance's devices by hot-plug.
    pci_hotplug: bool = False

    def restores_in_place(self, guest: str) -> bool:
        """Whether `guest`'s devices reconnect in place after a crash of this driver domain."""
        return self.reconnect == "in-place" and guest not in self.reattach_guests

    @property
    def standby_name(self) -> str:
        return self.name + STANDBY_SUFFIX

    @property
    def upstreams(self) -> tuple[str, ...]:
        """The driver domains that serve this one's own vifs and disks, in the config's order."""
        named = [v.backend for v in self.vifs] + [d.backend for d in self.disks]
        named = [name for name in named if name != DOM0_BACKEND]
        return tuple(dict.fromkeys(named))

    @property
    def dependencies(self) -> tuple[str, ...]:
        """What must run before this domain starts: `depends_on` and, implicitly, its upstreams."""
        return tuple(dict.fromkeys((*self.depends_on, *self.upstreams)))


@dataclass(frozen=True)
class SimGuestSpec:
    """A guest the simulated host creates (`xenddd demo`, `daemon --simulate`); ignored on real Xen."""

    name: str
    vif: tuple[str, ...] = ()
    vbd: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    settings: Settings
    driver_domains: tuple[DriverDomainSpec, ...]
    sim_guests: tuple[SimGuestSpec, ...] = ()
    source: Path | None = None

    def driver_domain(self, name: str) -> DriverDomainSpec:
        for spec in self.driver_domains:
            if spec.name == name:
                return spec
        raise InputError(f"no driver domain named {name!r} in {self.source or 'the config'}")

    def start_order(self) -> tuple[DriverDomainSpec, ...]:
        """Driver domains so that each comes after everything it depends on (validated acyclic)."""
        by_name = {spec.name: spec for spec in self.driver_domains}
        ordered: list[DriverDomainSpec] = []
        seen: set[str] = set()

        def visit(spec: DriverDomainSpec) -> None:
            if spec.name in seen:
                return
            seen.add(spec.name)
            for dep in spec.dependencies:
                visit(by_name[dep])
            ordered.append(spec)

        for spec in self.driver_domains:
            visit(spec)
        return tuple(ordered)
