"""Fault campaign: the real daemon on the simulated host, faults from a catalogue injected at random
(seeded), and after each one the invariants checked once the daemon has settled.

Host: four driver domains (two network, two block) and `--guests` guests, each with one or two vifs and
one or two vbds. After each fault the campaign waits until the host has settled (or a deadline) and
checks: every device of every guest that still exists is Connected to the running instance of its
driver domain, so recorded in dom0's toolstack record, with its original identity (every parameter it
was created with, as that record, its backend and its frontend hold it); no device is there twice and
no backend is left over; no driver domain is `failed` (the restart policy allows 1000 restarts: only a
bug could exhaust it); no recovery is left open, nothing parked; the daemon is alive. A fault may check
more on its way: `guest-never-connects` that the recovery closed for everybody else with the silent
guest's frontend parked (settling then waits for the parked retry to connect it).

A fault that raises, or a daemon that never becomes ready, is a violation too (`fault-raised: <type>`,
`daemon-not-ready`) and ends the campaign early, its table printed all the same: the host is then in no
known state to go on from.

Run: .venv/bin/python bench/chaos.py [--faults 100] [--seed 1] [--guests 16]
Prints faults by kind, invariant violations by kind, the median and maximum time to settle; exit 1 on any
violation. The daemon's log goes to chaos.log in a temporary directory, named on failure.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.config.loader import parse_config
from xenddd.config.spec import Config
from xenddd.recovery import frontend_steps
from xenddd.service.daemon import Daemon
from xenddd.service.simulated import simulated_runtime
from xenddd.sim.domain_client import DomainClient
from xenddd.sim.host import SimDomain
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.quotas import QuotaBook, Quotas
from xenddd.sim.socket_host import SimulatedHost
from xenddd.sim.store import XsError

CONFIG = """
[xenddd]
state_dir = "{tmp}/state"
control_socket = "{tmp}/control.sock"
max_parallel_reattach = 8

