"""Guests are hostile: nothing a guest writes into its own xenstore nodes may cost its driver domain a
restart, another guest its device, or the daemon its attention. Each attack is written as the guest would
make it, through the simulated xenstored, against a real daemon."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.recovery.conftest import (
    TOPOLOGY,
    RunningDaemon,
    all_connected,
    domid,
    events,
    frontends,
    wait_until,
)
from xenddd.hints import ControlRequest
from xenddd.recovery import frontend_steps
from xenddd.service import daemon as daemon_module
from xenddd.service.metrics import render_metrics
from xenddd.sim.domain_client import DomainClient
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.kernels import Kernel

FIVE_DEVICES = 5
# domnet is ready once a reattached vif's backend reaches InitWait; cache's vif is the first one tried.
INITWAIT_TOPOLOGY = TOPOLOGY.replace(
    "reattach_timeout = {reattach_timeout}",
    'condition = "backend-initwait"\ntimeout = 3\nreattach_timeout = {reattach_timeout}',
)

# cache with a disk too: libxl's detach of a guest's last device removes its `device` directory, which
# the guest cannot create again
CACHE_WITH_A_DISK = INITWAIT_TOPOLOGY.replace(
    'name = "cache"\nvif = ["domnet"]', 'name = "cache"\nvif = ["domnet"]\nvbd = ["domstore"]'
)
SIX_DEVICES = 6


def crash_domnet_with_cache_silent(handle: RunningDaemon) -> Kernel:
    """domnet crashes while cache's netfront does not answer: its reattached vif stalls in the handshake
    until the returned kernel is unpaused."""
    kernel = handle.sim.host.domains["cache"].kernel
    assert kernel is not None
    kernel.pause()
    handle.sim.host.crash("domnet")
    return kernel


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

    handle = start_daemon(hypervisor=GatedStart, topology=CACHE_WITH_A_DISK)
    sim = handle.sim
    wait_until(lambda: handle.settled(SIX_DEVICES))
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
    wait_until(lambda: all_connected(sim, SIX_DEVICES), what="every vif connected, cache's included")
    assert sim.host.domains["domnet"].domid == next_domid
    assert not events(handle, "not-ready") and not events(handle, "failed")
    assert {d["backend_id"] for k, d in frontends(sim).items() if k[1] == "vif"} == {str(next_domid)}


def test_backend_initwait_readiness_passes_over_a_guest_whose_attach_fails(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The first frontend tried for `backend-initwait` readiness cannot be attached (cache filled its
    device directory so that the toolstack refuses); the next one proves the new domnet ready instead,
    and cache's leftovers are detached before its vif is attached again."""
    starting = threading.Event()
    starting.set()

    class GatedStart(SimHypervisor):
        def start(self, name: str) -> Any:
            starting.wait(20)
            return super().start(name)

    handle = start_daemon(hypervisor=GatedStart, topology=CACHE_WITH_A_DISK)
    sim = handle.sim
    wait_until(lambda: handle.settled(SIX_DEVICES))
    cache = domid(sim.host.domains["cache"])

    starting.clear()
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "detached"), what="the stale vifs detached")
    guest = DomainClient(sim.engine, cache)
    guest.write(f"/local/domain/{cache}/device/vif/0/state", "1")  # the toolstack's add now fails: EEXIST
    starting.set()

    wait_until(lambda: events(handle, "ready"), what="domnet ready through another guest's vif")
    assert not events(handle, "not-ready")
    guest.close()
    wait_until(lambda: events(handle, "recovered"), timeout=30, what="cache's vif too")
    wait_until(lambda: all_connected(sim, SIX_DEVICES))
    assert [e["guest"] for e in events(handle, "reattach-failed")] == ["cache"]


def test_a_guest_writing_its_state_node_in_a_loop_gets_a_few_passes_a_second_and_no_more(
    start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache's frontend stalls in its handshake (its state node watched meanwhile) and the guest writes
    that node hundreds of times: each write must not cost a pass and a listing of libvirt's domains,
    and the periodic safety resync must still run on its own clock."""
    monkeypatch.setattr(daemon_module, "SAFETY_RESYNC", 0.5)
    listings = {"count": 0}

    class CountingListings(SimHypervisor):
        def domains(self) -> Any:
            listings["count"] += 1
            return super().domains()

    handle = start_daemon(hypervisor=CountingListings)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    cache_kernel = crash_domnet_with_cache_silent(handle)
    wait_until(lambda: len(events(handle, "reattached")) == 2, what="web's and db's vifs, cache's attached")
    registry = handle.daemon._wiring.registry  # type: ignore[union-attr]
    resyncs = {"count": 0}
    resync = registry.resync

    def counted_resync() -> None:
        resyncs["count"] += 1
        resync()

    monkeypatch.setattr(registry, "resync", counted_resync)
    cache = domid(sim.host.domains["cache"])
    guest = DomainClient(sim.engine, cache)
    before = listings["count"]
    started = time.monotonic()
    for write in range(400):
        guest.write(f"/local/domain/{cache}/device/vif/0/state", "1" if write % 2 else "2")
        time.sleep(0.005)
    flood = time.monotonic() - started
    guest.close()

    assert listings["count"] - before <= 6 * flood + 10  # a few passes a second, each listing once
    assert resyncs["count"] >= int(flood / 0.5) - 1  # the safety resync kept its clock
    cache_kernel.unpause()
    wait_until(lambda: events(handle, "recovered"), timeout=30, what="the recovery, once cache answers")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))


PARKING_TOPOLOGY = TOPOLOGY.replace(
    "reattach_timeout = {reattach_timeout}", "reattach_timeout = {reattach_timeout}\nreattach_attempts = 2"
)


def domnet_status(handle: RunningDaemon) -> dict[str, Any]:
    snapshot = handle.daemon._wiring.reconciler.snapshot()  # type: ignore[union-attr]
    return next(d for d in snapshot["driver_domains"] if d["name"] == "domnet")


def test_a_guest_that_never_connects_is_parked_and_the_recovery_ends_for_everybody_else(
    start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache's netfront never answers its reattached vif. After `reattach_attempts` attaches it is
    parked — an event, `status`, a metric — the incident ends for web and db, and cache is retried on
    its own schedule outside the incident until it connects."""
    monkeypatch.setattr(frontend_steps, "PARKED_RETRY", 0.5)
    handle = start_daemon(reattach_timeout=0.3, topology=PARKING_TOPOLOGY)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    cache_kernel = crash_domnet_with_cache_silent(handle)

    wait_until(lambda: events(handle, "recovered"), timeout=30, what="the recovery, without cache")
    (parked,) = events(handle, "parked")
    assert (parked["guest"], parked["attempts"]) == ("cache", 2)
    assert "not Connected within" in str(parked["error"])
    assert domnet_status(handle)["parked"] == ["cache vif 0"]
    metrics = render_metrics(handle.daemon._wiring.reconciler.snapshot(), handle.daemon.history)  # type: ignore[union-attr]
    assert 'xenddd_parked_frontends{driver_domain="domnet"} 1' in metrics
    web_db = {k: d for k, d in frontends(sim).items() if k[0] != "cache"}
    assert all(d["state"] == "4" and d["backend_state"] == "4" for d in web_db.values())

    cache_kernel.unpause()
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), timeout=30, what="cache connected by a parked retry")
    wait_until(lambda: domnet_status(handle)["parked"] == [], what="cache unparked")
    assert [e["guest"] for e in events(handle, "reattached")].count("cache") == 1
    assert len(events(handle, "detected")) == 1  # retried outside any incident


