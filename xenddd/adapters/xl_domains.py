"""Driver domains that `xl` creates and owns (`toolstack = "xl"`), for the two things libvirt cannot do:
rename a running domain, which promoting a warm standby (`domnet-standby` becoming `domnet` when the
active instance dies) is, and create one as a chosen domid, which an in-place reconnect needs (the dead
instance's: see adapters/libxl_create).

libvirt's libxl driver has no domainRename for a running domain, and libvirt keeps its own table of names
that nothing re-reads from libxl, so a rename behind its back would leave it wrong. libxl can:
libxl_domain_rename refuses a name another domain has, then writes the new name (/local/domain/<domid>/name
and /vm/<uuid>/name) in one xenstore transaction, so every reader sees one name or the other — which
this adapter does in the daemon's own xenstore connection (adapters/domain_rename says why not `xl rename`).

These domains are invisible to libvirt: `virsh list` stays true by not listing them, while `xl list` shows
both instances. Each one's xl.cfg is written by `define` into a directory of xenddd's own (adapters/xl_config
for what it holds). They are created with `xl create -e`: no xl monitoring daemon waits for their death,
since xenddd is what acts on it (it destroys the remains before a restart or a promotion), and a daemon
forked from xenddd would live in xenddd's cgroup, where systemd kills it at every stop of the service
(KillMode=mixed) — a monitor that vanishes at a daemon restart is worse than none. The daemon's
listing of every domain comes from libxl in a helper process (adapters/libxl_devices: what `xl list -v`
reads, without its process, half a second of a busy dom0's CPU under emulation, on the path of every
recovery); one domain's state from `xl list -v NAME` (tools/xl/xl_info.c list_domains, the same columns
in Xen 4.17 and 4.20): Name, ID, Mem (MiB), VCPUs, six state flags, Time(s), UUID, Reason-Code, Security
Label.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xenddd.adapters.domain_rename import domain_names, rename_domain
from xenddd.adapters.hypervisor_api import ALIVE, DomainInfo, DomainState, LifecycleKind
from xenddd.adapters.libxl_devices import LibxlDevices
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xl import XL_TIMEOUT, Xl
from xenddd.adapters.xl_config import disk_spec, xl_config
from xenddd.config.spec import DiskSpec, DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.model import XenbusState, xvd_devid
from xenddd.state import write_text

log = logging.getLogger(__name__)

# What xl says of a name that is no domain: find_domain's message (tools/xl/xl_utils.c), and main_list's
# when the domain went between finding it and reading its info.
NOT_A_DOMAIN = ("{name} is an invalid domain identifier", "Domain '{name}' does not exist")
_FIELDS_AFTER_NAME = 8  # ID, Mem, VCPUs, State, Time(s), UUID, Reason-Code, Security Label
# the program that creates a domain as a chosen domid (adapters/libxl_create), with the daemon's own Python
LIBXL_CREATE = (sys.executable, "-m", "xenddd.adapters.libxl_create")
_CRASH = "c"  # the shutdown reason letter of a crash, in the fifth state flag ("-rscwS" by reason code)
# a disk hot-plugged into a running driver domain: dom0's backend is set up when libxl's add returns, the
# domain's blkfront connects a moment later
DISK_CONNECT_TIMEOUT = 60.0
DISK_POLL = 0.1


class XlDomains:
    def __init__(
        self,
        config_dir: Path,
        xenstore: Xenstore,
        command: str = "xl",
        libxl_create: tuple[str, ...] = LIBXL_CREATE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        devices: LibxlDevices | None = None,
        lister: LibxlDevices | None = None,
    ) -> None:
        """`devices`: what attaches a promoted standby's disks (libxl's helpers, adapters/libxl_devices);
        `lister`: the helpers that list the domains (the daemon keeps one of its own, so that a pass never
        waits for a helper busy attaching a guest's device; `devices` otherwise)."""
        self.config_dir = config_dir
        self.xenstore = xenstore
        self.clock = clock
        self.sleep = sleep
        self.command = command
        self.libxl_create = libxl_create
        self._xl = Xl(command)
        self._devices = devices or LibxlDevices()
        self._lister = lister or self._devices
        self._specs: dict[str, DriverDomainSpec] = {}

    def domains(self) -> list[DomainInfo]:
        return [_listed(raw) for raw in self._lister.domains()]

    def domain(self, name: str) -> DomainInfo | None:
        result = self._call("list", "-v", name)
        if result.returncode != 0 and _not_a_domain(result.stderr, name):
            return None
        found = parse_list(_stdout(result, ("list", "-v", name)))
        if len(found) != 1:
            raise XendddError(f"xl list -v {name}: {len(found)} domains listed, expected one")
        return found[0]

    def config_path(self, name: str) -> Path:
        return self.config_dir / f"{name}.cfg"

    def define(self, spec: DriverDomainSpec) -> None:
        """The config is replaced atomically, so that an `xl create` racing the write reads the old file
        or the new one, never half of one; it is private to root, like xenddd's other records."""
        text = xl_config(spec)
        path = self.config_path(spec.name)
        try:
            self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_text(path, text)
        except OSError as exc:
            raise XendddError(f"{spec.name}: writing {path}: {exc.strerror or exc}") from None
        self._specs[spec.name] = spec

    def start(self, name: str) -> DomainInfo:
        create = ("create", "-e", str(self.config_path(name)))
        return self._bring_up(name, create, "start failed", "xl create")

    def _bring_up(self, name: str, args: tuple[str, ...], failed: str, call: str) -> DomainInfo:
        """The running instance of `name` after `xl args` (a create or a restore), or the one that runs
        already."""
        alive = self._alive_or_cleared(name)
        if alive is not None:
            return alive
        try:
            self._run(*args)
        except XendddError as exc:
            raise XendddError(f"{name}: {failed}: {exc}") from None
        started = self.domain(name)
        if started is None:
            raise XendddError(f"{name}: {call} succeeded, but xl lists no domain of that name")
        return started

    def start_with_domid(self, name: str, domid: int) -> DomainInfo:
        """xl's own parse of the config (`xl -N create` prints it as libxl's JSON), created as `domid` by
        libxl through ctypes in a process of its own (adapters/libxl_create says why), then unpaused as xl
        create does. An instance running as that domid already (a daemon killed after this call) is
        the one asked for; remains of the dead one are destroyed first, as `start` does."""
        alive = self._alive_or_cleared(name)
        if alive is not None:
            if alive.domid == domid:
                return alive
            raise XendddError(f"{name}: runs already, as domid {alive.domid} (not {domid})")
        config = self._run("-N", "create", str(self.config_path(name)))
        created = _create_with_domid(config[config.find("{") :], domid, self.libxl_create)
        if created.returncode != 0:
            raise XendddError(f"{name}: starting it as domid {domid} failed: {_detail(created.stderr)}")
        try:
            self._run("unpause", str(domid))
        except XendddError as exc:
            self.destroy(name)
            raise XendddError(f"{name}: created as domid {domid}, but not unpaused: {exc}") from None
        started = self.domain(name)
        if started is None or started.domid != domid:
            raise XendddError(f"{name}: created as domid {domid}, but xl lists {started}")
        return started

    def _alive_or_cleared(self, name: str) -> DomainInfo | None:
        """The running instance of a defined domain, or None once no instance holds the name: the remains
        of one that died (nothing but xenddd destroys them) are destroyed, since a create would refuse the
        name (and the domid) while they hold it."""
        if name not in self._specs:
            raise XendddError(f"{name}: not defined (no xl config written for it)")
        info = self.domain(name)
        if info is not None and info.state in ALIVE:
            return info
        if info is not None:
            log.info(
                "%s: domid %s is %s, not yet cleaned up: destroying it", name, info.domid, info.state.value
            )
            self.destroy(name)
        return None

    def save(self, name: str, path: Path) -> None:
        """`xl save` writes xl's own header (the config it was created from) before libxl's stream, and
        destroys the domain once the file is complete."""
        try:
            self._run("save", name, str(path))
        except XendddError as exc:
            raise XendddError(f"{name}: saving it failed: {exc}") from None

    def restore(self, name: str, path: Path) -> DomainInfo:
        """Under the config saved in the file, as xenddd created it (`-e`: no xl process stays to watch
        it, as with `xl create -e`). An instance that runs already is returned, as `start` returns it."""
        return self._bring_up(name, ("restore", "-e", str(path)), f"restoring {path} failed", "xl restore")

    def destroy(self, name: str, domid: int | None = None) -> None:
        """Idempotent, as the recovery needs: a domain that is already gone is not an error. By `domid`,
        one process and never another instance of the name (Xen does not give a domid out again soon)."""
        target = name if domid is None else str(domid)
        result = self._call("destroy", target)
        if result.returncode != 0 and not _not_a_domain(result.stderr, target):
            raise _failure(("destroy", target), result.stderr)

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        return rename_domain(self.xenstore, old, new, domid)

    def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
        """After a rename gave a standby the dead instance's name, it gets that instance's devices: its
        writable disks, which a standby boots without (unless `disks` is False), and its PCI devices; a
        device it already has (a promotion interrupted and retried, a domain created with them) is left
        alone. Returns once each such disk is Connected in it: the guests' disks it serves are backed by
        them."""
        if disks:
            self._ensure_disks(spec)
        attached = self._xl.pci_list(spec.name) if spec.pci else []
        for pci in spec.pci:
            if pci.bdf not in attached:
                log.info("%s: passing %s through", spec.name, pci.bdf)
                self._xl.pci_attach(spec.name, pci)

    def _ensure_disks(self, spec: DriverDomainSpec) -> None:
        """What is attached and whether it is Connected is read in xenstore, where `xl block-list` reads
        it (dom0's own record of the domain's devices, /libxl/<domid>/device/vbd), rather than by an
        `xl` process per look: under emulation each costs dom0 about half a second, on a promotion's path
        and beside the `block` script that dom0 runs for the disk."""
        moved: dict[int, DiskSpec] = {}
        for disk in spec.disks:
            devid = xvd_devid(disk.vdev)
            if not disk.readonly and devid is not None:  # the config refuses a moved disk of another name
                moved[devid] = disk
        if not moved:
            return
        domid = self._running_domid(spec.name)
        present = {int(d) for d in self.xenstore.directory(f"/libxl/{domid}/device/vbd") or [] if d.isdigit()}
        attached = [devid for devid in moved if devid not in present]
        for devid in attached:
            disk = moved[devid]
            log.info("%s: attaching its disk %s (%s)", spec.name, disk.vdev, disk.path)
            self._devices.attach_disk(spec.name, disk_spec(disk, hvm=False))
        # only what this call attached is waited for: an adopted domain's own disks (on the daemon's loop)
        # connect as it boots, and holding the loop for them would hold every other driver domain
        deadline = self.clock() + DISK_CONNECT_TIMEOUT
        while attached:
            waiting = [moved[d].vdev for d in attached if not self._disk_connected(domid, d)]
            if not waiting:
                return
            if self.clock() >= deadline:
                limit = f"{DISK_CONNECT_TIMEOUT:.0f} s"
                raise XendddError(f"{spec.name}: its disk {', '.join(waiting)} not Connected within {limit}")
            self.sleep(DISK_POLL)

    def _running_domid(self, name: str) -> int:
        named = [d for d, found in domain_names(self.xenstore).items() if found == name.encode()]
        if len(named) != 1:
            raise XendddError(f"{name}: {'no' if not named else 'more than one'} running domain of that name")
        return named[0]

    def _disk_connected(self, domid: int, devid: int) -> bool:
        """Both ends Connected: the backend named by dom0's record of the device (the domain cannot write
        it), and the domain's frontend."""
        record = self.xenstore.read(f"/libxl/{domid}/device/vbd/{devid}/backend")
        if record is None:
            return False
        backend = record.decode("utf-8", "replace")
        states = self.xenstore.read_many(
            [f"{backend}/state", f"/local/domain/{domid}/device/vbd/{devid}/state"]
        )
        return states == [b"%d" % XenbusState.CONNECTED] * 2

    def _run(self, *args: str) -> str:
        return _stdout(self._call(*args), args)

    def _call(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.command, *args], capture_output=True, text=True, timeout=XL_TIMEOUT, check=False
            )
        except FileNotFoundError:
            raise XendddError(f"'{self.command}' is not installed (needed for {args[0]})") from None
        except subprocess.TimeoutExpired:
            raise XendddError(f"xl {' '.join(args)} did not finish within {XL_TIMEOUT:.0f} s") from None


