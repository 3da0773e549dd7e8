"""A complete simulated host for the daemon: xenstored on a socket, the toolstack, and the adapters wired
to them — what `xenddd daemon --simulate`, `xenddd sim` and `xenddd demo` run on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xenddd.adapters.xenstore import Xenstore
from xenddd.config import Config, DriverDomainSpec
from xenddd.service.daemon import Runtime
from xenddd.sim.host import SimHost
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.xenstored import SocketServer, Xenstored


@dataclass
class SimulatedHost:
    engine: Xenstored
    server: SocketServer
    host: SimHost
    hypervisor: SimHypervisor

    @classmethod
    def start(cls, socket_path: Path, *, boot_delay: float = 0.0) -> SimulatedHost:
        engine = Xenstored()
        server = SocketServer(engine, socket_path)
        server.start()
        host = SimHost(engine, boot_delay=boot_delay)
        return cls(engine, server, host, SimHypervisor(host))

    def create_guests(self, config: Config) -> None:
        for guest in config.sim_guests:
            if self.host.domains.get(guest.name) is None or self.host.domains[guest.name].domid is None:
                self.host.create_guest(guest.name, vif=guest.vif, vbd=guest.vbd)

    def runtime(self, config: Config) -> Runtime:
        """Adapters for the daemon; guests are created once the driver domains are up (after READY)."""
        xenstore = Xenstore(self.server.path)
        xenstore.connect()

        def close() -> None:
            self.hypervisor.close()
            xenstore.close()

        return Runtime(
            xenstore=xenstore,
            hypervisor=self.hypervisor,
            prepare=_no_pci_on_the_simulated_host,
            after_ready=lambda: self.create_guests(config),
            close=close,
            description="simulated",
        )

    def stop(self) -> None:
        self.host.close()
        self.server.stop()


def _no_pci_on_the_simulated_host(spec: DriverDomainSpec) -> None:
    """The simulated host has no PCI devices: a driver domain's PCI list is accepted and not hidden."""
