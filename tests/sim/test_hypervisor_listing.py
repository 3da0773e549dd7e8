"""The simulated libvirt lists a domain only whole, as the real one does: its domain object stays locked
for the whole of libxl's create, so no reader sees a new domid whose defined devices are not there yet
(a recovery that did would take the missing uplink for one its backend gave up on)."""

from __future__ import annotations

import threading
import time

import pytest

from xenddd.sim.host import SimHost
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.socket_host import SimulatedHost


def test_a_domain_being_created_is_listed_only_once_its_defined_devices_are_in_xenstore(
    sim_host: SimulatedHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = sim_host.host
    hypervisor = SimHypervisor(host)
    host.define("domnet", driver=True)
    host.define("domfw", driver=True, defined=(("vif", "domnet", {"mac": "00:16:3e:00:00:01"}),))
    host.start("domnet")
    attaching = threading.Event()
    real_attach = SimHost.attach

    def slow_attach(self: SimHost, *args: object, **kwargs: object) -> object:
        attaching.set()
        time.sleep(0.2)  # libxl adding the device and waiting for its backend
        return real_attach(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SimHost, "attach", slow_attach)
    starter = threading.Thread(target=host.start, args=("domfw",))
    starter.start()
    assert attaching.wait(5)

    seen = hypervisor.domain("domfw")
    uplink_then = seen is not None and host.dom0.read(f"/local/domain/{seen.domid}/device/vif/0/state")
    listed = next(d for d in hypervisor.domains() if d.name == "domfw")
    starter.join(5)

    assert seen is not None and seen.domid is not None and listed.domid == seen.domid
    assert uplink_then is not None
