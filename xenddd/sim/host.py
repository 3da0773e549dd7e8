"""The simulated host's toolstack: domains and their split devices, written into xenstore the way libxl does.

Domain life cycle (create, pause, shutdown, destroy, crash) writes and removes `/local/domain/<id>`,
`/vm/<uuid>` and `/libxl/<id>` and fires @introduceDomain / @releaseDomain. Devices with a backend in a
driver domain get the backend, frontend and dom0-only `/libxl/<guest>/device/...` nodes with libxl's
permissions. Domids grow and are never reused, as Xen's are until the 15-bit space wraps.

Lifecycle listeners hear what libvirt's libxl driver would report: started, shutdown, destroyed, crashed,
suspended, resumed.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from xenddd.sim.domain_client import DomainClient
from xenddd.sim.kernels import VIF_MTU, BackendKernel, FrontendKernel, Kernel
from xenddd.sim.store import XsError, ancestors
from xenddd.sim.xenstored import Xenstored

log = logging.getLogger(__name__)

SAVED_MARK = "simulated save of "  # a saved file's contents: this and the domain's name

# libxl__wait_for_backend: how often and how many times libxl reads a backend's state while it waits
PCI_REMOVE_POLL_SECONDS = 0.1
PCI_REMOVE_POLLS = 100

Listener = Callable[[str, "SimDomain"], None]


@dataclass
class SimDevice:
    """A guest device as the toolstack's live definition lists it (kept, like libvirt, after its backend
    died, until it is detached)."""

    guest: str
    kind: str  # vif | vbd
    devid: int
    backend: str
    params: dict[str, str]
    backend_domid: int


@dataclass
class SimDomain:
    name: str
    uuid: str
    driver: bool
    memory_kib: int = 262144
    vcpus: int = 1
    domid: int | None = None
    state: str = "shutoff"  # running | paused | shutoff | crashed
    stopped: str | None = None  # how it last stopped: destroyed | crashed | shutdown (as stop()'s `how`)
    kernel: Kernel | None = None
    devices: list[SimDevice] = field(default_factory=list)
    # devices of its persistent definition, attached at each start as libxl's create does: a driver
    # domain's uplink from another driver domain — (kind, backend domain, xenstore parameters)
    defined: tuple[tuple[str, str, dict[str, str]], ...] = ()
    front_kernel: FrontendKernel | None = None  # a driver domain that is also a guest of another one
    pci: tuple[str, ...] = ()  # PCI devices passed through to it (pciback's backend in dom0, pcifront)


class SimHost:
    def __init__(self, engine: Xenstored, *, boot_delay: float = 0.0, cleanup_delay: float = 0.0) -> None:
        self.engine = engine
        self.dom0 = DomainClient(engine, 0)
        self.boot_delay = boot_delay
        # a restore's own time, until the restored domain serves: about half its boot on the test bed
        # (5.1 s against 9.6 s), in the restore's call there, after it here
        self.restore_delay = boot_delay / 2
        self.domains: dict[str, SimDomain] = {}
        self._domids = itertools.count(1)
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        # driver domains whose next instance never probes a backend (they stay below InitWait): its
        # kernel no longer answers xenstore, as a promoted instance's once stopped on real Xen
        self.unresponsive_next: set[str] = set()
        # driver domains whose next restored instance's init cannot start `xl devd` again: netback serves
        # the backends (InitWait), no hotplug script runs, and the init writes data/ready-error, no key
        self.devd_fails_next_restore: set[str] = set()
        # libxl's LIBXL_INIT_TIMEOUT: a device add waits this long for its backend to reach InitWait and
        # then fails, leaving the device in xenstore and in dom0's record (a driver domain still booting)
        self.init_timeout = 10.0
        # driver domain → how many handshakes its `xl devd` gets through at once (see BackendKernel)
        self.hotplug_slots: dict[str, int] = {}
        # (backend domain, guest) whose next device's hotplug script never finishes: it stays in InitWait
        # with no hotplug-status, as one `xl devd` killed after libxl's 40 s leaves it
        self.stall_hotplug_once: set[tuple[str, str]] = set()
        # How long a crashed domain stays dying — listed as crashed, its nodes in place — before the
        # toolstack destroys it (libvirt's cleanup of a crash); a detach of a device it served fails
        # meanwhile, as libxl's does ("failed to detach network device"). @releaseDomain fires at the
        # crash, libvirt's lifecycle event only once the cleanup is done.
        self.cleanup_delay = cleanup_delay
        # Domains nobody cleans up after a crash: xl's, created without a monitor (`xl create -e`), whose
        # remains stay — listed crashed, their nodes in place, their name taken — until destroyed.
        self.kept_on_crash: set[str] = set()
        self.dying: set[int] = set()
        # how each destroy of a dead domain's PCI devices ended: (domid, "released" | "timed out")
        self.pci_removals: list[tuple[int, str]] = []
        self._timers: list[threading.Timer] = []

    # -- life cycle ------------------------------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @contextmanager
    def whole(self) -> Iterator[None]:
        """No start, stop or device change runs while this is held: libvirt never lists a domain half-made
        (its domain object stays locked for the whole of libxl's create, devices included), so a reader
        must not see a new domid whose defined devices are not in xenstore yet."""
        with self._lock:
            yield

    def define(
        self,
        name: str,
        *,
        driver: bool,
        memory_kib: int = 262144,
        vcpus: int = 1,
        defined: tuple[tuple[str, str, dict[str, str]], ...] = (),
        pci: tuple[str, ...] = (),
    ) -> SimDomain:
        with self._lock:
            domain = self.domains.get(name)
            if domain is None:
                domain = SimDomain(name, str(uuidlib.uuid4()), driver, memory_kib, vcpus)
                self.domains[name] = domain
            domain.memory_kib, domain.vcpus, domain.defined, domain.pci = memory_kib, vcpus, defined, pci
            return domain

    def start(self, name: str, domid: int | None = None, *, resumed: bool = False) -> SimDomain:
        """libxl's create: the domain, then the devices of its definition; a device whose backend domain
        is not running fails the create, which destroys the half-made domain again (ENODEV). `domid`:
        libxl's create_info.domid, refused (EEXIST) while any domain, dying ones included, holds it.
        `resumed`: a restore's, whose kernel serves again after `restore_delay` rather than a boot."""
        with self._lock:
            domain = self.domains[name]
            if domain.domid is not None and domain.domid in self.dying:
                self.stop(name, "cleaned-up")  # what libvirt's start of a crashed, uncleaned domain does
            if domain.domid is not None:
                return domain
            if domid is None:
                domid = next(self._domids)
            elif domid in self.dying or any(d.domid == domid for d in self.domains.values()):
                raise XsError("EEXIST")
            domain.domid, domain.state = domid, "running"
            self._write_domain(domain)
            self._write_pci(domain)
            kernel: Kernel = (
                BackendKernel(self.engine, domid) if domain.driver else FrontendKernel(self.engine, domid)
            )
            if isinstance(kernel, BackendKernel):
                kernel.stall_initwait = name in self.unresponsive_next
                self.unresponsive_next.discard(name)
                kernel.devd_failed = resumed and name in self.devd_fails_next_restore
                if resumed:
                    self.devd_fails_next_restore.discard(name)
                kernel.hotplug_slots = self.hotplug_slots.get(name)
            else:
                kernel.start()  # type: ignore[attr-defined]
            domain.kernel = kernel
            if domain.driver and domain.defined:
                domain.front_kernel = FrontendKernel(self.engine, domid)
                domain.front_kernel.start()
            self.engine.introduce(domid)
            try:
                self._attach_defined(domain)
            except XsError:
                self.stop(name, "destroyed", quiet=True)
                raise
        if isinstance(kernel, BackendKernel):
            # the image's init: netback and blkback load at the end of the boot, then the readiness key;
            # restored, it writes the key again (then starts an `xl devd` that watches the new domid)
            self._after(self.restore_delay if resumed else self.boot_delay, kernel.load_backends)
        self._emit("started", domain)
        return domain

    def _attach_defined(self, domain: SimDomain) -> None:
        vifs = 0
        for kind, backend, params in domain.defined:
            if kind == "vif":
                self.attach(domain.name, kind, vifs, backend, params, live=False)
                vifs += 1
            else:
                self.attach(domain.name, kind, _xvd_devid(params["dev"]), backend, params, live=False)

    def create_guest(self, name: str, *, vif: tuple[str, ...] = (), vbd: tuple[str, ...] = ()) -> SimDomain:
        """A guest with one vif per entry of `vif` and one vbd per entry of `vbd` (driver domain names)."""
        self.define(name, driver=False)
        guest = self.start(name)
        for devid, backend in enumerate(vif):
            self.attach(name, "vif", devid, backend, {"mac": _mac(guest.uuid, devid), "bridge": "xenbr0"})
        for index, backend in enumerate(vbd):
            vdev = f"xvd{chr(ord('a') + index)}"
            self.attach(
                name, "vbd", 51712 + 16 * index, backend, {"dev": vdev, "params": f"/dev/vg/{name}-{vdev}"}
            )
        return guest

    def stop(self, name: str, how: str, *, quiet: bool = False) -> None:
        """`how`: "destroyed" (xl/virsh destroy), "crashed" (kernel panic), "shutdown" (from inside).
        `quiet`: no lifecycle event (a create that failed half-way never announced the domain)."""
        with self._lock:
            domain = self.domains[name]
            if domain.domid is None:
                return
            domid = domain.domid
            for kernel in (domain.kernel, domain.front_kernel):
                if kernel is not None:
                    kernel.stop()
            domain.kernel = domain.front_kernel = None
            domain.stopped = announced = "crashed" if how == "cleaned-up" else how
            # (a domain with PCI devices always: its cleanup takes them away first, and that takes a while)
            kept = name in self.kept_on_crash
            if (
                how == "crashed"
                and (kept or self.cleanup_delay > 0 or domain.pci)
                and domid not in self.dying
            ):
                # xenstored fires @releaseDomain as soon as the hypervisor reports the domain shut down;
                # libvirt marks it crashed, destroys it, and only then queues its lifecycle event
                self.dying.add(domid)
                domain.state = "crashed"
                if not kept:
                    self._after(self.cleanup_delay, lambda: self._clean_up(name, domid), thread=True)
                self.engine.shut_down(domid)
                return
            self.dying.discard(domid)
            self._destroy_devices_of(domain)  # a driver domain's own uplink too
            pci_backend = [f"/local/domain/0/backend/pci/{domid}"] if domain.pci else []
            for path in (f"/local/domain/{domid}", f"/vm/{domain.uuid}", f"/libxl/{domid}", *pci_backend):
                self.dom0.rm(path)
            domain.domid, domain.state = None, "crashed" if how in ("crashed", "cleaned-up") else "shutoff"
            self.engine.release(domid)
        if not quiet:
            self._emit(announced, domain)

    def _clean_up(self, name: str, domid: int) -> None:
        """The toolstack's cleanup of crashed instance `domid` — not of a newer instance of the same name
        started meanwhile (a start of a dying domain cleans it up itself)."""
        self._remove_pci_of_dead(name, domid)
        with self._lock:
            if self.domains[name].domid == domid and domid in self.dying:
                self.stop(name, "cleaned-up")

    def rename(self, old: str, new: str) -> SimDomain:
        """libxl_domain_rename: both name nodes in one transaction, refused (EEXIST) while a domain of the
        new name exists, dying ones included. A stopped definition of that name (what an xl domain that
        died leaves in this model) is replaced: xl forgets a destroyed domain."""
        with self._lock:
            domain = self.domains[old]
            other = self.domains.get(new)
            if domain.domid is None or (other is not None and other.domid is not None):
                raise XsError("EEXIST" if domain.domid is not None else "ENOENT")
            domid = domain.domid

            def write(tx: int) -> None:
                self.dom0.write(f"/local/domain/{domid}/name", new.encode(), tx)
                self.dom0.write(f"/vm/{domain.uuid}/name", new.encode(), tx)

            self.dom0.transaction(write)
            del self.domains[old]
            domain.name = new
            self.domains[new] = domain
            return domain

    def save(self, name: str, path: Path) -> None:
        """libxl's save: the domain's state into a file (a line naming it, here), then the domain is
        destroyed. Xen refuses a domain with PCI devices (EBUSY)."""
        with self._lock:
            domain = self.domains[name]
            if domain.domid is None:
                raise XsError("ENOENT")
            if domain.pci:
                raise XsError("EBUSY")
            path.write_text(f"{SAVED_MARK}{name}\n")
        self.stop(name, "destroyed")

    @staticmethod
    def saved_name(path: Path) -> str | None:
        """The name of the domain saved in `path`; None if it holds no save of this host's."""
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            return None
        return text.strip()[len(SAVED_MARK) :] if text.startswith(SAVED_MARK) else None

    def restore(self, path: Path) -> SimDomain:
        """A saved domain back under the name it was saved with, with a new domid, as `start` brings a
        domain (the instance that runs already; ENOENT for a file that holds no save)."""
        with self._lock:
            name = self.saved_name(path)
            if name is None or name not in self.domains:
                raise XsError("ENOENT")
            return self.start(name, resumed=True)

    def crash(self, name: str) -> None:
        self.stop(name, "crashed")

    def destroy(self, name: str) -> None:
        domain = self.domains.get(name)
        if domain is not None and domain.domid is not None:
            self._remove_pci_of_dead(name, domain.domid)
        self.stop(name, "destroyed")

    def _remove_pci_of_dead(self, name: str, domid: int) -> None:
        """libxl's destroy takes a domain's PCI devices away first; for a PV domain it asks pciback to
        reconfigure (state-N Closing, state Reconfiguring) and reads the backend's state until it is
        Connected again, which only a live pcifront brings about. A dead one never answers: libxl reads
        100 times, 0.1 s apart, before it goes on — unless the state node is gone, which ends the wait
        at the next read ("backend does not exist"). Not under the host's lock: libvirt's destroy
        holds that domain's object only."""
        with self._lock:
            domain = self.domains.get(name)
            if domain is None or domain.domid != domid or not domain.pci or domid not in self.dying:
                return  # a live pcifront answers at once
        back = f"/local/domain/0/backend/pci/{domid}/0"
        if self.dom0.read(f"{back}/state") is None:
            self.pci_removals.append((domid, "released"))
            return

        def reconfigure(tx: int) -> None:
            for index in range(len(domain.pci)):
                self.dom0.write(f"{back}/state-{index}", b"5", tx)
            self.dom0.write(f"{back}/state", b"7", tx)

        self.dom0.transaction(reconfigure)
        for _ in range(PCI_REMOVE_POLLS):
            if self.dom0.read(f"{back}/state") is None:
                self.pci_removals.append((domid, "released"))
                return
            time.sleep(PCI_REMOVE_POLL_SECONDS)
        self.pci_removals.append((domid, "timed out"))

    def pause(self, name: str) -> None:
        domain = self.domains[name]
        for kernel in (domain.kernel, domain.front_kernel):
            if kernel is not None:
                kernel.pause()
        domain.state = "paused"
        self._emit("suspended", domain)

    def unpause(self, name: str) -> None:
        domain = self.domains[name]
        domain.state = "running"
        for kernel in (domain.kernel, domain.front_kernel):
            if kernel is not None:
                kernel.unpause()
        self._emit("resumed", domain)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for domain in self.domains.values():
            for kernel in (domain.kernel, domain.front_kernel):
                if kernel is not None:
                    kernel.stop()
        self.dom0.close()

    # -- devices ---------------------------------------------------------------------------------------

    def attach(
        self,
        guest_name: str,
        kind: str,
        devid: int | None,
        backend_name: str,
        params: dict[str, str],
        *,
        live: bool = True,
    ) -> SimDevice:
        """libxl's device add for a backend in a driver domain; raises XsError("EEXIST") for a used devid.

        `devid=None` is libxl's -1, what every caller that does not name one gets (libvirt's attach among
        them): libxl then takes the next id after the last one listed (`next_devid`), never a freed one.
        """
        with self._lock:
            guest, backend = self.domains[guest_name], self.domains.get(backend_name)
            if guest.domid is None:
                raise XsError("ENOENT")
            if backend is None or backend.domid is None:
                raise XsError("ENODEV")
            g, b = guest.domid, backend.domid
            if devid is None:
                devid = self.next_devid(g, kind)
            front = f"/local/domain/{g}/device/{kind}/{devid}"
            back = f"/local/domain/{b}/backend/{kind}/{g}/{devid}"
            if self.dom0.read(f"{front}/state") is not None:
                raise XsError("EEXIST")
            back_nodes = {
                "frontend": front,
                "frontend-id": str(g),
                "online": "1",
                "state": "1",
                "handle": str(devid),
            }
            if kind == "vif":
                back_nodes |= {"script": "vif-bridge", "type": "vif", **params}
                front_nodes = {"handle": str(devid), "mac": params["mac"]}
            else:
                back_nodes |= {"mode": "w", "device-type": "disk", "type": "phy", "removable": "0", **params}
                front_nodes = {"virtual-device": str(devid), "device-type": "disk"}
            front_nodes |= {"backend": back, "backend-id": str(b), "state": "1"}
            toolstack = f"/libxl/{g}/device/{kind}/{devid}"
            if (backend_name, guest_name) in self.stall_hotplug_once and isinstance(
                backend.kernel, BackendKernel
            ):
                self.stall_hotplug_once.discard((backend_name, guest_name))
                backend.kernel.stalled_hotplug.add(back)

            def add(tx: int) -> None:
                # libxl__device_generic_add: one transaction, so a watcher never sees half a device
                self.dom0.mkdir(back, tx)
                self.dom0.set_perms(back, [f"n{b}", f"r{g}"], tx)
                self.dom0.mkdir(front, tx)
                self.dom0.set_perms(front, [f"n{g}", f"r{b}"], tx)
                for key, value in front_nodes.items():
                    self.dom0.write(f"{front}/{key}", value, tx)
                if kind == "vif":  # libxl's ro_front: the backend's to write (its hotplug script does)
                    self.dom0.write(f"{front}/mtu", params.get("mtu", VIF_MTU), tx)
                    self.dom0.set_perms(f"{front}/mtu", [f"n{b}", f"r{g}"], tx)
                for key, value in back_nodes.items():
                    self.dom0.write(f"{back}/{key}", value, tx)
                # dom0's own copy: the device's parameters, and where its two ends live
                for key, value in back_nodes.items():
                    if key not in ("state", "online", "frontend-id"):
                        self.dom0.write(f"{toolstack}/{key}", value, tx)
                self.dom0.write(f"{toolstack}/backend", back, tx)

            self.dom0.transaction(add)
            device = SimDevice(guest_name, kind, devid, backend_name, dict(params), b)
            guest.devices = [d for d in guest.devices if not (d.kind == kind and d.devid == devid)]
            if live:  # a defined device is in the persistent definition already
                guest.devices.append(device)
            kernel = backend.kernel
        if live and isinstance(kernel, BackendKernel) and not kernel.loaded.wait(self.init_timeout):
            # libxl__wait_device_connection gave up: the device stays, its backend may still come
            raise XsError("ETIMEDOUT")
        return device

    def next_devid(self, guest_domid: int, kind: str) -> int:
        """libxl__device_nextid (libxl_device.c): the last entry of `/libxl/<domid>/device/<kind>` plus
        one, or 0 when there is none. A device detached from the middle leaves a hole that is never
        reused: a guest with vifs 0 and 1 that loses vif 0 gets the next one as 2."""
        listed = self.dom0.directory(f"/libxl/{guest_domid}/device/{kind}")
        return int(listed[-1]) + 1 if listed else 0

    def detach(self, guest_name: str, kind: str, devid: int) -> None:
        """libxl's device remove; with the backend gone it cleans up the frontend only, whether or not its
        domain is still listed. Absent: no error. A backend still there in a domain that is dying makes
        it fail (EBUSY): libxl's remove then waits for a close that never comes."""
        with self._lock:
            guest = self.domains.get(guest_name)
            if guest is None:
                return
            g = guest.domid
            back = (
                ""
                if g is None
                else (self.dom0.read(f"/libxl/{g}/device/{kind}/{devid}/backend") or b"").decode()
            )
            if _domid_of_backend(back) in self.dying and self.dom0.read(f"{back}/state") is not None:
                raise XsError("EBUSY")
            guest.devices = [d for d in guest.devices if not (d.kind == kind and d.devid == devid)]
            if g is None:
                return
            front = f"/local/domain/{g}/device/{kind}/{devid}"
            backend_domid = _domid_of_backend(back)
            served_by = next((d for d in self.domains.values() if d.domid == backend_domid), None)
            if (
                backend_domid is not None
                and served_by is not None
                and isinstance(served_by.kernel, BackendKernel)
            ):
                served_by.kernel.stalled_hotplug.discard(back)  # a new add is a new hotplug run
            if back and self.dom0.read(f"{back}/state") is not None:
                self.dom0.write(f"{back}/online", b"0")
                self.dom0.write(f"{back}/state", b"5")
            toolstack = f"/libxl/{g}/device/{kind}/{devid}"

            def cleanup(tx: int) -> None:  # libxl__device_destroy: one transaction, retried on EAGAIN
                for path in (front, toolstack, back):
                    if path:
                        _path_cleanup(self.dom0, path, tx)

            self.dom0.transaction(cleanup)

    # -- helpers ---------------------------------------------------------------------------------------

    def _write_domain(self, domain: SimDomain) -> None:
        assert domain.domid is not None
        d = domain.domid
        home = f"/local/domain/{d}"
        self.dom0.write(f"{home}/name", domain.name.encode())
        self.dom0.write(f"{home}/vm", f"/vm/{domain.uuid}".encode())
        self.dom0.write(f"{home}/domid", str(d).encode())
        self.dom0.set_perms(home, ["n0", f"r{d}"])
        for sub in ("device", "data", "control", "error", "drivers", "attr", "memory"):
            self.dom0.mkdir(f"{home}/{sub}")
            self.dom0.set_perms(f"{home}/{sub}", [f"n{d}"])
        if domain.driver:
            self.dom0.mkdir(f"{home}/backend")
            self.dom0.set_perms(f"{home}/backend", [f"n{d}"])
        self.dom0.write(f"/vm/{domain.uuid}/uuid", domain.uuid.encode())
        self.dom0.write(f"/vm/{domain.uuid}/name", domain.name.encode())
        self.dom0.write(f"/libxl/{d}/type", b"pv")

    def _write_pci(self, domain: SimDomain) -> None:
        """pciback's backend in dom0 and pcifront's frontend, Connected from the start (nothing in the
        simulated driver domain uses the devices)."""
        if not domain.pci:
            return
        d = domain.domid
        assert d is not None
        back, front = f"/local/domain/0/backend/pci/{d}/0", f"/local/domain/{d}/device/pci/0"
        nodes = {"frontend": front, "frontend-id": str(d), "num_devs": str(len(domain.pci)), "state": "4"}
        for index, bdf in enumerate(domain.pci):
            nodes |= {f"dev-{index}": bdf, f"state-{index}": "3"}
        for key, value in nodes.items():
            self.dom0.write(f"{back}/{key}", value.encode())
        self.dom0.write(f"{front}/backend", back.encode())
        self.dom0.write(f"{front}/state", b"4")

    def _destroy_devices_of(self, guest: SimDomain) -> None:
        """Destroying a guest removes its backends too (libxl__devices_destroy), not only its own nodes."""
        assert guest.domid is not None
        for kind in self.dom0.directory(f"/libxl/{guest.domid}/device"):
            for devid in self.dom0.directory(f"/libxl/{guest.domid}/device/{kind}"):
                back = (self.dom0.read(f"/libxl/{guest.domid}/device/{kind}/{devid}/backend") or b"").decode()
                if back and self.dom0.read(back) is not None:  # gone with a driver domain that died
                    self.dom0.rm(back)
        guest.devices.clear()

    def _after(self, delay: float, action: Callable[[], None], *, thread: bool = False) -> None:
        """`thread`: on a timer's thread even with no delay (an action that must not run under the
        caller's lock)."""
        if delay <= 0 and not thread:
            action()
            return
        timer = threading.Timer(delay, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _emit(self, what: str, domain: SimDomain) -> None:
        for listener in list(self._listeners):
            try:
                listener(what, domain)
            except Exception:
                log.exception("sim lifecycle listener failed")


def _path_cleanup(client: DomainClient, path: str, tx: int) -> None:
    """libxl__xs_path_cleanup: the path, then each parent it leaves empty and valueless. A path absent
    with its parent (xenstored's ENOENT) ends it at once, parents untouched: so a detach whose backend
    directory was removed with the guest's whole directory in it never walks up into the driver
    domain's `backend/<kind>`, which every other detach from that driver domain shares."""
    try:
        client.rm(path, tx)
    except XsError as exc:
        if exc.errno_name == "ENOENT":
            return
        raise
    for parent in ancestors(path):
        if parent == "/" or client.read(parent, tx) != b"" or client.directory(parent, tx):
            return
        client.rm(parent, tx)


def _domid_of_backend(path: str) -> int | None:
    """`/local/domain/<domid>/backend/...` → domid."""
    parts = path.split("/")
    return int(parts[3]) if len(parts) > 4 and parts[3].isdigit() else None


def _xvd_devid(vdev: str) -> int:
    """libxl__device_disk_dev_number for the `xvdX` names the simulated host's definitions use."""
    return 51712 + 16 * (ord(vdev[3]) - ord("a"))


def _mac(guest_uuid: str, devid: int) -> str:
    """Stable per guest and device, in Xen's OUI 00:16:3e like libxl's generated MACs."""
    digits = guest_uuid.replace("-", "")
    return f"00:16:3e:{digits[0:2]}:{digits[2:4]}:{(int(digits[4:6], 16) + devid) % 256:02x}"
