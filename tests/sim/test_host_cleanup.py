"""The simulated toolstack's delayed cleanup of a crashed domain cleans up that instance only."""

from __future__ import annotations

import time

from xenddd.sim.socket_host import SimulatedHost


def test_a_domain_started_again_before_its_crash_is_cleaned_up_keeps_running(sim_host: SimulatedHost) -> None:
    host = sim_host.host
    host.cleanup_delay = 0.05
    host.define("domnet", driver=True)
    crashed = host.start("domnet").domid
    host.crash("domnet")
    restarted = host.start("domnet").domid  # cleans up the dying instance itself, as libvirt's start does
    time.sleep(0.2)  # past the crashed instance's cleanup
    assert restarted != crashed
    assert host.domains["domnet"].domid == restarted and host.domains["domnet"].state == "running"
