"""The registry kept live by the backend watcher, on the simulated host: its toolstack writes what libxl
writes, its kernels walk the xenbus states, and its domains can be crashed or turn hostile."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xenstore.errors import XenstoreTimeout
from xenddd.hints import Hint, ResyncHint, XenstoreHint
from xenddd.model import DeviceKind, Frontend, VbdParams, VifParams, XenbusState
from xenddd.registry.backend_watcher import BackendWatcher
from xenddd.registry.frontends import FrontendRegistry
from xenddd.sim.domain_client import DomainClient
from xenddd.sim.socket_host import SimulatedHost
from xenddd.sim.xenstored_ops import READ

DEADLINE = 20.0


class LiveRegistry:
    """The daemon's arrangement in miniature: watcher thread → hint queue → registry on another thread."""

    def __init__(self, sim: SimulatedHost, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.xs = Xenstore(sim.server.path, call_timeout=10)
        self.registry = FrontendRegistry(self.xs, ["netdd", "blkdd"], state_dir=state_dir)
        self.hints: queue.Queue[Hint | None] = queue.Queue()
        self.watcher = BackendWatcher(
            self.xs, ["netdd", "blkdd"], self.hints.put, domains=self.registry.domains
        )
        self._consumer = threading.Thread(target=self._consume, name="test-reconciler", daemon=True)

    def start(self) -> None:
        self.registry.resync()
        self._consumer.start()
        self.watcher.start()
        assert self.watcher.wait_armed(DEADLINE)

    def _consume(self) -> None:
        while (hint := self.hints.get()) is not None:
            if isinstance(hint, XenstoreHint):
                self.registry.refresh(hint.path)
            elif isinstance(hint, ResyncHint):
                self.registry.resync()

    def wait(self, condition: Callable[[list[Frontend]], bool]) -> list[Frontend]:
        ok = self.registry.wait_for(lambda r: condition(r.frontends()), DEADLINE)
        frontends = self.registry.frontends()
        assert ok, f"registry never reached the expected state: {frontends}"
        return frontends

    def stop(self) -> None:
        self.watcher.stop()
        self.hints.put(None)
        self._consumer.join(5)
        self.xs.close()


@pytest.fixture
def sim(sim_host: SimulatedHost) -> SimulatedHost:
    for name in ("netdd", "blkdd"):
        sim_host.host.define(name, driver=True)
        sim_host.host.start(name)
    return sim_host


@pytest.fixture
def live(sim: SimulatedHost, tmp_path: Path) -> Iterator[LiveRegistry]:
    live = LiveRegistry(sim, tmp_path / "state")
    live.start()
    yield live
    live.stop()


def connected(frontends: list[Frontend], count: int) -> bool:
    return len(frontends) == count and all(
        f.backend_state is XenbusState.CONNECTED and f.frontend_state is XenbusState.CONNECTED
        for f in frontends
    )


def test_guests_created_by_the_toolstack_appear_with_their_identity_and_connected_states(
    sim: SimulatedHost, live: LiveRegistry
) -> None:
    web = sim.host.create_guest("web", vif=("netdd",), vbd=("blkdd",))
    db = sim.host.create_guest("db", vif=("netdd",), vbd=("blkdd",))

    frontends = live.wait(lambda fs: connected(fs, 4))

    by_guest = {(f.guest_name, f.kind): f for f in frontends}
    for guest in (web, db):
        vif, vbd = by_guest[(guest.name, DeviceKind.VIF)], by_guest[(guest.name, DeviceKind.VBD)]
        device = {d.kind: d for d in guest.devices}
        assert (vif.guest_uuid, vif.guest_domid, vif.backend_name) == (guest.uuid, guest.domid, "netdd")
        assert isinstance(vif.params, VifParams) and vif.params.mac == device["vif"].params["mac"]
        assert vif.hotplug_status == "connected"
        assert vbd.backend_name == "blkdd"
        assert vbd.params == VbdParams("xvda", f"/dev/vg/{guest.name}-xvda", "w", "disk", backend_type="phy")


def test_a_destroyed_guest_disappears_and_a_crashed_driver_domain_leaves_orphans(
    sim: SimulatedHost, live: LiveRegistry
) -> None:
    for name in ("web", "db", "mail"):
        sim.host.create_guest(name, vif=("netdd",), vbd=("blkdd",))
    live.wait(lambda fs: connected(fs, 6))

    sim.host.destroy("db")
    live.wait(lambda fs: {f.guest_name for f in fs} == {"web", "mail"})

    sim.host.crash("netdd")
    frontends = live.wait(lambda fs: any(f.orphaned for f in fs))
    assert sorted((f.guest_name, f.kind.value, f.orphaned) for f in frontends) == [
        ("mail", "vbd", False),
        ("mail", "vif", True),
        ("web", "vbd", False),
        ("web", "vif", True),
    ]

    # a daemon restarted now (the DD still dead) gets the orphans back from its state directory
    restarted = FrontendRegistry(live.xs, ["netdd", "blkdd"], state_dir=live.state_dir)
    restarted.load()
    restarted.resync()
    assert [(f.guest_name, f.orphaned) for f in restarted.served_by("netdd")] == [
        ("mail", True),
        ("web", True),
    ]


def test_a_hostile_driver_domain_cannot_claim_another_guests_disk(
    sim: SimulatedHost, live: LiveRegistry
) -> None:
    sim.host.create_guest("web", vif=("netdd",), vbd=("blkdd",))
    victim = sim.host.create_guest("db", vbd=("blkdd",))
    live.wait(lambda fs: connected(fs, 3))
    netdd = sim.host.domains["netdd"].domid
    assert netdd is not None and victim.domid is not None

    hostile = DomainClient(sim.engine, netdd)  # acting as the compromised driver domain itself
    forged = f"/local/domain/{netdd}/backend/vbd/{victim.domid}/51712"
    for key, value in {
        "frontend": f"/local/domain/{victim.domid}/device/vbd/51712",
        "frontend-id": str(victim.domid),
        "params": "/dev/vg/db-xvda",
        "dev": "xvda",
        "state": "4",
    }.items():
        hostile.write(f"{forged}/{key}", value)
    hostile.close()

    assert live.registry.wait_for(lambda r: forged in r.rejected(), DEADLINE)
    served = live.registry.frontends(DeviceKind.VBD, guest="db")
    assert [(f.backend_name, f.backend_domid) for f in served] == [("blkdd", sim.host.domains["blkdd"].domid)]


def test_a_hostile_guest_scribbling_on_its_frontend_does_not_lose_its_entry(
    sim: SimulatedHost, live: LiveRegistry
) -> None:
    guest = sim.host.create_guest("web", vif=("netdd",))
    live.wait(lambda fs: connected(fs, 1))
    assert guest.domid is not None

    hostile = DomainClient(sim.engine, guest.domid)
    hostile.write(f"/local/domain/{guest.domid}/device/vif/0/state", b"\xff" * 200)
    hostile.close()

    frontends = live.wait(lambda fs: len(fs) == 1 and fs[0].frontend_state is XenbusState.UNKNOWN)
    assert frontends[0].backend_name == "netdd"


def test_a_request_xenstored_never_answers_ends_in_a_deadline_error(sim: SimulatedHost) -> None:
    xs = Xenstore(sim.server.path, call_timeout=0.3)
    try:
        sim.engine.faults.hang_ops.add(READ)
        with pytest.raises(XenstoreTimeout):
            xs.read("/local/domain/0/name")
        sim.engine.faults.hang_ops.clear()
        xs.call_timeout = 10
        assert xs.read("/local/domain/0/name") == b"Domain-0"
    finally:
        xs.close()