def test_a_parked_frontend_gets_its_retry_on_time_when_nothing_else_happens_on_the_host(
    start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass that parks cache's vif and ends the incident must ask to be woken for the retry: no call
    returns after it and no watch fires, and cache waited for the next safety resync (up to 30 s) instead
    of PARKED_RETRY."""
    monkeypatch.setattr(frontend_steps, "PARKED_RETRY", 0.5)
    handle = start_daemon(reattach_timeout=1.0, topology=PARKING_TOPOLOGY)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    cache_kernel = crash_domnet_with_cache_silent(handle)
    wait_until(lambda: events(handle, "recovered"), timeout=30, what="the recovery, without cache")
    cache_kernel.unpause()

    wait_until(lambda: all_connected(sim, FIVE_DEVICES), timeout=5, what="cache connected by its first retry")


def test_an_operator_restart_during_a_recovery_restarts_at_once(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """A paused guest holds domnet's incident open; `xenddd restart domnet` must not answer ok and do
    nothing: the incident is replaced by a planned restart that takes over every frontend."""
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.host.pause("db")
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "reattached")) == 2, what="web's and cache's vifs")
    second = sim.host.domains["domnet"].domid

    answers: list[dict[str, object]] = []
    handle.daemon.hints.put(ControlRequest("restart", {"name": "domnet"}, answers.append))
    wait_until(lambda: bool(answers), what="the answer")
    assert answers[0]["ok"] is True
    (requested,) = events(handle, "restart-requested")
    assert requested["frontends"] == 3 and requested["replaced"] == events(handle, "detected")[0]["incident"]
    wait_until(lambda: sim.host.domains["domnet"].domid not in (None, second), what="a third domnet instance")
    sim.host.unpause("db")
    wait_until(lambda: len(events(handle, "recovered")) == 1, timeout=30, what="the planned restart's end")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))
    vifs = {d["backend_id"] for k, d in frontends(sim).items() if k[1] == "vif"}
    assert vifs == {str(sim.host.domains["domnet"].domid)}


def test_a_guest_destroyed_during_its_handshake_leaves_no_watch_behind(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """cache's frontend stalls in its handshake (its state node watched meanwhile) and cache is then
    destroyed: the watch on a node of a domain that no longer exists must go with it. xenstored keeps a
    watch on any path, so guests that come and go during recoveries would otherwise pile them up."""
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    baseline = sim.engine.count_watches(0)
    crash_domnet_with_cache_silent(handle)
    wait_until(lambda: len(events(handle, "reattached")) == 2, what="web's and db's vifs, cache's attached")
    wait_until(lambda: sim.engine.count_watches(0) > baseline, what="cache's handshake watched")
    sim.host.destroy("cache")
    wait_until(lambda: events(handle, "recovered"), what="the recovery ends without cache")
    assert [e["guest"] for e in events(handle, "dropped")] == ["cache"]
    wait_until(lambda: sim.engine.count_watches(0) == baseline, what="cache's handshake watch removed")


def test_a_probe_attach_the_toolstack_gave_up_on_stays_and_connects_once_the_backends_load(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """`backend-initwait` attaches the first vif as the new domnet boots. A boot that outlasts libxl's
    wait for InitWait (10 s) fails that attach, but libxl leaves the device where netback picks it up
    once loaded: detaching and attaching it again cost 20 to 30 s a round on real Xen (2026-12-04)."""
    handle = start_daemon(topology=INITWAIT_TOPOLOGY)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.host.boot_delay, sim.host.init_timeout = 1.5, 0.3

    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every vif connected")
    assert not events(handle, "reattach-failed") and not events(handle, "not-ready")
    assert {e["attempts"] for e in events(handle, "reattached")} == {1}
