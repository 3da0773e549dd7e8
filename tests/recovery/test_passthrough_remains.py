"""A driver domain with a PCI device that crashes: its destroy must not wait for its dead pcifront.

The simulated host destroys such a domain as libxl does (see SimHost._remove_pci_of_dead): it asks
pciback to reconfigure the devices away and waits up to 10 s for a pcifront that will never answer, unless
the backend's state node is gone. Whoever destroys the remains — libvirt's cleanup of a crash, or the
daemon's own destroy before a promotion — the daemon must have released them first."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.recovery.conftest import TOPOLOGY, RunningDaemon, all_connected, domid, wait_until
from tests.recovery.test_standby import FIVE_DEVICES, STANDBY_TOPOLOGY, events, standby_ready

NIC = '[[driver_domain.pci]]\nbdf = "0000:00:10.0"\n'


def with_nic(topology: str) -> str:
    """domnet's NIC, after its own keys and tables (the first [driver_domain.restart] is domnet's)."""
    return topology.replace("[driver_domain.restart]", NIC + "[driver_domain.restart]", 1)


@pytest.mark.parametrize(
    ("topology", "standby"),
    [(TOPOLOGY, False), (STANDBY_TOPOLOGY, True)],
    ids=["libvirt-cleans-up", "promotion-destroys"],
)
def test_a_crashed_driver_domains_pci_devices_are_released_without_libxls_wait(
    start_daemon: Callable[..., RunningDaemon], topology: str, standby: bool
) -> None:
    handle = start_daemon(topology=with_nic(topology))
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="the guests' devices connected")
    if standby:
        wait_until(lambda: standby_ready(handle) is not None, what="the standby ready")
    dead = domid(sim.host.domains["domnet"])
    assert sim.host.dom0.read(f"/local/domain/0/backend/pci/{dead}/0/state") == b"4"

    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")

    # libvirt's cleanup and the daemon's destroy may both reach the remains: each must find them released
    assert set(sim.host.pci_removals) == {(dead, "released")}
    assert sim.host.dom0.read(f"/local/domain/0/backend/pci/{dead}") is None
    assert bool(events(handle, "promoted")) is standby
