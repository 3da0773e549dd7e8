"""The Hypervisor protocol on libvirt-python: libvirt's Xen driver (libxl underneath) on a real host.

Quirks contained here:
- Events need `virEventRegisterDefaultImpl()` before the connection is opened and a thread looping
  `virEventRunDefaultImpl()`; lifecycle callbacks run on that thread and only hand a hint on.
- A lost connection (libvirtd restarted) is noticed by the close callback or the next failing call; the
  adapter reconnects with backoff, re-registers its callbacks and calls `on_reconnect`, since events of the
  gap are lost.
- After a backend domain dies, libvirt keeps the guest's device in its live definition (qubes-issues#1426):
  the stale device must be detached through libvirt before the same device can be attached again, and
  "device not found" on detach means "already gone", not failure.
- Guests that `xl` created are not libvirt's; their devices are attached and detached by libxl itself
  (adapters/libxl_devices, as `xl network-attach` and the like would, without a process per call).
- libvirt cannot keep a vif's devid: libxlMakeNic never sets `libxl_device_nic.devid`, so libxl takes
  the last listed devid plus one. A libvirt guest's vifs are therefore detached and attached by libxl
  with their devid, as are disks with a hotplug script (libxlMakeDisk has no field for one). libvirt's
  live and persistent definitions are left alone: they still describe the same device (MAC, bridge,
  `<backenddomain name>`; the driver domain keeps its name), so they stay true (docs/design.md).
"""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt

from xenddd.adapters.domain_xml import driver_domain_xml, frontend_disk_xml, libxl_pci
from xenddd.adapters.hypervisor_api import (
    DomainInfo,
    DomainState,
    GuestDevice,
    LifecycleEvent,
    LifecycleKind,
    running_domid,
)
from xenddd.adapters.libxl_devices import LibxlDevices
from xenddd.adapters.xl import Xl
from xenddd.config.spec import DriverDomainSpec, PciDeviceSpec
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, VbdParams, VifParams

log = logging.getLogger(__name__)

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}
_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: LifecycleKind.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: LifecycleKind.DESTROYED,
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: LifecycleKind.CRASHED,
}
_GONE = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID}
_event_impl_lock = threading.Lock()
_event_impl_registered = False


def _register_event_impl() -> None:
    """Once per process, before any connection: libvirt dispatches events only through a registered loop."""
    global _event_impl_registered
    with _event_impl_lock:
        if not _event_impl_registered:
            libvirt.virEventRegisterDefaultImpl()
            threading.Thread(target=_run_event_loop, name="xenddd-libvirt-events", daemon=True).start()
            _event_impl_registered = True


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as exc:  # pragma: no cover - libvirt's loop itself failing
            log.error("libvirt event loop: %s", exc)
            time.sleep(1)


