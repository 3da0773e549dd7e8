"""A complete simulated host: xenstored on a socket, the toolstack and its Hypervisor adapter — what
`xenddd daemon --simulate`, `xenddd sim` and `xenddd demo` run on (`service.simulated` wires the daemon
to it). `remote_host` runs one in a process of its own and offers the same calls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xenddd.config.spec import Config
from xenddd.sim.host import SimHost
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.quotas import QuotaBook, QuotaHit
from xenddd.sim.xenstored import Xenstored
from xenddd.sim.xenstored_socket import SocketServer


@dataclass
class SimulatedHost:
    engine: Xenstored
    server: SocketServer
    host: SimHost
    hypervisor: SimHypervisor

    @classmethod
    def start(
        cls,
        socket_path: Path,
        *,
        boot_delay: float = 0.0,
        quotas: QuotaBook | None = None,
        cleanup_delay: float = 0.0,
    ) -> SimulatedHost:
        """`quotas`: xenstored's limits, as its command line sets them before any domain connects;
        `cleanup_delay`: `SimHost.cleanup_delay`."""
        engine = Xenstored(quotas)
        server = SocketServer(engine, socket_path)
        server.start()
        host = SimHost(engine, boot_delay=boot_delay, cleanup_delay=cleanup_delay)
        return cls(engine, server, host, SimHypervisor(host))

    @property
    def socket_path(self) -> Path:
        return self.server.path

    def create_guests(self, config: Config) -> None:
        for guest in config.sim_guests:
            if self.host.domains.get(guest.name) is None or self.host.domains[guest.name].domid is None:
                self.host.create_guest(guest.name, vif=guest.vif, vbd=guest.vbd)

    def crash(self, name: str) -> None:
        self.host.crash(name)

    def requests_served(self) -> int:
        return self.server.requests_served()

    def quota_hits(self) -> list[QuotaHit]:
        return list(self.engine.quotas.hits)

    def stop(self) -> None:
        self.host.close()
        self.server.stop()
