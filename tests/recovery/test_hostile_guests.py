"""Guests are hostile: nothing a guest writes into its own xenstore nodes may cost its driver domain a
restart, another guest its device, or the daemon its attention. Each attack is written as the guest would
make it, through the simulated xenstored, against a real daemon."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.recovery.conftest import TOPOLOGY, RunningDaemon, all_connected, domid, frontends, wait_until
from xenddd.sim.domain_client import DomainClient
from xenddd.sim.hypervisor import SimHypervisor

FIVE_DEVICES = 5
# domnet is ready once a reattached vif's backend reaches InitWait; cache's vif is the first one tried.
INITWAIT_TOPOLOGY = TOPOLOGY.replace(
    "reattach_timeout = {reattach_timeout}",
    'condition = "backend-initwait"\ntimeout = 3\nreattach_timeout = {reattach_timeout}',
)


def events(handle: RunningDaemon, name: str) -> list[dict[str, Any]]:
    return [r for r in handle.daemon.history.since() if r["event"] == name]


def test_a_guest_naming_the_next_domid_as_its_backend_is_attached_and_costs_nobody_a_restart(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """cache writes, between its stale vif's detach and the restart, `backend-id` = the domid the new
    domnet will get (Xen's domids are predictable). A check on that node alone would take the vif for
    attached, never attach it, wait for its backend to reach InitWait, declare domnet not ready, destroy
    it, and so on until `failed`, every other guest's vif with it."""
    starting = threading.Event()
    starting.set()

    class GatedStart(SimHypervisor):
        def start(self, name: str) -> Any:
            starting.wait(20)
            return super().start(name)

    handle = start_daemon(hypervisor=GatedStart, topology=INITWAIT_TOPOLOGY)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    next_domid = max(domid(d) for d in sim.host.domains.values() if d.domid is not None) + 1
    cache = domid(sim.host.domains["cache"])

    starting.clear()
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "detached"), what="the stale vifs detached")
    guest = DomainClient(sim.engine, cache)
    guest.write(f"/local/domain/{cache}/device/vif/0/backend-id", str(next_domid))
    guest.close()
    starting.set()

    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every vif connected, cache's included")
    assert sim.host.domains["domnet"].domid == next_domid
    assert not events(handle, "not-ready") and not events(handle, "failed")
    assert {d["backend_id"] for k, d in frontends(sim).items() if k[1] == "vif"} == {str(next_domid)}


def test_backend_initwait_readiness_passes_over_a_guest_whose_attach_fails(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The first frontend tried for `backend-initwait` readiness cannot be attached (cache filled its
    device directory so that the toolstack refuses); the next one proves the new domnet ready instead."""
    starting = threading.Event()
    starting.set()

    class GatedStart(SimHypervisor):
        def start(self, name: str) -> Any:
            starting.wait(20)
            return super().start(name)

    handle = start_daemon(hypervisor=GatedStart, topology=INITWAIT_TOPOLOGY)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    cache = domid(sim.host.domains["cache"])

    starting.clear()
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "detached"), what="the stale vifs detached")
    guest = DomainClient(sim.engine, cache)
    guest.write(f"/local/domain/{cache}/device/vif/0/state", "1")  # the toolstack's add now fails: EEXIST
    starting.set()

    wait_until(lambda: events(handle, "ready"), what="domnet ready through another guest's vif")
    assert not events(handle, "not-ready")
    wait_until(lambda: len(events(handle, "reattached")) == 2, what="web's and db's vifs")
    guest.rm(f"/local/domain/{cache}/device/vif/0")
    guest.close()
    wait_until(lambda: events(handle, "recovered"), timeout=30, what="cache's vif too, once it lets go")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))