class LibvirtHypervisor:
    def __init__(
        self,
        uri: str,
        *,
        xl: Xl | None = None,
        devices: LibxlDevices | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        """`devices`: what attaches and detaches the devices libvirt cannot (by default libxl's helpers,
        none started before the first call)."""
        _register_event_impl()
        self.uri = uri
        self._xl = xl or Xl()
        self._devices = devices or LibxlDevices()
        self._lock = threading.RLock()
        self._conn: Any = None
        self._handler: Callable[[LifecycleEvent], None] | None = None
        self._on_reconnect: Callable[[], None] | None = None
        self._backoff_initial, self._backoff_max = backoff_initial, backoff_max
        self._closed = False
        self._libxl_pci: dict[str, tuple[PciDeviceSpec, ...]] = {}
        self._connect()

    # -- connection ------------------------------------------------------------------------------------

    def _connect(self) -> Any:
        # Without a handler of its own, libvirt-python prints every error to stderr as well, on top of
        # the one line xenddd says about it.
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise XendddError(f"cannot connect to libvirt at {self.uri}: {_message(exc)}") from None
        conn.registerCloseCallback(self._closed_by_libvirt, None)
        if self._handler is not None:
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)
        self._conn = conn
        return conn

    def connection(self) -> Any:
        """The live connection, reconnecting (with backoff, bounded) if libvirtd went away."""
        with self._lock:
            if self._conn is not None and _alive(self._conn):
                return self._conn
            self._conn = None
            delay = self._backoff_initial
            deadline = time.monotonic() + self._backoff_max * 2
            while True:
                try:
                    conn = self._connect()
                    break
                except XendddError:
                    if time.monotonic() + delay > deadline or self._closed:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, self._backoff_max)
        log.info("reconnected to libvirt at %s", self.uri)
        if self._on_reconnect is not None:
            self._on_reconnect()
        return conn

    def _closed_by_libvirt(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt connection closed (reason %d); reconnecting", reason)
        with self._lock:
            self._conn = None
        if not self._closed:
            threading.Thread(
                target=self._reconnect_quietly, name="xenddd-libvirt-reconnect", daemon=True
            ).start()

    def _reconnect_quietly(self) -> None:
        try:
            self.connection()
        except XendddError as exc:
            log.error("%s", exc)

    def close(self) -> None:
        self._closed = True
        self._devices.close()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and _alive(conn):
            try:
                conn.unregisterCloseCallback()
                conn.close()
            except libvirt.libvirtError as exc:
                log.debug("closing the libvirt connection: %s", _message(exc))

    # -- queries ---------------------------------------------------------------------------------------

    def domains(self) -> list[DomainInfo]:
        try:
            return [_info(d) for d in self.connection().listAllDomains()]
        except libvirt.libvirtError as exc:
            raise XendddError(f"listing domains: {_message(exc)}") from None

    def domains_may_have_changed(self) -> None:
        """libvirt's listing is asked for each time: nothing is kept."""

    def domain(self, name: str) -> DomainInfo | None:
        dom = self._lookup(name)
        return _info(dom) if dom is not None else None

    def manages(self, guest: str) -> bool:
        return self._lookup(guest) is not None

    def iommu_available(self) -> bool:
        return self._xl.iommu_available()

    # -- lifecycle -------------------------------------------------------------------------------------

    def define(self, spec: DriverDomainSpec) -> None:
        self._libxl_pci[spec.name] = libxl_pci(spec)
        existing = self._lookup(spec.name)
        try:
            uuid = existing.UUIDString() if existing is not None else None
            self.connection().defineXML(driver_domain_xml(spec, uuid))
        except libvirt.libvirtError as exc:
            raise XendddError(f"{spec.name}: defining the domain failed: {_message(exc)}") from None

    def start(self, name: str) -> DomainInfo:
        dom = self._defined(name)
        try:
            running = self._running_or_cleared(name, dom)
            if running is not None:
                return running
            dom.create()
        except libvirt.libvirtError as exc:
            message = _message(exc)
            if "Unable to reset PCI device" in message:
                raise XendddError(
                    f"{name}: not started: libvirt cannot reset one of its PCI devices ({message}) and its "
                    'reset policy is strict; reset = "relaxed" lets libxl pass it through without a reset'
                ) from None
            raise XendddError(f"{name}: start failed: {message}") from None
        self._pass_through_with_libxl(name, dom)
        return _info(dom)

    @staticmethod
    def _running_or_cleared(name: str, dom: Any) -> DomainInfo | None:
        """The running instance, or None once none is active: the instance that just died, which libvirt
        has not cleaned up yet (listed shut off, reason crashed, with its domid), is destroyed — starting
        it would hand back the dead domid (and guests' frontends would be attached to its remains)."""
        if not dom.isActive():
            return None
        info = _info(dom)
        if running_domid(info) is not None:
            return info
        log.info("%s: domid %s is %s, not yet cleaned up: destroying it", name, info.domid, info.state.value)
        dom.destroy()
        return None

    def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
        """(A libvirt driver domain has no standby, and so no disks to move.)"""
        self._libxl_pci[spec.name] = libxl_pci(spec)
        attached = self._xl.pci_list(spec.name) if self._libxl_pci[spec.name] else []
        for pci in self._libxl_pci[spec.name]:
            if pci.bdf not in attached:
                log.warning("%s: running without %s; passing it through now", spec.name, pci.bdf)
                self._xl.pci_attach(spec.name, pci)

    def _pass_through_with_libxl(self, name: str, dom: Any) -> None:
        """The relaxed-policy devices, right after the start; a failure destroys the domain again rather
        than leave a driver domain running without its hardware."""
        for pci in self._libxl_pci.get(name, ()):
            try:
                self._xl.pci_attach(name, pci)
            except XendddError as exc:
                try:
                    dom.destroy()
                except libvirt.libvirtError as destroy_exc:
                    log.error(
                        "%s: destroying it after the failed passthrough: %s", name, _message(destroy_exc)
                    )
                raise XendddError(
                    f"{name}: destroyed again, passing {pci.bdf} through failed: {exc}"
                ) from None
            log.info("%s: %s passed through by libxl (reset policy relaxed)", name, pci.bdf)

    def save(self, name: str, path: Path) -> None:
        """libvirt's file: its own header with the live definition, then libxl's stream; the domain is
        destroyed once the file is complete."""
        dom = self._defined(name)
        try:
            dom.save(str(path))
        except libvirt.libvirtError as exc:
            raise XendddError(f"{name}: saving it failed: {_message(exc)}") from None

    def restore(self, name: str, path: Path) -> DomainInfo:
        """The definition comes from the file (libvirt's libxl driver takes no other): the domain comes
        back under the name and UUID it was saved with, the persistent definition's. An instance that
        runs already is returned, as `start` returns it."""
        dom = self._defined(name)
        try:
            running = self._running_or_cleared(name, dom)
            if running is not None:
                return running
            self.connection().restore(str(path))
        except libvirt.libvirtError as exc:
            raise XendddError(f"{name}: restoring {path} failed: {_message(exc)}") from None
        dom = self._lookup(name)
        if dom is None or not dom.isActive():
            raise XendddError(f"{name}: libvirt restored {path}, but no running domain has that name")
        return _info(dom)

    def destroy(self, name: str, domid: int | None = None) -> None:
        dom = self._lookup(name)
        if dom is None or (domid is not None and dom.ID() != domid):
            return
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _GONE:
                raise XendddError(f"{name}: destroy failed: {_message(exc)}") from None

    def start_with_domid(self, name: str, domid: int) -> DomainInfo:
        """libvirt's libxl driver never sets libxl's create_info.domid: a driver domain that reconnects in
        place is created by xl (`toolstack = "xl"`)."""
        raise XendddError(f"{name}: libvirt cannot start a domain as a chosen domid ({domid})")

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        """libvirt's libxl driver has no domainRename, and nothing makes libvirt re-read a name libxl
        changed underneath it: a domain that must be renamed is created by xl (`toolstack = "xl"`)."""
        raise XendddError(f"{old}: libvirt cannot rename a running domain (to {new})")

    # -- devices ---------------------------------------------------------------------------------------

    def attach(
        self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams, backend: str
    ) -> None:
        dom = self._lookup(guest)
        if dom is not None and isinstance(params, VifParams) and params.model is None:
            params = self._with_model(dom, params)
        if dom is None or not isinstance(params, VbdParams) or not libvirt_can_express(params):
            self._devices.attach(guest, kind, devid, params, backend)
            return
        try:
            dom.attachDeviceFlags(frontend_disk_xml(params, backend), _flags(dom))
        except libvirt.libvirtError as exc:
            raise XendddError(
                f"{guest}: attaching {kind.value} {devid} via {backend}: {_message(exc)}"
            ) from None

    def _with_model(self, dom: Any, params: VifParams) -> VifParams:
        """A vif's emulated model is in libvirt's definition only (libxl records no `model` node), and a
        libxl detach leaves the interface there: it is read at the moment of the attach, by MAC."""
        try:
            devices = parse_guest_devices(dom.XMLDesc(0))
        except libvirt.libvirtError:
            return params  # the attach that follows says what is wrong with the domain
        for device in devices:
            if isinstance(device.params, VifParams) and device.params.mac == params.mac.lower():
                return replace(params, model=device.params.model)
        return params

    def detach(self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams) -> None:
        """A vif, or a disk libvirt cannot express, is detached by libxl whoever owns the guest: libvirt
        is not asked about it (a lookup is a libvirtd round trip, on a promotion's path while libvirtd
        answers the pass's listing)."""
        by_libvirt = isinstance(params, VbdParams) and libvirt_can_express(params)
        dom = self._lookup(guest) if by_libvirt else None
        if dom is None:
            self._devices.detach(guest, kind, devid)
            return
        current = [d for d in parse_guest_devices(dom.XMLDesc(0)) if _same_device(d, kind, params)]
        if not current or not isinstance(current[0].params, VbdParams):
            return  # already gone
        try:
            dom.detachDeviceFlags(
                frontend_disk_xml(current[0].params, current[0].backend_name or ""), _flags(dom)
            )
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_DEVICE_MISSING, libvirt.VIR_ERR_NO_DOMAIN):
                return
            raise XendddError(f"{guest}: detaching stale {kind.value} {devid}: {_message(exc)}") from None

    def watch_lifecycle(
        self, handler: Callable[[LifecycleEvent], None], on_reconnect: Callable[[], None]
    ) -> None:
        self._handler, self._on_reconnect = handler, on_reconnect
        try:
            self.connection().domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            )
        except libvirt.libvirtError as exc:
            raise XendddError(f"registering for libvirt events: {_message(exc)}") from None

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        kind = translate_lifecycle(event, detail)
        if kind is None or self._handler is None:
            return
        domid = dom.ID()
        self._handler(LifecycleEvent(dom.name(), dom.UUIDString(), kind, domid if domid >= 0 else None))

    def _defined(self, name: str) -> Any:
        dom = self._lookup(name)
        if dom is None:
            raise XendddError(f"{name}: not defined in libvirt")
        return dom

    def _lookup(self, name: str) -> Any:
        try:
            return self.connection().lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise XendddError(f"{name}: looking it up in libvirt: {_message(exc)}") from None


