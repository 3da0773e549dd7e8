"""The daemon's adapters on the simulated host: what `xenddd daemon --simulate` and `xenddd demo` run on.

The counterpart of `production`: the same `Runtime`, with xenstore connected to the simulated xenstored's
socket and the simulated toolstack as the hypervisor. The simulated host has no PCI devices, so a driver
domain's PCI list is accepted and nothing is hidden.
"""

from __future__ import annotations

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.config.spec import Config, DriverDomainSpec
from xenddd.service.daemon import Runtime
from xenddd.sim.socket_host import SimulatedHost


def simulated_runtime(sim: SimulatedHost, config: Config) -> Runtime:
    """Adapters for the daemon; guests are created once the driver domains are up (after READY)."""
    xenstore = Xenstore(sim.server.path)
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
