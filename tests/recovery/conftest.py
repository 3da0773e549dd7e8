"""A running daemon on a simulated host, for end-to-end recovery tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from xenddd.adapters.hypervisor_api import DomainInfo
from xenddd.config.loader import parse_config
from xenddd.config.spec import Config, DriverDomainSpec
from xenddd.recovery.intent import DomainRecord
from xenddd.service.daemon import Daemon
from xenddd.service.simulated import simulated_runtime
from xenddd.sim.host import SimDomain, SimHost
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.socket_host import SimulatedHost

TOPOLOGY = """
[xenddd]
state_dir = "{tmp}/state"
control_socket = "{tmp}/control.sock"

[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/boot/dd"
[driver_domain.restart]
max_restarts = {max_restarts}
window = 600
backoff_base = 0.05
backoff_cap = 0.2
healthy_uptime = {healthy_uptime}

[driver_domain.readiness]
reattach_timeout = {reattach_timeout}

[[driver_domain]]
name = "domstore"
kind = "block"
kernel = "/boot/dd"
[driver_domain.restart]
backoff_base = 0.05
backoff_cap = 0.2

[[simulation.guest]]
name = "web"
vif = ["domnet"]
vbd = ["domstore"]

[[simulation.guest]]
name = "db"
vif = ["domnet"]
vbd = ["domstore"]

[[simulation.guest]]
name = "cache"
vif = ["domnet"]
"""


@dataclass
class RunningDaemon:
    sim: SimulatedHost
    config: Config
    daemon: Daemon
    thread: threading.Thread

    def settled(self, count: int) -> bool:
        """All `count` frontends connected AND known to the daemon's registry: the steady state a crash
        is meant to interrupt (a device attached in the very instant its backend dies is another story)."""
        wiring = self.daemon._wiring
        return (
            all_connected(self.sim, count)
            and wiring is not None
            and len(wiring.registry.frontends()) == count
        )

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the daemon did not stop"


def events(handle: RunningDaemon, name: str) -> list[dict[str, Any]]:
    """The daemon's history records of one event, oldest first."""
    return [r for r in handle.daemon.history.since() if r["event"] == name]


def standby_ready(handle: RunningDaemon, name: str = "domnet") -> int | None:
    """The domid of `name`'s standby once it runs and has written its readiness key."""
    standby = handle.sim.host.domains.get(f"{name}-standby")
    if standby is None or standby.domid is None:
        return None
    ready = handle.sim.host.dom0.read(f"/local/domain/{standby.domid}/data/ready")
    return standby.domid if ready == b"1" else None


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def frontends(sim: SimulatedHost) -> dict[tuple[str, str, str], dict[str, str | None]]:
    """Every guest device as the guest's own xenstore nodes show it: identity, backend and both states."""
    dom0 = sim.host.dom0
    seen: dict[tuple[str, str, str], dict[str, str | None]] = {}
    for guest in [d.name for d in list(sim.host.domains.values()) if not d.driver]:
        domain = sim.host.domains.get(guest)
        if domain is None or domain.domid is None:
            continue
        for kind in ("vif", "vbd"):
            for devid in dom0.directory(f"/local/domain/{domain.domid}/device/{kind}"):
                path = f"/local/domain/{domain.domid}/device/{kind}/{devid}"
                backend = (dom0.read(f"{path}/backend") or b"").decode()
                seen[(guest, kind, devid)] = {
                    "state": _text(dom0.read(f"{path}/state")),
                    "backend_id": _text(dom0.read(f"{path}/backend-id")),
                    "backend_state": _text(dom0.read(f"{backend}/state")) if backend else None,
                    "mac": _text(dom0.read(f"{path}/mac")),
                    "vdev": _text(dom0.read(f"{backend}/dev")) if kind == "vbd" and backend else None,
                }
    return seen


def all_connected(sim: SimulatedHost, count: int) -> bool:
    devices = frontends(sim)
    return len(devices) == count and all(
        d["state"] == "4" and d["backend_state"] == "4" for d in devices.values()
    )


def _text(raw: bytes | None) -> str | None:
    return raw.decode() if raw is not None else None


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    running: list[RunningDaemon] = []
    hosts: list[SimulatedHost] = []

    def start(
        max_restarts: int = 5,
        reattach_timeout: float = 60.0,
        sim: SimulatedHost | None = None,
        prepare: Callable[[DriverDomainSpec], None] | None = None,
        guests: bool = True,
        healthy_uptime: float = 60.0,
        hypervisor: Callable[[SimHost], SimHypervisor] | None = None,
        topology: str = TOPOLOGY,
    ) -> RunningDaemon:
        """`hypervisor`: a SimHypervisor subclass standing in for the toolstack (slow or failing calls)."""
        config = parse_config(
            topology.format(
                tmp=tmp_path,
                max_restarts=max_restarts,
                reattach_timeout=reattach_timeout,
                healthy_uptime=healthy_uptime,
            ),
            tmp_path / "xenddd.toml",
        )
        if sim is None:
            sim = SimulatedHost.start(tmp_path / "xenstored.sock")
            hosts.append(sim)
        runtime = simulated_runtime(sim, config)
        if prepare is not None:
            runtime = replace(runtime, prepare=prepare)
        if not guests:
            runtime = replace(runtime, after_ready=lambda: None)
        if hypervisor is not None:
            standing_in, close = hypervisor(sim.host), runtime.close
            runtime = replace(runtime, hypervisor=standing_in, close=lambda: (standing_in.close(), close()))
        daemon = Daemon(config, runtime)
        thread = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
        thread.start()
        handle = RunningDaemon(sim, config, daemon, thread)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if handle.thread.is_alive():
            handle.stop()
    for sim in hosts:
        sim.stop()


def domid(domain: SimDomain) -> int:
    assert domain.domid is not None
    return domain.domid


class FreezingHypervisor(SimHypervisor):
    """As a SIGKILL leaves a daemon: right after the call that `freezes_after(step, domain)` picks, that
    call never returns, and every later toolstack call of that daemon (its loop's next look at the
    domains included) blocks for good, until `release`."""

    def __init__(self, host: SimHost, freezes_after: Callable[[str, str], bool]) -> None:
        super().__init__(host)
        self.frozen, self.release = threading.Event(), threading.Event()
        self._freezes_after = freezes_after

    def gate(self) -> None:
        if self.frozen.is_set():
            self.release.wait()

    def _done(self, step: str, domain: str) -> None:
        if self._freezes_after(step, domain):
            self.frozen.set()
            self.release.wait()

    def domains(self) -> list[DomainInfo]:
        self.gate()
        return super().domains()

    def domain(self, name: str) -> DomainInfo | None:
        self.gate()
        return super().domain(name)

    def detach(self, guest: str, *args: Any) -> None:
        self.gate()
        super().detach(guest, *args)
        self._done("detach", guest)

    def start(self, name: str) -> DomainInfo:
        self.gate()
        info = super().start(name)
        self._done("start", name)
        return info

    def start_with_domid(self, name: str, domid: int) -> DomainInfo:
        self.gate()
        info = super().start_with_domid(name, domid)
        self._done("start_with_domid", name)
        return info

    def attach(self, guest: str, *args: Any) -> None:
        self.gate()
        super().attach(guest, *args)
        self._done("attach", guest)

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        self.gate()
        info = super().rename(old, new, domid)
        self._done("rename", new)
        return info

    def destroy(self, name: str, domid: int | None = None) -> None:
        self.gate()
        super().destroy(name, domid)
        self._done("destroy", name)

    def save(self, name: str, path: Path) -> None:
        self.gate()
        super().save(name, path)
        self._done("save", name)

    def restore(self, name: str, path: Path) -> DomainInfo:
        self.gate()
        info = super().restore(name, path)
        self._done("restore", name)
        return info


def freeze(handle: RunningDaemon, freezes_after: Callable[[str, str], bool]) -> FreezingHypervisor:
    """Put a FreezingHypervisor under a running daemon's reconciler; once frozen, the daemon's intent
    log writes nothing more either (its loop may still be busy with what the frozen call left it, which
    a SIGKILL would have stopped too)."""
    freezing = FreezingHypervisor(handle.sim.host, freezes_after)
    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]
    handle.daemon.runtime.hypervisor = freezing
    reconciler._hv = reconciler._recovery._t.hypervisor = freezing
    intents = reconciler._intents
    real_save = intents.save

    def save(record: DomainRecord) -> None:
        freezing.gate()
        real_save(record)

    intents.save = save  # type: ignore[method-assign]
    return freezing