def _create_with_domid(config: str, domid: int, program: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [*program, str(domid)],
            input=config,
            capture_output=True,
            text=True,
            timeout=XL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise XendddError(f"creating domid {domid} did not finish within {XL_TIMEOUT:.0f} s") from None


def parse_list(output: str) -> list[DomainInfo]:
    """The domains of `xl list -v` output, read from the right: the name is whatever precedes the eight
    other columns."""
    lines = output.splitlines()
    if not lines or not lines[0].startswith("Name"):
        raise XendddError(f"xl list -v: expected its header, got {output[:80]!r}")
    return [_domain_info(line) for line in lines[1:] if line.strip()]


def _domain_info(line: str) -> DomainInfo:
    fields = line.rsplit(None, _FIELDS_AFTER_NAME)
    try:
        name, domid, mem_mib, vcpus, flags, seconds, uuid, _reason, _label = fields
        state, stopped = _state(flags)
        return DomainInfo(
            name=name,
            uuid=uuid,
            domid=int(domid),
            state=state,
            memory_kib=int(mem_mib) * 1024,
            vcpus=int(vcpus),
            cpu_time_ns=round(float(seconds) * 1e9),
            stopped=stopped,
        )
    except ValueError:
        raise XendddError(f"xl list -v: unexpected line {line!r}") from None


def _listed(raw: dict[str, Any]) -> DomainInfo:
    """A domain as libxl's helper lists it: libxl_dominfo's fields (its JSON's names) and its name."""
    try:
        crashed = raw["shutdown"] is True and raw["shutdown_reason"] == "crash"
        state, stopped = _decided(
            raw["shutdown"] is True, crashed, raw["dying"] is True, raw["paused"] is True
        )
        return DomainInfo(
            name=str(raw["name"]),
            uuid=str(raw["uuid"]),
            domid=int(raw["domid"]),
            state=state,
            memory_kib=int(raw["current_memkb"]),
            vcpus=int(raw["vcpu_online"]),
            cpu_time_ns=int(raw["cpu_time"]),
            stopped=stopped,
        )
    except (KeyError, TypeError, ValueError):
        raise XendddError(f"libxl's helper listed {raw!r:.200}") from None


def _state(flags: str) -> tuple[DomainState, LifecycleKind | None]:
    """The six flags are positional (r b p s, the shutdown reason's letter, d): a domain shut down for a
    reboot shows `r` in the fifth place, which is not `running`."""
    if len(flags) != 6:
        raise ValueError(flags)
    return _decided(flags[3] == "s", flags[3] == "s" and flags[4] == _CRASH, flags[5] == "d", flags[2] == "p")


def _decided(
    shutdown: bool, crashed: bool, dying: bool, paused: bool
) -> tuple[DomainState, LifecycleKind | None]:
    """A shut-down domain by its reason, whether dying or not; then a dying one; then paused or running."""
    if crashed:
        return DomainState.CRASHED, LifecycleKind.CRASHED
    if shutdown:
        return DomainState.SHUTDOWN, LifecycleKind.SHUTDOWN
    if dying:
        return DomainState.SHUTDOWN, LifecycleKind.DESTROYED
    return (DomainState.PAUSED if paused else DomainState.RUNNING), None


def _stdout(result: subprocess.CompletedProcess[str], args: tuple[str, ...]) -> str:
    if result.returncode != 0:
        raise _failure(args, result.stderr)
    return result.stdout


def _failure(args: tuple[str, ...], stderr: str) -> XendddError:
    return XendddError(f"xl {' '.join(args)} failed: {_detail(stderr)}")


def _detail(stderr: str) -> str:
    """xl's last line, preceded by libxl's first error when there is one: `xl rename` ends with "Can't
    rename domain", the reason ("Domain with name ... already exists") is libxl's line before it."""
    lines = stderr.strip().splitlines() or ["no message"]
    first_error = [line for line in lines if "error" in line.lower()][:1]
    return "; ".join(dict.fromkeys([*first_error, lines[-1]]))


def _not_a_domain(stderr: str, name: str) -> bool:
    return any(marker.format(name=name) in stderr for marker in NOT_A_DOMAIN)