[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/k"
[driver_domain.restart]
max_restarts = 1000
backoff_base = 0
backoff_cap = 0
[driver_domain.readiness]
reattach_timeout = 3
reattach_attempts = 2

[[driver_domain]]
name = "domnet2"
kind = "network"
kernel = "/k"
[driver_domain.restart]
max_restarts = 1000
backoff_base = 0
backoff_cap = 0
[driver_domain.readiness]
condition = "backend-initwait"
timeout = 10
reattach_timeout = 3
reattach_attempts = 2

[[driver_domain]]
name = "domstore"
kind = "block"
kernel = "/k"
[driver_domain.restart]
max_restarts = 1000
backoff_base = 0
backoff_cap = 0
[driver_domain.readiness]
reattach_timeout = 3
reattach_attempts = 2

[[driver_domain]]
name = "domstore2"
kind = "block"
kernel = "/k"
[driver_domain.restart]
max_restarts = 1000
backoff_base = 0
backoff_cap = 0
[driver_domain.readiness]
condition = "running"
reattach_timeout = 3
reattach_attempts = 2
"""
DRIVER_DOMAINS = ("domnet", "domnet2", "domstore", "domstore2")
SETTLE_DEADLINE = 60.0
# The daemon retries a parked frontend every minute (frontend_steps.PARKED_RETRY); settling after
# `guest-never-connects` waits for that retry, so here it comes sooner. With two attempts of 3 s
# (`reattach_attempts` above) that fault costs seconds, not minutes.
PARKED_RETRY = 1.0
READY_DEADLINE = 60.0  # a daemon's first pass; the driver domains' first start

log = logging.getLogger("chaos")

Device = tuple[str, str, int]  # guest, kind, devid
# What a frontend holds of its device's identity: netfront's MAC and handle, blkfront's vdev number.
FRONTEND_IDENTITY = {"vif": ("handle", "mac"), "vbd": ("virtual-device", "device-type")}


def guests_config(count: int) -> str:
    lines = []
    for i in range(count):
        vif = ["domnet", "domnet2"] if i % 2 == 0 else ["domnet"]
        vbd = ["domstore", "domstore2"] if i % 3 == 0 else ["domstore"]
        lines.append(
            f'[[simulation.guest]]\nname = "g{i:02d}"\nvif = {json.dumps(vif)}\nvbd = {json.dumps(vbd)}\n'
        )
    return "\n".join(lines)


# -- a daemon that can be killed ---------------------------------------------------------------------------


class Killable:
    """Every call of a killed daemon into libvirt or xenstored blocks for good: its threads stop at their
    next call, as after a SIGKILL (what it had sent stays done)."""

    def __init__(self) -> None:
        self.killed = threading.Event()

    def gate(self) -> None:
        if self.killed.is_set():
            threading.Event().wait()


def killable_hypervisor(host: Any, kill: Killable) -> SimHypervisor:
    class KillableHypervisor(SimHypervisor):
        def domains(self) -> Any:
            kill.gate()
            return super().domains()

        def domain(self, name: str) -> Any:
            kill.gate()
            return super().domain(name)

        def define(self, spec: Any) -> None:
            kill.gate()
            super().define(spec)

        def start(self, name: str) -> Any:
            kill.gate()
            return super().start(name)

        def destroy(self, name: str) -> None:
            kill.gate()
            super().destroy(name)

        def attach(self, *args: Any) -> None:
            kill.gate()
            super().attach(*args)

        def detach(self, *args: Any) -> None:
            kill.gate()
            super().detach(*args)

    return KillableHypervisor(host)


class KillableXenstore(Xenstore):
    def __init__(self, path: Path, kill: Killable) -> None:
        super().__init__(path)
        self._kill = kill

    def _connected_router(self) -> Any:
        self._kill.gate()
        return super()._connected_router()

    def next_event(self, timeout: float | None = None) -> Any:
        self._kill.gate()
        return super().next_event(timeout)


@dataclass
class Running:
    daemon: Daemon
    thread: threading.Thread
    hypervisor: SimHypervisor
    xenstore: Xenstore
    kill: Killable


# -- the campaign -------------------------------------------------------------------------------------------


@dataclass
class Campaign:
    tmp: Path
    config: Config
    sim: SimulatedHost
    rng: random.Random
    running: Running | None = None
    identities: dict[Device, dict[str, str | None]] = field(default_factory=dict)
    guest_devices: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    to_recreate: list[str] = field(default_factory=list)
    highest_domid: int = 0
    zombies: int = 0
    fault_found: list[tuple[str, str]] = field(default_factory=list)  # what a fault saw on its way

    # -- daemons -------------------------------------------------------------------------------------------

    def start_daemon(self) -> None:
        kill = Killable()
        hypervisor = killable_hypervisor(self.sim.host, kill)
        xenstore = KillableXenstore(self.sim.server.path, kill)
        xenstore.connect()

        def close() -> None:
            hypervisor.close()
            xenstore.close()

        runtime = replace(
            simulated_runtime(self.sim, self.config),
            xenstore=xenstore,
            hypervisor=hypervisor,
            after_ready=lambda: None,
            close=close,
        )
        daemon = Daemon(self.config, runtime)
        thread = threading.Thread(target=daemon.run, name="chaos-daemon", daemon=True)
        thread.start()
        self.running = Running(daemon, thread, hypervisor, xenstore, kill)
        wait(lambda: daemon._ready, READY_DEADLINE, "daemon-not-ready", "the daemon's first pass")

    def kill_daemon(self) -> None:
        """Abruptly: its threads freeze at their next call; its libvirt event thread and xenstored
        connection go away, as a dead process's do."""
        assert self.running is not None
        self.running.kill.killed.set()
        self.running.hypervisor.close()
        threading.Thread(target=self.running.xenstore.close, daemon=True).start()
        self.zombies += 1
        self.running = None

    def stop_daemon(self) -> None:
        assert self.running is not None
        self.running.daemon.stop()
        self.running.thread.join(30)
        self.running = None

    # -- helpers for faults --------------------------------------------------------------------------------

    def domain(self, name: str) -> SimDomain:
        return self.sim.host.domains[name]

    def running_dd(self, kinds: tuple[str, ...] = ("vif", "vbd")) -> str:
        choices = [dd for dd in DRIVER_DOMAINS if self.domain(dd).domid is not None and kind_of(dd) in kinds]
        return self.rng.choice(choices or list(DRIVER_DOMAINS))

    def guest_of(self, dd: str) -> str | None:
        kind = kind_of(dd)
        guests = [
            g
            for g, (vif, vbd) in self.guest_devices.items()
            if dd in (vbd if kind == "vbd" else vif) and self.domain(g).domid is not None
        ]
        return self.rng.choice(sorted(guests)) if guests else None

    def crash(self, dd: str) -> None:
        if self.domain(dd).domid is not None:
            self.sim.host.crash(dd)

    def wait_restarted(self, dd: str, old: int | None, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            domid = self.domain(dd).domid
            if domid is not None and domid != old and self.domain(dd).state == "running":
                return True
            time.sleep(0.01)
        return False

    def recreate_destroyed_guests(self) -> None:
        for name in self.to_recreate:
            vif, vbd = self.guest_devices[name]
            self.sim.host.create_guest(name, vif=vif, vbd=vbd)
        self.to_recreate.clear()

    # -- invariants ----------------------------------------------------------------------------------------

    def record_identities(self) -> None:
        for device in self.expected_devices():
            self.identities[device] = self.identity(device)

    def expected_devices(self) -> list[Device]:
        devices: list[Device] = []
        for guest, (vif, vbd) in self.guest_devices.items():
            if self.domain(guest).domid is None:
                continue
            devices += [(guest, "vif", devid) for devid in range(len(vif))]
            devices += [(guest, "vbd", 51712 + 16 * index) for index in range(len(vbd))]
        return devices

    def identity(self, device: Device) -> dict[str, str | None]:
        """Every parameter the device was created with — whatever dom0's toolstack record lists besides
        the paths of its two ends (devid as `handle`, MAC, bridge, script, ip, rate, mtu; vdev as `dev`,
        params, mode, type) — as that record and the backend hold it, and the frontend's own copies. The
        record's keys are read, not named here: a parameter a reattach dropped or added changes them."""
        dom0 = self.sim.host.dom0
        guest, kind, devid = device
        domid = self.domain(guest).domid
        record = f"/libxl/{domid}/device/{kind}/{devid}"
        back = text(dom0.read(f"{record}/backend")) or ""
        front = f"/local/domain/{domid}/device/{kind}/{devid}"
        keys = sorted(set(dom0.directory(record)) - {"backend", "frontend"})
        found = {f"toolstack {key}": text(dom0.read(f"{record}/{key}")) for key in keys}
        found |= {f"backend {key}": text(dom0.read(f"{back}/{key}")) if back else None for key in keys}
        found |= {f"frontend {key}": text(dom0.read(f"{front}/{key}")) for key in FRONTEND_IDENTITY[kind]}
        return found

    def violations(self) -> list[tuple[str, str]]:
        running = self.running
        if running is None or not running.thread.is_alive():
            return [("daemon-dead", "the daemon thread is gone")]
        return self._driver_domain_violations() + self._device_violations() + self._registry_violations()

    def _registry_violations(self) -> list[tuple[str, str]]:
        """The daemon knows each device where it is: a device attached by the toolstack in the very
        instant its driver domain dies, before xenddd saw it, is another matter (see the README)."""
        assert self.running is not None
        wiring = self.running.daemon._wiring
        if wiring is None:
            return [("registry-unknown", "the daemon is not wired yet")]
        known = {
            (f.guest_name, f.kind.value, f.devid): f.backend_domid
            for f in wiring.registry.frontends()
            if not f.orphaned
        }
        return [
            ("registry-unknown", f"{guest} {kind} {devid}")
            for guest, kind, devid in self.expected_devices()
            if known.get((guest, kind, devid)) != self.domain(self._serving((guest, kind, devid))).domid
        ]

    def _driver_domain_violations(self) -> list[tuple[str, str]]:
        assert self.running is not None
        wiring = self.running.daemon._wiring
        found = []
        for dd in DRIVER_DOMAINS:
            domain = self.domain(dd)
            if domain.domid is None or domain.state != "running":
                found.append(("dd-not-running", dd))
            if wiring is None:
                continue
            record = wiring.reconciler._records[dd]
            if record.failed:
                found.append(("dd-failed", dd))
            if record.incident is not None:
                found.append(("recovery-open", f"{dd} {record.incident.phase.value}"))
            if record.parked:
                found.append(("parked", f"{dd}: {[p.describe() for p in record.parked]}"))
        return found

    def _device_violations(self) -> list[tuple[str, str]]:
        dom0 = self.sim.host.dom0
        found = []
        expected = set(self.expected_devices())
        for device in sorted(expected):
            guest, kind, devid = device
            domid = self.domain(guest).domid
            dd = self._serving(device)
            dd_domid = self.domain(dd).domid
            front = f"/local/domain/{domid}/device/{kind}/{devid}"
            back = f"/local/domain/{dd_domid}/backend/{kind}/{domid}/{devid}"
            if dom0.read(f"{front}/state") is None:
                found.append(("frontend-missing", f"{guest} {kind} {devid}"))
                continue
            if text(dom0.read(f"/libxl/{domid}/device/{kind}/{devid}/backend")) != back:
                found.append(("wrong-backend", f"{guest} {kind} {devid}: toolstack record"))
            elif text(dom0.read(f"{front}/backend-id")) != str(dd_domid):
                found.append(("wrong-backend", f"{guest} {kind} {devid}: backend-id"))
            elif dom0.read(f"{front}/state") != b"4" or dom0.read(f"{back}/state") != b"4":
                found.append(("not-connected", f"{guest} {kind} {devid}"))
            elif device in self.identities and self.identity(device) != self.identities[device]:
                was, now = self.identities[device], self.identity(device)
                changed = {k: (was.get(k), now.get(k)) for k in sorted(was | now) if was.get(k) != now.get(k)}
                found.append(("identity-changed", f"{guest} {kind} {devid}: (was, now) {changed}"))
        for guest in self.guest_devices:
            domain = self.domain(guest)
            if domain.domid is None:
                continue
            for kind in ("vif", "vbd"):
                for listed_devid in dom0.directory(f"/local/domain/{domain.domid}/device/{kind}"):
                    if (guest, kind, int(listed_devid)) not in expected:
                        found.append(
                            ("duplicate-device", f"{guest} {kind} {listed_devid}: not one of its devices")
                        )
            listed = [(d.kind, d.devid) for d in domain.devices]
            if len(listed) != len(set(listed)):
                found.append(("duplicate-device", f"{guest}: toolstack lists {sorted(listed)}"))
        for dd in DRIVER_DOMAINS:
            dd_domid = self.domain(dd).domid
            if dd_domid is None:
                continue
            for kind in ("vif", "vbd"):
                for guest_domid in dom0.directory(f"/local/domain/{dd_domid}/backend/{kind}"):
                    for backend_devid in dom0.directory(
                        f"/local/domain/{dd_domid}/backend/{kind}/{guest_domid}"
                    ):
                        owner = self._guest_named_by(guest_domid)
                        if owner is None or (owner, kind, int(backend_devid)) not in expected:
                            found.append(("leftover-backend", f"{dd} {kind} {guest_domid}/{backend_devid}"))
        return found

    def _serving(self, device: Device) -> str:
        guest, kind, devid = device
        vif, vbd = self.guest_devices[guest]
        return vif[devid] if kind == "vif" else vbd[(devid - 51712) // 16]

    def _guest_named_by(self, domid: str) -> str | None:
        return next((g for g in self.guest_devices if str(self.domain(g).domid) == domid), None)

    def settle(self, deadline: float = SETTLE_DEADLINE) -> tuple[float, list[tuple[str, str]]]:
        started = time.monotonic()
        while True:
            found = self.violations()
            if not found:
                return time.monotonic() - started, []
            if time.monotonic() - started > deadline or any(kind == "daemon-dead" for kind, _ in found):
                return time.monotonic() - started, found
            time.sleep(0.02)


def kind_of(dd: str) -> str:
    return "vbd" if dd.startswith("domstore") else "vif"


def text(raw: bytes | None) -> str | None:
    return raw.decode() if raw is not None else None


class Stuck(Exception):
    """What the campaign waited for never came: a violation named `kind`, after which the campaign cannot
    go on (a daemon that is not ready has nothing to settle)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def wait(condition: Callable[[], bool], timeout: float, kind: str, what: str) -> None:
    if not eventually(condition, timeout):
        raise Stuck(kind, f"timed out after {timeout:.0f} s waiting for {what}")


def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- the catalogue ------------------------------------------------------------------------------------------


def dd_crash(c: Campaign) -> None:
    c.crash(c.running_dd())


def dd_destroy(c: Campaign) -> None:
    dd = c.running_dd()
    if c.domain(dd).domid is not None:
        c.sim.host.destroy(dd)


def crash_during_recovery(c: Campaign) -> None:
    dd = c.running_dd()
    old = c.domain(dd).domid
    c.crash(dd)
    if c.wait_restarted(dd, old):
        time.sleep(c.rng.uniform(0.0, 0.2))
        c.crash(dd)


def daemon_kill(c: Campaign) -> None:
    if c.rng.random() < 0.7:
        c.crash(c.running_dd())
    time.sleep(c.rng.uniform(0.0, 0.3))
    c.kill_daemon()
    c.start_daemon()


def xenstored_drop(c: Campaign) -> None:
    if c.rng.random() < 0.5:
        c.crash(c.running_dd())
    c.sim.server.drop_connections()


def xenstored_restart(c: Campaign) -> None:
    c.crash(c.running_dd())
    c.sim.server.restart()


def libvirt_drop(c: Campaign) -> None:
    assert c.running is not None
    gap = c.rng.uniform(0.2, 1.0)
    c.running.hypervisor.drop_connection(gap)
    c.crash(c.running_dd())  # its lifecycle event is lost with the connection
    time.sleep(gap)


def guest_writes_next_domid(c: Campaign) -> None:
    """Issue #16 item 1: the guest names the next domid as its backend while its vif is detached."""
    dd = c.running_dd(("vif",))
    guest = c.guest_of(dd)
    if guest is None:
        return
    guest_domid = c.domain(guest).domid
    devid = c.guest_devices[guest][0].index(dd)
    client = DomainClient(c.sim.engine, guest_domid)  # type: ignore[arg-type]
    front = f"/local/domain/{guest_domid}/device/vif/{devid}"
    old = c.domain(dd).domid
    c.crash(dd)
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            domid = c.domain(dd).domid
            if domid not in (None, old) and client.read(f"{front}/state") is not None:
                break
            if client.read(f"{front}/state") is None:
                client.write(f"{front}/backend-id", str(c.highest_domid + 1))
            time.sleep(0.002)
    except XsError:
        pass  # the guest is gone
    finally:
        client.close()


def guest_state_flood(c: Campaign) -> None:
    """Issue #16 item 5: a guest rewrites its vif's state node hundreds of times during a recovery."""
    dd = c.running_dd(("vif",))
    guest = c.guest_of(dd)
    if guest is None:
        return
    guest_domid = c.domain(guest).domid
    devid = c.guest_devices[guest][0].index(dd)
    state = f"/local/domain/{guest_domid}/device/vif/{devid}/state"
    client = DomainClient(c.sim.engine, guest_domid)  # type: ignore[arg-type]
    c.crash(dd)
    try:
        for _ in range(300):
            value = client.read(state)
            if value is not None:
                client.write(state, value)
            time.sleep(0.003)
    except XsError:
        pass
    finally:
        client.close()


def dd_listing_churn(c: Campaign) -> None:
    """Issue #16 item 2: a driver domain keeps a backend listing over one reply changing while another
    driver domain crashes."""
    hostile = c.running_dd(("vif",))
    dd_domid = c.domain(hostile).domid
    client = DomainClient(c.sim.engine, dd_domid)  # type: ignore[arg-type]
    base = f"/local/domain/{dd_domid}/backend/vif"
    names = [f"{'x' * 32}{i:03d}" for i in range(120)]
    try:
        for name in names:
            client.write(f"{base}/{name}", "")
        c.crash(c.rng.choice([dd for dd in DRIVER_DOMAINS if dd != hostile]))
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            client.write(f"{base}/churn", "")
            client.rm(f"{base}/churn")
        for name in names:
            client.rm(f"{base}/{name}")
    except XsError:
        pass  # it crashed meanwhile, its nodes with it
    finally:
        client.close()


def dd_backend_flood(c: Campaign) -> None:
    """Issue #16 item 5 from a driver domain: it rewrites a node of one of its backends in a loop."""
    dd = c.running_dd()
    dd_domid = c.domain(dd).domid
    guest = c.guest_of(dd)
    if guest is None:
        return
    kind = kind_of(dd)
    vif, vbd = c.guest_devices[guest]
    devid = 51712 + 16 * vbd.index(dd) if kind == "vbd" else vif.index(dd)
    path = f"/local/domain/{dd_domid}/backend/{kind}/{c.domain(guest).domid}/{devid}/feature-flood"
    client = DomainClient(c.sim.engine, dd_domid)  # type: ignore[arg-type]
    try:
        for i in range(300):
            client.write(path, str(i))
            time.sleep(0.002)
        client.rm(path)
    except XsError:
        pass
    finally:
        client.close()


def damaged_state_file(c: Campaign) -> None:
    c.stop_daemon()
    state_dir = c.config.settings.state_dir
    target = c.rng.choice(
        [state_dir / "registry.json", state_dir / "history.jsonl"]
        + [state_dir / "domains" / f"{dd}.json" for dd in DRIVER_DOMAINS]
    )
    if target.exists():
        data = target.read_bytes()
        target.write_bytes(data[: c.rng.randrange(max(1, len(data)))] + b"\xff{garbage")
    if c.rng.random() < 0.5:
        c.crash(c.running_dd())
    c.start_daemon()


def guest_paused_during_outage(c: Campaign) -> None:
    dd = c.running_dd()
    guest = c.guest_of(dd)
    if guest is None:
        return
    c.sim.host.pause(guest)
    c.crash(dd)
    time.sleep(c.rng.uniform(0.2, 1.0))
    c.sim.host.unpause(guest)


def guest_destroyed_during_outage(c: Campaign) -> None:
    dd = c.running_dd()
    guest = c.guest_of(dd)
    if guest is None:
        return
    c.crash(dd)
    time.sleep(c.rng.uniform(0.0, 0.3))
    c.sim.host.destroy(guest)
    c.to_recreate.append(guest)


def guest_never_connects(c: Campaign) -> None:
    """An uncooperative guest: its frontend never answers its reattached device (its kernel does not
    react). After `reattach_attempts` the daemon must park it, so that the recovery closes for the driver
    domain's other guests; then the guest answers again, and settling waits for the parked retry to
    connect it."""
    dd = c.running_dd()
    guest = c.guest_of(dd)
    if guest is None or c.running is None:
        return
    kernel = c.domain(guest).kernel
    assert kernel is not None
    history = c.running.daemon.history
    after = max((record["seq"] for record in history.since()), default=0)

    def of_this_recovery(event: str) -> list[dict[str, Any]]:
        records = history.since(after_seq=after)
        return [r for r in records if r["event"] == event and r.get("driver_domain") == dd]

    kernel.pause()
    try:
        c.crash(dd)
        if not eventually(lambda: bool(of_this_recovery("recovered")), SETTLE_DEADLINE):
            c.fault_found.append(("recovery-held-open", f"{dd}, with {guest}'s frontend silent"))
        elif not any(r.get("guest") == guest for r in of_this_recovery("parked")):
            c.fault_found.append(("not-parked", f"{dd} recovered, {guest}'s silent frontend not parked"))
    finally:
        kernel.unpause()


CATALOGUE: dict[str, Callable[[Campaign], None]] = {
    "dd-crash": dd_crash,
    "dd-destroy": dd_destroy,
    "crash-during-recovery": crash_during_recovery,
    "daemon-kill": daemon_kill,
    "xenstored-drop": xenstored_drop,
    "xenstored-restart": xenstored_restart,
    "libvirt-drop": libvirt_drop,
    "guest-writes-next-domid": guest_writes_next_domid,
    "guest-state-flood": guest_state_flood,
    "dd-listing-churn": dd_listing_churn,
    "dd-backend-flood": dd_backend_flood,
    "damaged-state-file": damaged_state_file,
    "guest-paused-during-outage": guest_paused_during_outage,
    "guest-destroyed-during-outage": guest_destroyed_during_outage,
    "guest-never-connects": guest_never_connects,
}


# -- main ---------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the campaign saw: faults by kind, violations by kind with the first example of each, and the
    time each fault took to settle."""

    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, str] = field(default_factory=dict)
    settle_times: list[float] = field(default_factory=list)

    def violated(self, found: list[tuple[str, str]], where: str) -> None:
        for violation, detail in found:
            self.violations[violation] += 1
            self.examples.setdefault(violation, f"{where}: {detail}")


def run(faults: int, seed: int, guests: int, verbose: bool = False) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="xenddd-chaos-"))
    logging.basicConfig(
        filename=tmp / "chaos.log",
        level=logging.INFO,
        format="%(asctime)s %(threadName)s %(name)s %(message)s",
    )
    config = parse_config(CONFIG.format(tmp=tmp) + guests_config(guests), tmp / "chaos.toml")
    # xenstored's quotas raised before the host starts, as an operator would for these driver domains
    sim = SimulatedHost.start(
        tmp / "xenstored.sock",
        quotas=QuotaBook(defaults=Quotas(nodes=64 * guests + 1000, watches=16 * guests + 128)),
        cleanup_delay=0.05,  # libvirt's cleanup of a crashed domain: a detach before it fails
    )
    frontend_steps.PARKED_RETRY = PARKED_RETRY
    c = Campaign(tmp, config, sim, random.Random(seed))
    sim.host.listen(lambda what, d: setattr(c, "highest_domid", max(c.highest_domid, d.domid or 0)))
    tally = Tally()
    try:
        set_up(c)
    except Stuck as exc:
        tally.violated([(exc.kind, exc.detail)], "before the first fault")
    else:
        inject(c, faults, tally, verbose)
    if sim.engine.quotas.hits:  # a stall of the simulated host itself would be no test of the daemon
        tally.violated([("xenstore-quota-hit", str(sim.engine.quotas.hits[0]))], "during the campaign")
    print_table(faults, seed, guests, tally, c.zombies)
    if tally.violations:
        print(f"log: {tmp / 'chaos.log'}")
    return 1 if tally.violations else 0


def set_up(c: Campaign) -> None:
    """The daemon, its driver domains, the guests; settled, and their devices' identities recorded."""
    c.start_daemon()
    wait(
        lambda: all(c.domain(dd).domid is not None for dd in DRIVER_DOMAINS),
        READY_DEADLINE,
        "dd-not-running",
        "the driver domains' first start",
    )
    for guest in c.config.sim_guests:
        c.guest_devices[guest.name] = (guest.vif, guest.vbd)
    c.sim.create_guests(c.config)
    _took, initial = c.settle()
    if initial:
        kinds = sorted({kind for kind, _ in initial})
        raise Stuck("unsettled-at-start", f"{kinds}, e.g. {initial[0][1]}")
    c.record_identities()


def inject(c: Campaign, faults: int, tally: Tally, verbose: bool) -> None:
    """The faults, each followed by the settling and the check of the invariants. A fault that raises
    leaves the host in no known state: it is a violation and the last fault."""
    for number in range(1, faults + 1):
        kind = c.rng.choice(sorted(CATALOGUE))
        tally.faults[kind] += 1
        where = f"fault {number} ({kind})"
        try:
            CATALOGUE[kind](c)
        except Stuck as exc:
            tally.violated([(exc.kind, exc.detail)], where)
            return
        except Exception as exc:
            log.exception("%s raised", where)
            tally.violated([(f"fault-raised: {type(exc).__name__}", str(exc))], where)
            return
        took, settled = c.settle()
        found = c.fault_found + settled
        c.fault_found.clear()
        tally.settle_times.append(took)
        tally.violated(found, where)
        if verbose:
            print(f"{number:>5} {kind:<32} settled in {took:.3f} s {found[:3] if found else ''}", flush=True)
        if any(v == "daemon-dead" for v, _ in found):
            return
        if c.to_recreate:
            c.recreate_destroyed_guests()
            _took, found = c.settle()
            tally.violated(found, f"after {where}, guest re-created")


def print_table(faults: int, seed: int, guests: int, tally: Tally, zombies: int) -> None:
    ran = sum(tally.faults.values())
    done = f"{faults} faults" if ran == faults else f"{ran} of {faults} faults (ended early)"
    print(f"chaos: {done}, seed {seed}, {guests} guests, {zombies} daemons killed")
    print(f"{'fault':<32}{'count':>7}")
    for kind in sorted(CATALOGUE):
        print(f"{kind:<32}{tally.faults[kind]:>7}")
    print(f"{'invariant violated':<32}{'count':>7}")
    if not tally.violations:
        print(f"{'(none)':<32}{0:>7}")
    for kind, count in sorted(tally.violations.items()):
        print(f"{kind:<32}{count:>7}   e.g. {tally.examples[kind]}")
    if tally.settle_times:
        median, worst = statistics.median(tally.settle_times), max(tally.settle_times)
        print(f"time to settle: median {median:.3f} s, max {worst:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--guests", type=int, default=16)
    parser.add_argument("--verbose", action="store_true", help="one line per fault")
    args = parser.parse_args()
    code = 1
    try:
        code = run(args.faults, args.seed, args.guests, args.verbose)
    except BaseException:  # the campaign's own bug, or ^C: said, and still the way out below
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    # The only way out: the killed daemons' threads are blocked for good, toolstack workers among them,
    # which the interpreter would wait for at exit.
    os._exit(code)


if __name__ == "__main__":
    main()
