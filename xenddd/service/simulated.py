"""The daemon's adapters on the simulated host: what `xenddd daemon --simulate` and `xenddd demo` run on,
where it keeps its sockets and state, and the faults an operator can inject into it.

The counterpart of `production`: the same `Runtime`, with xenstore connected to the simulated xenstored's
socket and the simulated toolstack as the hypervisor. The simulated host has no PCI devices, so a driver
domain's PCI list is accepted and nothing is hidden.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from xenddd.adapters.hypervisor_api import Hypervisor
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.config.spec import Config, DriverDomainSpec, Settings
from xenddd.errors import XendddError
from xenddd.service.control import ControlServer
from xenddd.service.daemon import Runtime
from xenddd.sim.socket_host import SimulatedHost

SIM_DIR_ENV = "XENDDD_SIM_DIR"
FAULTS_SOCKET = "faults.sock"
_FAULTS = {"crash": "crashed", "destroy": "destroyed", "shutdown": "shutdown"}


def simulation_dir() -> Path:
    """Where `daemon --simulate` keeps its sockets and state: the same place every time, so that other
    commands (`xenddd --simulate status`, `xenddd sim crash NAME`, xenstore-ls) find it."""
    explicit = os.environ.get(SIM_DIR_ENV)
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/run/xenddd-sim")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "xenddd-sim" if runtime else Path(f"/tmp/xenddd-sim-{os.getuid()}")


def simulation_settings(config: Config, directory: Path) -> Config:
    """The simulated host's xenstored in `directory`, and the state directory and control socket there too
    unless the config sets them: a simulation never touches a real daemon's state or socket."""
    defaults, settings = Settings(), config.settings
    settings = replace(settings, xenstore_socket=directory / "xenstored.sock")
    if settings.state_dir == defaults.state_dir:
        settings = replace(settings, state_dir=directory / "state")
    if settings.control_socket == defaults.control_socket:
        settings = replace(settings, control_socket=directory / "control.sock")
    return replace(config, settings=settings)


def prepare_simulation_dir(directory: Path) -> None:
    """Private to its user: a predictable path under /tmp must not be somebody else's."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_uid != os.geteuid():
        raise XendddError(f"{directory} belongs to another user; set {SIM_DIR_ENV} to a directory of yours")


def serve_faults(sim: SimulatedHost, directory: Path) -> ControlServer:
    """`xenddd sim crash|destroy|shutdown NAME`: the faults an operator rehearses a recovery with."""

    def inject(op: str, args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("name")
        domain = sim.host.domains.get(name) if isinstance(name, str) else None
        if op not in _FAULTS:
            return {"ok": False, "error": f"unknown fault {op!r}", "exit_code": 2}
        if domain is None or domain.domid is None:
            return {"ok": False, "error": f"{name!r} is not running on the simulated host", "exit_code": 2}
        domid = domain.domid
        sim.host.stop(domain.name, _FAULTS[op])
        return {"ok": True, "name": domain.name, "domid": domid}

    server = ControlServer(directory / FAULTS_SOCKET, inject)
    server.start()
    return server


class SimulatedHostLike(Protocol):
    """What the daemon's adapters need of a simulated host: a `SimulatedHost` in this process, or the
    benchmark's `sim.remote_host.RemoteHost` in a process of its own."""

    @property
    def socket_path(self) -> Path: ...

    @property
    def hypervisor(self) -> Hypervisor: ...

    def create_guests(self, config: Config) -> None: ...


def simulated_runtime(sim: SimulatedHostLike, config: Config) -> Runtime:
    """Adapters for the daemon; guests are created once the driver domains are up (after READY)."""
    xenstore = Xenstore(sim.socket_path)
    xenstore.connect()

    def close() -> None:
        sim.hypervisor.close()
        xenstore.close()

    return Runtime(
        xenstore=xenstore,
        hypervisor=sim.hypervisor,
        prepare=_no_pci_on_the_simulated_host,
        after_ready=lambda: sim.create_guests(config),
        close=close,
        description="simulated",
    )


def _no_pci_on_the_simulated_host(spec: DriverDomainSpec) -> None:
    """The simulated host has no PCI devices: a driver domain's PCI list is accepted and not hidden."""