def translate_lifecycle(event: int, detail: int) -> LifecycleKind | None:
    """libvirt's (event, detail) → what xenddd cares about; a stop is told apart by its detail."""
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        return {
            libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: LifecycleKind.CRASHED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: LifecycleKind.SHUTDOWN,
        }.get(detail, LifecycleKind.DESTROYED)
    return {
        libvirt.VIR_DOMAIN_EVENT_DEFINED: LifecycleKind.DEFINED,
        libvirt.VIR_DOMAIN_EVENT_UNDEFINED: LifecycleKind.UNDEFINED,
        libvirt.VIR_DOMAIN_EVENT_STARTED: LifecycleKind.STARTED,
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED: LifecycleKind.SUSPENDED,
        libvirt.VIR_DOMAIN_EVENT_RESUMED: LifecycleKind.RESUMED,
        libvirt.VIR_DOMAIN_EVENT_CRASHED: LifecycleKind.CRASHED,
    }.get(event)


def libvirt_can_express(params: VbdParams) -> bool:
    """libvirt's disk XML has no hotplug script (libxlMakeDisk); only libxl's default one, `block` for a
    `phy` disk, goes without saying."""
    return params.script is None or params.script.rsplit("/", 1)[-1] == "block"


def parse_guest_devices(xml_text: str) -> list[GuestDevice]:
    """A guest's vifs and vbds from its live XML, with the driver domain serving each (if any)."""
    root = ET.fromstring(xml_text)
    devices: list[GuestDevice] = []
    for interface in root.iterfind("./devices/interface"):
        mac = interface.find("mac")
        if mac is None or not mac.get("address"):
            continue
        source = interface.find("source")
        backend = interface.find("backenddomain")
        params = VifParams(
            mac=mac.get("address", "").lower(),
            bridge=source.get("bridge") if source is not None else None,
            script=_attribute(interface, "script", "path"),
            ip=" ".join(ip.get("address", "") for ip in interface.iterfind("ip")) or None,
            vifname=_attribute(interface, "target", "dev"),
            model=_attribute(interface, "model", "type"),
        )
        devices.append(
            GuestDevice(DeviceKind.VIF, None, params, backend.get("name") if backend is not None else None)
        )
    for disk in root.iterfind("./devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is None or source is None:
            continue
        backend = disk.find("backenddomain")
        params_vbd = VbdParams(
            vdev=target.get("dev", ""),
            target=source.get("dev") or source.get("file") or "",
            mode="r" if disk.find("readonly") is not None else "w",
            device_type=disk.get("device", "disk"),
        )
        devices.append(
            GuestDevice(
                DeviceKind.VBD, None, params_vbd, backend.get("name") if backend is not None else None
            )
        )
    return devices


def _attribute(element: ET.Element, child: str, name: str) -> str | None:
    found = element.find(child)
    return found.get(name) if found is not None else None


def _same_device(device: GuestDevice, kind: DeviceKind, params: VifParams | VbdParams) -> bool:
    if device.kind is not kind:
        return False
    if isinstance(params, VifParams) and isinstance(device.params, VifParams):
        return device.params.mac == params.mac.lower()
    if isinstance(params, VbdParams) and isinstance(device.params, VbdParams):
        return device.params.vdev == params.vdev
    return False


def _flags(dom: Any) -> int:
    flags: int = libvirt.VIR_DOMAIN_AFFECT_LIVE
    if dom.isPersistent():
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    return flags


def _ignore_libvirt_error(_ctx: object, _error: object) -> None:
    """Errors reach xenddd as exceptions; this handler only keeps libvirt from printing them too."""


def _info(dom: Any) -> DomainInfo:
    state, max_kib, memory_kib, vcpus, cpu_time = dom.info()
    domid = dom.ID()
    stopped = None
    if state == libvirt.VIR_DOMAIN_CRASHED:
        stopped = LifecycleKind.CRASHED
    elif state == libvirt.VIR_DOMAIN_SHUTOFF:
        stopped = _SHUTOFF_REASONS.get(dom.state()[1])
    return DomainInfo(
        name=dom.name(),
        uuid=dom.UUIDString(),
        domid=domid if domid >= 0 else None,
        state=_STATES.get(state, DomainState.OTHER),
        stopped=stopped,
        memory_kib=memory_kib or max_kib,
        vcpus=vcpus,
        cpu_time_ns=cpu_time,
    )


def _alive(conn: Any) -> bool:
    """A connection closed under us answers isAlive() with an error rather than False."""
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _message(exc: Any) -> str:
    return str(exc.get_error_message() or exc).strip()
