"""The Hypervisor protocol on the simulated host, so the daemon runs unchanged without Xen.

It behaves like libvirt's libxl driver where the difference matters to xenddd: lifecycle events arrive on a
separate thread (libvirt's event loop), a crash is STOPPED/CRASHED and an external destroy STOPPED/DESTROYED,
a guest keeps a device in its live definition after the backend died until it is detached, attaching a
device whose backend domain is not running fails. Devices reach the toolstack as the real adapter sends
them: vifs as `xl network-attach devid=N` (libvirt's libxlMakeNic never sets a devid, so the adapter does
not ask libvirt; see docs/design.md), vbds with the devid their vdev gives on both toolstacks
(libxl__device_disk_dev_number). A caller of `SimHost.attach` without a devid gets libxl's next one.
`drop_connection` stands for libvirtd restarting: calls fail and lifecycle events are lost for a while,
then the client reconnects and says so.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from xenddd.adapters.hypervisor_api import DomainInfo, DomainState, LifecycleEvent, LifecycleKind
from xenddd.config.spec import DOM0_BACKEND, DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, VbdParams, VifParams, normalise_mac
from xenddd.sim.host import SimDomain, SimHost
from xenddd.sim.store import XsError

_KINDS = {
    "started": LifecycleKind.STARTED,
    "crashed": LifecycleKind.CRASHED,
    "destroyed": LifecycleKind.DESTROYED,
    "shutdown": LifecycleKind.SHUTDOWN,
    "suspended": LifecycleKind.SUSPENDED,
    "resumed": LifecycleKind.RESUMED,
}
_STATES = {
    "running": DomainState.RUNNING,
    "paused": DomainState.PAUSED,
    "shutoff": DomainState.SHUTOFF,
    "crashed": DomainState.CRASHED,
}


class SimHypervisor:
    def __init__(self, host: SimHost, *, iommu: bool = True) -> None:
        self.host = host
        self._iommu = iommu
        self._events: queue.Queue[LifecycleEvent | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._on_reconnect: Callable[[], None] = lambda: None
        self._lost_until = 0.0
        host.listen(self._on_host_event)

    @property
    def _xl_owned(self) -> set[str]:
        """Driver domains `xl create`d (toolstack = "xl"): libvirt never hears of them, so no lifecycle
        event does either (their deaths reach the daemon as @releaseDomain only), and nobody cleans up
        after their crash — the host's own record of them."""
        return self.host.kept_on_crash

    def drop_connection(self, gap: float) -> None:
        """libvirtd is unreachable for `gap` seconds: calls fail and lifecycle events are lost; then the
        connection is back and `on_reconnect` is called, as the libvirt adapter's reconnect does."""
        self._lost_until = time.monotonic() + gap
        timer = threading.Timer(gap, lambda: self._on_reconnect())
        timer.daemon = True
        timer.start()

    def domains(self) -> list[DomainInfo]:
        self._reachable()
        with self.host.whole():
            return [_info(d, self._xl_owned) for d in self.host.domains.values()]

    def domains_may_have_changed(self) -> None:
        """The simulated host's listing is read each time: nothing is kept."""

    def domain(self, name: str) -> DomainInfo | None:
        self._reachable()
        with self.host.whole():
            domain = self.host.domains.get(name)
            return _info(domain, self._xl_owned) if domain is not None else None

    def define(self, spec: DriverDomainSpec) -> None:
        self._reachable()
        if spec.toolstack == "xl":
            self._xl_owned.add(spec.name)
        else:
            self._xl_owned.discard(spec.name)
        self.host.define(
            spec.name,
            driver=True,
            memory_kib=spec.memory_mib * 1024,
            vcpus=spec.vcpus,
            defined=defined_devices(spec),
            pci=tuple(str(pci.bdf) for pci in spec.pci),
        )

    def start(self, name: str) -> DomainInfo:
        self._reachable()
        if name not in self.host.domains:
            raise XendddError(f"{name}: not defined")
        try:
            return _info(self.host.start(name))
        except XsError as exc:
            raise XendddError(
                f"{name}: starting it failed: a device's backend domain is not running ({exc.errno_name})"
            ) from None

    def start_with_domid(self, name: str, domid: int) -> DomainInfo:
        self._reachable()
        if name not in self._xl_owned:
            raise XendddError(f"{name}: libvirt cannot start a domain as a chosen domid ({domid})")
        if name not in self.host.domains:
            raise XendddError(f"{name}: not defined")
        try:
            return _info(self.host.start(name, domid))
        except XsError as exc:
            reason = (
                "the domid is in use" if exc.errno_name == "EEXIST" else "a device's backend is not running"
            )
            raise XendddError(f"{name}: starting it as domid {domid} failed: {reason}") from None

    def save(self, name: str, path: Path) -> None:
        self._reachable()
        if name not in self.host.domains:
            raise XendddError(f"{name}: not defined")
        try:
            self.host.save(name, path)
        except XsError as exc:
            reason = {"EBUSY": "it has PCI devices", "ENOENT": "it is not running"}[exc.errno_name]
            raise XendddError(f"{name}: saving it failed: {reason}") from None

    def restore(self, name: str, path: Path) -> DomainInfo:
        self._reachable()
        saved = self.host.saved_name(path) or name
        if saved != name:
            raise XendddError(f"{name}: restoring {path} failed: it holds {saved}")
        try:
            return _info(self.host.restore(path), self._xl_owned)
        except XsError as exc:
            reason = {"ENOENT": "no such saved domain"}.get(
                exc.errno_name, "a device's backend domain is not running"
            )
            raise XendddError(f"{name}: restoring {path} failed: {reason}") from None

    def destroy(self, name: str, domid: int | None = None) -> None:
        """By `domid` as `xl destroy <domid>` does it: whatever that domain is called now."""
        self._reachable()
        if domid is not None:
            name = next((n for n, d in self.host.domains.items() if d.domid == domid), "")
        if name in self.host.domains:
            self.host.destroy(name)

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        self._reachable()
        if domid is not None and old in self.host.domains and self.host.domains[old].domid != domid:
            raise XendddError(f'renaming {old} to {new} failed: domid {domid} is not called "{old}"')
        try:
            return _info(self.host.rename(old, new))
        except KeyError:
            raise XendddError(f"{old}: no such domain") from None
        except XsError as exc:
            reason = "a domain with that name exists" if exc.errno_name == "EEXIST" else "it is not running"
            raise XendddError(f"renaming {old} to {new} failed: {reason}") from None

    def manages(self, guest: str) -> bool:
        return guest in self.host.domains and guest not in self._xl_owned

    def attach(
        self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams, backend: str
    ) -> None:
        self._reachable()
        values: dict[str, str]
        if isinstance(params, VifParams):
            values = {"mac": normalise_mac(params.mac)}
            optional: tuple[tuple[str, object], ...] = (
                ("bridge", params.bridge),
                ("script", params.script),
                ("ip", params.ip),
                ("rate", params.rate),
                ("mtu", params.mtu),
                ("vifname", params.vifname),
            )
        else:
            values = {"dev": params.vdev, "mode": params.mode, "device-type": params.device_type}
            values["params"] = f"{params.format}:{params.target}" if params.format else params.target
            optional = (("type", params.backend_type), ("script", params.script))
        values |= {key: str(value) for key, value in optional if value}
        try:
            self.host.attach(guest, kind.value, devid, backend, values)
        except KeyError:
            raise XendddError(f"{guest}: no such domain") from None
        except XsError as exc:
            raise XendddError(
                f"attaching {kind.value} {devid} to {guest} via {backend}: {exc.errno_name}"
            ) from None

    def detach(self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams) -> None:
        self._reachable()
        try:
            self.host.detach(guest, kind.value, devid)
        except XsError as exc:
            raise XendddError(f"detaching {kind.value} {devid} from {guest}: {exc.errno_name}") from None

    def iommu_available(self) -> bool:
        return self._iommu

    def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
        """The simulated host has no PCI devices to pass through, and its driver domains no disks."""

    def watch_lifecycle(
        self, handler: Callable[[LifecycleEvent], None], on_reconnect: Callable[[], None]
    ) -> None:
        self._on_reconnect = on_reconnect

        def loop() -> None:
            while True:
                event = self._events.get()
                if event is None:
                    return
                handler(event)

        self._thread = threading.Thread(target=loop, name="sim-libvirt-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._events.put(None)
        if self._thread is not None:
            self._thread.join(2.0)

    def _reachable(self) -> None:
        if time.monotonic() < self._lost_until:
            raise XendddError("cannot reach libvirtd: connection lost (reconnecting)")

    def _on_host_event(self, what: str, domain: SimDomain) -> None:
        kind = _KINDS.get(what)
        if domain.name in self._xl_owned:
            return
        if kind is not None and time.monotonic() >= self._lost_until:
            self._events.put(LifecycleEvent(domain.name, domain.uuid, kind, domain.domid))


def defined_devices(spec: DriverDomainSpec) -> tuple[tuple[str, str, dict[str, str]], ...]:
    """A driver domain's own devices that another driver domain serves, as libxl writes them; those dom0
    serves are not modelled (the simulated host has no dom0 backends)."""
    devices: list[tuple[str, str, dict[str, str]]] = []
    for vif in spec.vifs:
        if vif.backend != DOM0_BACKEND:
            optional = {"bridge": vif.bridge, "ip": vif.ip, "script": vif.script}
            devices.append(("vif", vif.backend, {"mac": vif.mac} | {k: v for k, v in optional.items() if v}))
    for disk in spec.disks:
        if disk.backend != DOM0_BACKEND:
            params = {"dev": disk.vdev, "params": str(disk.path), "mode": "r" if disk.readonly else "w"}
            devices.append(("vbd", disk.backend, params))
    return tuple(devices)


def _info(domain: SimDomain, xl_owned: Collection[str] = ()) -> DomainInfo:
    """A crashed domain still there (its cleanup under way) is listed as xl lists it, crashed — or, as
    libvirt's libxl driver does from the crash until its cleanup is done, shut off (reason crashed) with
    its domid."""
    state = _STATES.get(domain.state, DomainState.OTHER)
    if state is DomainState.CRASHED and domain.domid is not None and domain.name not in xl_owned:
        state = DomainState.SHUTOFF
    return DomainInfo(
        name=domain.name,
        uuid=domain.uuid,
        domid=domain.domid,
        state=state,
        stopped=LifecycleKind(domain.stopped)
        if domain.stopped and domain.state in ("crashed", "shutoff")
        else None,
        memory_kib=domain.memory_kib,
        vcpus=domain.vcpus,
    )
