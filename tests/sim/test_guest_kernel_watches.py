"""A simulated guest's netfront watches its backend's state as Linux's xenbus does: the watch goes with
the device, so reattaching it to one new driver-domain instance after another costs the guest nothing
(it held one watch more per restart, until its quota of watches refused the next)."""

from __future__ import annotations

import time

from xenddd.sim.socket_host import SimulatedHost


def test_a_guest_reattached_after_every_restart_of_its_driver_domain_holds_the_same_watches(
    sim_host: SimulatedHost,
) -> None:
    host = sim_host.host
    host.define("domnet", driver=True)
    host.start("domnet")
    guest = host.create_guest("web", vif=("domnet",))
    assert guest.domid is not None

    def settled() -> int:
        deadline = time.monotonic() + 10
        while host.dom0.read(f"/local/domain/{guest.domid}/device/vif/0/state") != b"4":
            assert time.monotonic() < deadline, "the vif never connected"
            time.sleep(0.01)
        return sim_host.engine.count_watches(guest.domid)

    held = settled()
    for _ in range(5):
        host.crash("domnet")
        host.start("domnet")
        host.detach("web", "vif", 0)
        host.attach("web", "vif", 0, "domnet", {"mac": "00:16:3e:00:00:01"})
        assert settled() == held
