"""A warm standby on the simulated host: promoted at its driver domain's crash instead of a cold start,
replaced once the recovery is over, restarted quietly when it dies itself, and a promotion cut short by a
SIGKILL finished by the next daemon. The driver domain is xl's (`toolstack = "xl"`), so its death reaches
the daemon as @releaseDomain only, as on real Xen: libvirt never hears of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from tests.recovery.conftest import (
    TOPOLOGY,
    RunningDaemon,
    all_connected,
    domid,
    events,
    freeze,
    frontends,
    standby_ready,
    wait_until,
)
from xenddd.adapters.hypervisor_api import DomainInfo, DomainState, LifecycleKind
from xenddd.errors import XendddError
from xenddd.recovery.intent import DomainRecord
from xenddd.recovery.toolstack_calls import ToolstackCalls
from xenddd.sim.hypervisor import SimHypervisor

FIVE_DEVICES = 5
STANDBY_TOPOLOGY = TOPOLOGY.replace(
    'name = "domnet"\nkind = "network"\nkernel = "/boot/dd"\n',
    'name = "domnet"\nkind = "network"\nkernel = "/boot/dd"\ntoolstack = "xl"\n'
    "[driver_domain.standby]\nenabled = true\n",
    1,
)


def domnet_record(handle: RunningDaemon) -> DomainRecord:
    return handle.daemon._wiring.reconciler._records["domnet"]  # type: ignore[union-attr]


def domnet_status(handle: RunningDaemon) -> dict[str, Any]:
    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]
    return next(d for d in reconciler.snapshot()["driver_domains"] if d["name"] == "domnet")


class ListingHeld(SimHypervisor):
    """A toolstack whose every listing, once `armed`, waits for `released` (at most 5 s) and notes in
    `waits` whether it came: what a pass did before it listed shows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.armed = False
        self.released = threading.Event()
        self.waits: list[bool] = []

    def domains(self) -> list[DomainInfo]:
        if self.armed and not self.released.is_set():
            self.waits.append(self.released.wait(5))
        return super().domains()


def started_with_a_ready_standby(
    start_daemon: Callable[..., RunningDaemon], topology: str = STANDBY_TOPOLOGY, **options: Any
) -> RunningDaemon:
    handle = start_daemon(topology=topology, **options)
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="the guests' devices connected")
    wait_until(lambda: standby_ready(handle) is not None, what="the standby ready")
    return handle


def returned(calls: ToolstackCalls, key: tuple[str, str] = ("domnet", "start")) -> bool:
    """Waits (at most 5 s) for the call `key` under way to return: whether it did."""
    deadline = time.monotonic() + 5
    while key not in calls._done and time.monotonic() < deadline:
        time.sleep(0.005)
    return key in calls._done


def crash_and_recover(handle: RunningDaemon, timeout: float = 20.0) -> int | None:
    """Crash the active domnet and wait for the recovery and every device connected; the domid of the
    standby that was ready before the crash."""
    standby = standby_ready(handle)
    handle.sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), timeout, "the recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES), what="every device connected")
    return standby


def test_a_crashed_driver_domain_is_replaced_by_its_standby_and_a_new_standby_boots(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = started_with_a_ready_standby(start_daemon)
    sim = handle.sim
    standby = standby_ready(handle)
    assert domnet_status(handle)["standby"] == {
        "name": "domnet-standby",
        "domid": standby,
        "state": "ready",
        "memory_mib": 256,
        "error": None,
    }

    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")

    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    assert not events(handle, "restarted")  # no cold start
    assert domid(sim.host.domains["domnet"]) == standby
    assert sim.host.dom0.read(f"/local/domain/{standby}/name") == b"domnet"
    assert {d["backend_id"] for k, d in frontends(sim).items() if k[1] == "vif"} == {str(standby)}
    wait_until(lambda: standby_ready(handle) not in (None, standby), what="a new standby")
    wait_until(lambda: len(events(handle, "standby-started")) == 2, what="the new standby's start said")


def test_a_crash_loop_promotes_at_once_and_its_backoff_delays_the_next_standby_instead(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The second crash comes within healthy_uptime (60 s): a cold restart would wait the loop's backoff
    (5 s, jittered by at most a fifth); the ready standby is promoted at once, and the standby that
    replaces it boots only after that backoff."""
    backoff = 5.0
    slow = STANDBY_TOPOLOGY.replace("backoff_base = 0.05\nbackoff_cap = 0.2", f"backoff_base = {backoff}", 1)
    handle = started_with_a_ready_standby(start_daemon, topology=slow)
    sim = handle.sim
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the first recovery")
    wait_until(lambda: standby_ready(handle) is not None, what="the next standby ready")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")

    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 2, what="the second recovery")
    detected = events(handle, "detected")[1]["ts"]
    (scheduled,) = [e["delay"] for e in events(handle, "restart-scheduled")[1:]]
    assert scheduled >= backoff * 0.8
    assert events(handle, "promoting")[1]["ts"] - detected < backoff * 0.8
    assert len(events(handle, "promoted")) == 2 and not events(handle, "restarted")
    wait_until(lambda: len(events(handle, "standby-started")) == 3, backoff * 3, "the third standby")
    assert events(handle, "standby-started")[2]["ts"] - detected >= scheduled


def test_a_second_crash_before_the_new_standby_is_ready_takes_the_cold_path(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    refusing: list[str] = []

    class NoSecondStandby(SimHypervisor):
        """The replacement standby cannot start (its boot failed): the next recovery must not wait."""

        def start(self, name: str) -> DomainInfo:
            if name == "domnet-standby" and refusing:
                raise XendddError("domnet-standby: start failed: out of memory")
            return super().start(name)

    handle = started_with_a_ready_standby(start_daemon, hypervisor=NoSecondStandby, healthy_uptime=0.0)
    sim = handle.sim
    refusing.append("on")
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the first recovery")
    wait_until(lambda: events(handle, "standby-failed"), what="the new standby's failed start")
    assert domnet_status(handle)["standby"]["error"] == "domnet-standby: start failed: out of memory"

    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 2, what="the second recovery")
    assert len(events(handle, "promoted")) == 1 and len(events(handle, "restarted")) == 1
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected again")


def test_a_standby_that_dies_is_started_again_without_an_incident(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = started_with_a_ready_standby(start_daemon)
    first = standby_ready(handle)
    handle.sim.host.crash("domnet-standby")
    wait_until(lambda: standby_ready(handle) not in (None, first), what="another standby")
    assert [e["domid"] for e in events(handle, "standby-died")] == [first]
    assert not events(handle, "detected") and domnet_status(handle)["crashes"] == 0


@pytest.mark.parametrize("killed_after", ["remains renamed", "destroy", "rename"])
def test_a_daemon_killed_right_after_a_step_of_the_promotion_is_finished_by_the_next_one(
    start_daemon: Callable[..., RunningDaemon], killed_after: str
) -> None:
    """After the remains are renamed out of the way or destroyed, the next daemon promotes the standby
    itself; after the standby's rename (the remains' destroy beside it not run), it finds the driver
    domain running under a domid it never started, with the dead instance's frontends to recover,
    and reattaches them there. Either way the standby is the new instance, and the remains are gone."""
    first = started_with_a_ready_standby(start_daemon)
    sim = first.sim
    standby = standby_ready(first)
    dead = domid(sim.host.domains["domnet"])
    step = (
        ("rename", f"domnet-dead-{dead}") if killed_after == "remains renamed" else (killed_after, "domnet")
    )
    freezing = freeze(first, lambda *done: done == step)
    if killed_after == "rename":  # the remains' destroy, beside the rename, never ran either
        freezing.destroy = lambda *_args: freezing.release.wait()  # type: ignore[method-assign]
    sim.host.crash("domnet")
    wait_until(freezing.frozen.is_set, what=f"the first daemon to freeze after the {killed_after}")

    second = start_daemon(sim=sim, topology=STANDBY_TOPOLOGY)
    try:
        wait_until(lambda: len(events(second, "recovered")) == 1, timeout=30, what="the second's recovery")
        wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")
        assert domid(sim.host.domains["domnet"]) == standby
        assert not events(second, "reattach-failed")
        wait_until(lambda: standby_ready(second) not in (None, standby), what="a new standby")
        assert dead not in [d.domid for d in sim.host.domains.values()]
    finally:
        second.stop()
        freezing.release.set()


def test_a_standby_that_dies_as_it_is_promoted_is_followed_by_a_cold_start(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    class DiesAtPromotion(SimHypervisor):
        def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
            info = super().rename(old, new, domid)
            if old == "domnet-standby":
                self.host.crash(new)
            return info

    handle = started_with_a_ready_standby(start_daemon, hypervisor=DiesAtPromotion, healthy_uptime=0.0)
    sim = handle.sim
    standby = crash_and_recover(handle)
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    assert [e["reason"] for e in events(handle, "crashed-again")] == ["crashed"]
    assert events(handle, "restarted")
    assert domid(sim.host.domains["domnet"]) != standby


def test_an_instance_an_operator_starts_as_the_promotion_begins_is_kept_and_the_standby_stays_one(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The promotion renames and destroys the dead instance by its domid: a new one the operator started
    meanwhile (the remains destroyed, `xl create` run) keeps its name and survives, the standby's
    rename refuses that name, and the recovery adopts it; the standby is neither promoted nor
    destroyed."""

    class OperatorStartsOne(SimHypervisor):
        def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
            if old == "domnet" and self.host.domains[old].state == "crashed":
                super().destroy(old)  # the operator's `xl destroy domnet; xl create domnet.cfg`
                self.host.start(old)
            return super().rename(old, new, domid)

    handle = started_with_a_ready_standby(start_daemon, hypervisor=OperatorStartsOne)
    sim = handle.sim
    standby = crash_and_recover(handle)
    new = domid(sim.host.domains["domnet"])
    assert new not in (None, standby)
    assert not events(handle, "promoted")
    assert {d["backend_id"] for k, d in frontends(sim).items() if k[1] == "vif"} == {str(new)}
    assert standby_ready(handle) == standby  # still the standby, still ready


def test_a_promotion_renames_and_detaches_once_xenstore_drops_the_remains_not_once_a_listing_does(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """`xl destroy` returns a while after the remains are gone from xenstore, and an `xl list` taken
    meanwhile still shows them: the rename and the stale frontends' detaches go on xenstore's word.
    Here the destroy returns only once a detach has run, and the listing shows the dead instance until
    then: waiting for the listing would hold the recovery 10 s, and the rename comes before the
    destroy returns."""
    detached = threading.Event()
    order: list[str] = []

    class SlowToolstack(SimHypervisor):
        destroyed = threading.Event()

        def destroy(self, name: str, domid: int | None = None) -> None:
            super().destroy(name, domid)
            if domid is not None:
                self.destroyed.set()
                detached.wait(10)
                order.append("destroy returned")

        def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
            order.append(f"rename {old}")
            return super().rename(old, new, domid)

        def domains(self) -> list[DomainInfo]:
            listed = super().domains()
            if self.destroyed.is_set() and not detached.is_set():  # a listing from before the destroy
                listed = [remains if d.name == "domnet" else d for d in listed]
            return listed

        def detach(self, guest: str, *args: Any) -> None:
            super().detach(guest, *args)
            detached.set()

    handle = started_with_a_ready_standby(start_daemon, hypervisor=SlowToolstack)
    sim = handle.sim
    standby = standby_ready(handle)
    running = handle.daemon._wiring.reconciler._hv.domain("domnet")  # type: ignore[union-attr]
    assert running is not None
    remains = replace(running, state=DomainState.CRASHED, stopped=LifecycleKind.CRASHED)
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), timeout=8, what="the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    wait_until(lambda: "destroy returned" in order, what="the remains' destroy (once the recovery is over)")
    assert order == ["rename domnet", "rename domnet-standby", "destroy returned"]


def test_remains_whose_destroy_fails_are_said_and_destroyed_by_the_next_daemon(
    start_daemon: Callable[..., RunningDaemon], caplog: pytest.LogCaptureFixture
) -> None:
    """The remains' destroy comes once the recovery is over; one that fails is said in the log and
    changes nothing else (the next standby boots), and the record keeps the remains until they are gone:
    the next daemon (after a restart, or a SIGKILL before the destroy returned) destroys them."""

    class FailingDestroy(SimHypervisor):
        def destroy(self, name: str, domid: int | None = None) -> None:
            if domid is not None:
                raise XendddError(f"xl destroy {domid}: libxl__destroy_domid: xc_domain_destroy failed")
            super().destroy(name, domid)

    first = started_with_a_ready_standby(start_daemon, hypervisor=FailingDestroy)
    sim = first.sim
    dead = domid(sim.host.domains["domnet"])
    standby = crash_and_recover(first, timeout=8)
    assert [e["domid"] for e in events(first, "promoted")] == [standby]
    wait_until(lambda: "destroying the remains of domid" in caplog.text, what="the destroy's failure logged")
    wait_until(lambda: standby_ready(first) not in (None, standby), what="the next standby all the same")
    assert dead in [d.domid for d in sim.host.domains.values()]
    first.stop()

    second = start_daemon(sim=sim, topology=STANDBY_TOPOLOGY)
    try:
        wait_until(
            lambda: dead not in [d.domid for d in sim.host.domains.values()], what="the remains destroyed"
        )
        wait_until(lambda: domnet_record(second).remains is None, what="the record without them")
        assert len(events(second, "detected")) == 1  # (the history is the first daemon's too)
    finally:
        second.stop()


def test_a_standby_the_config_no_longer_enables_is_destroyed_by_the_next_daemon(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The operator turned the standby off (a new config, a daemon started with it): the standby that
    still runs would cost a domain's memory for nothing; it goes, and nothing else does."""
    first = started_with_a_ready_standby(start_daemon)
    sim, standby, active = first.sim, standby_ready(first), domid(first.sim.host.domains["domnet"])
    first.stop()
    before = len(first.daemon.history.since())  # the history is kept across daemons
    without = STANDBY_TOPOLOGY.replace("[driver_domain.standby]\nenabled = true\n", "", 1)
    second = start_daemon(sim=sim, topology=without)
    wait_until(lambda: events(second, "standby-retired"), what="the standby retired")
    since = [e["event"] for e in second.daemon.history.since()[before:]]
    assert [e["domid"] for e in events(second, "standby-retired")] == [standby]
    assert sim.host.domains["domnet-standby"].state == "shutoff"
    assert domid(sim.host.domains["domnet"]) == active and all_connected(sim, FIVE_DEVICES)
    assert "detected" not in since and "standby-started" not in since, since


def test_a_returned_promotion_is_taken_before_the_pass_lists_the_domains(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The stale frontends' detaches return before the promotion (on the test bed, the pass that took a
    promotion's result first listed the domains and resynced the registry: 1.4 s of one round before the
    attaches). Here the rename is held until the detaches have returned, and every listing notes whether
    the promotion's result was waiting, untaken, as it began: none may have."""
    release = threading.Event()

    class PromotesLate(SimHypervisor):
        calls: Any = None
        listed_over_a_result: list[float] = []

        def domains(self) -> list[DomainInfo]:
            if self.calls is not None and ("domnet", "start") in self.calls._done:  # returned, not taken
                self.listed_over_a_result.append(time.monotonic())
            return super().domains()

        def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
            release.wait(10)
            return super().rename(old, new, domid)

    handle = started_with_a_ready_standby(start_daemon, hypervisor=PromotesLate)
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, PromotesLate)
    hv.calls = handle.daemon._wiring.reconciler.calls  # type: ignore[union-attr]
    standby = standby_ready(handle)
    handle.sim.host.crash("domnet")
    wait_until(lambda: events(handle, "detached"), what="the stale frontends detached")
    release.set()
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    assert hv.listed_over_a_result == [], "a pass listed the domains before taking the promotion"


def test_a_detached_frontend_is_attached_before_the_pass_lists_the_domains(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The promoted instance is ready when a stale frontend's detach returns; the pass it wakes lists
    the domains first (an `xl list` after the remains' @releaseDomain: a second or more under
    emulation). Here every listing after the first detach returns waits until an attach has been made,
    at most 5 s: the attach must come before the listing, not after it."""

    class ListsSlowly(ListingHeld):
        def detach(self, guest: str, *args: Any) -> None:
            super().detach(guest, *args)
            time.sleep(0.3)  # returns after the promotion, as on the test bed
            self.armed = True

        def attach(self, guest: str, *args: Any) -> None:
            self.released.set()
            super().attach(guest, *args)

    handle = started_with_a_ready_standby(start_daemon, hypervisor=ListsSlowly)
    standby = crash_and_recover(handle)
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, ListsSlowly)
    assert hv.waits and all(hv.waits), "a listing waited for an attach the pass should have made first"


def test_the_stale_frontends_are_detached_as_the_promotion_returns_not_after_the_next_listing(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The promotion destroyed the remains (their backends with them) before its rename, so nothing the
    pass's listing could say holds the stale frontends' detaches (on the test bed the `xl list` in
    between was 0.4 s of every promotion's outage). Here every listing after the rename waits until a
    detach has been made, at most 5 s: the detach must come first."""

    class ListsSlowly(ListingHeld):
        def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
            info = super().rename(old, new, domid)
            self.armed = old == "domnet-standby"
            return info

        def detach(self, guest: str, *args: Any) -> None:
            self.released.set()
            super().detach(guest, *args)

    handle = started_with_a_ready_standby(start_daemon, hypervisor=ListsSlowly)
    standby = crash_and_recover(handle)
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, ListsSlowly)
    assert all(hv.waits), "a listing waited for a detach the pass should have made first"


def test_the_stale_frontends_are_detached_while_the_promotion_destroys_the_remains(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """A detach needs only the dead instance's backend of the device gone, not the whole of it: the
    backends are removed and the detaches made as the promotion is submitted, long before the destroy
    of the remains (an `xl destroy`, a second under emulation, once the recovery is over). Here the
    remains' destroy waits until both stale vifs have been detached, at most 5 s, and notes whether
    they were.
    Each guest's whole directory in the dead instance's `backend/vif` goes, not only the device's: a
    detach's cleanup (libxl's) then finds the device's backend absent with its parent and stops there,
    instead of removing the parents it leaves empty — `backend/vif`, which every detach shares, so
    that on the test bed they conflicted with each other and with the destroy and were redone."""

    class DestroysSlowly(SimHypervisor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.detached: list[str] = []
            self.both = threading.Event()
            self.waits: list[bool] = []
            self.shared_kept: list[bool] = []

        def destroy(self, name: str, domid: int | None = None) -> None:
            if name == "domnet" and domid is not None:  # the remains, by domid
                self.waits.append(self.both.wait(5))
                left = self.host.dom0.directory(f"/local/domain/{domid}/backend/vif")
                kept = self.host.dom0.read(f"/local/domain/{domid}/backend/vif") is not None
                self.shared_kept.append(kept and not left)
            super().destroy(name, domid)

        def detach(self, guest: str, *args: Any) -> None:
            super().detach(guest, *args)
            self.detached.append(guest)
            if len(self.detached) >= 2:
                self.both.set()

    handle = started_with_a_ready_standby(start_daemon, hypervisor=DestroysSlowly)
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, DestroysSlowly)
    standby = crash_and_recover(handle)
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    wait_until(lambda: hv.waits, what="the remains' destroy")
    assert hv.waits == [True], "the remains were destroyed before the stale frontends were detached"
    assert hv.shared_kept == [True], "a detach walked up into the dead instance's backend/vif"


def test_the_standby_takes_the_name_at_once_and_the_remains_go_once_the_recovery_is_over(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The remains give the name up by a rename (two xenstore nodes), not by their destroy, which frees
    it only once the domain's own devices are torn down; and their destroy waits for the recovery to be
    over: beside it, it took dom0's processors from the guests' attaches (an `xl destroy` and the
    hypervisor freeing the domain's memory, a second and more under emulation). The remains, renamed by
    domid, are gone after it all the same, and the next standby boots only then (their memory)."""

    class Destroys(SimHypervisor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.order: list[str] = []

        def destroy(self, name: str, domid: int | None = None) -> None:
            if domid is not None:
                self.order.append("remains destroyed")
            super().destroy(name, domid)

        def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
            self.order.append(f"rename {old}")
            return super().rename(old, new, domid)

        def start(self, name: str) -> DomainInfo:
            self.order.append(f"start {name}")
            return super().start(name)

    handle = started_with_a_ready_standby(start_daemon, hypervisor=Destroys)
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, Destroys)
    handle.daemon.history.subscribe(
        lambda record: hv.order.append("recovered") if record["event"] == "recovered" else None
    )
    dead = domid(handle.sim.host.domains["domnet"])
    hv.order.clear()
    standby = crash_and_recover(handle)
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    wait_until(lambda: standby_ready(handle) not in (None, standby), what="the next standby")
    assert dead not in [d.domid for d in handle.sim.host.domains.values()]
    assert hv.order == [
        "rename domnet",
        "rename domnet-standby",
        "recovered",
        "remains destroyed",
        "start domnet-standby",
    ]


def test_a_promotion_that_returns_while_a_pass_lists_the_domains_is_taken_before_the_registry_is_read(
    start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remains' rename is a domain hint, and its pass begins while the promotion still runs: here
    the standby's rename waits for a pass to list the domains, and that listing for the promotion to
    return. Its result is taken once the domains are listed, not after the registry is read again
    (a resync re-reads every backend: 0.1 to 0.4 s of a busy dom0 under emulation, on the path of the
    guests' attaches): the registry is never read while a returned promotion waits to be taken."""
    key = ("domnet", "start")

    class ListsAsThePromotionReturns(SimHypervisor):
        calls: ToolstackCalls | None = None
        listing = threading.Event()

        def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
            if old == "domnet-standby":
                self.listing.wait(5)
            return super().rename(old, new, domid)

        def domains(self) -> list[DomainInfo]:
            calls = self.calls
            if calls is not None and key in calls._running:  # a promotion under way
                self.listing.set()
                returned(calls, key)
            return super().domains()

    handle = started_with_a_ready_standby(start_daemon, hypervisor=ListsAsThePromotionReturns)
    wiring = handle.daemon._wiring
    assert wiring is not None
    calls = wiring.reconciler._recovery._t.calls
    untaken: list[bool] = []

    def noting(read: Callable[..., Any]) -> Callable[..., Any]:
        def noted(*args: Any, **kwargs: Any) -> Any:
            untaken.append(key in calls._done)
            return read(*args, **kwargs)

        return noted

    monkeypatch.setattr(wiring.registry, "resync", noting(wiring.registry.resync))
    monkeypatch.setattr(wiring.registry, "refresh_many", noting(wiring.registry.refresh_many))
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, ListsAsThePromotionReturns)
    hv.calls = calls
    standby = crash_and_recover(handle)
    assert hv.listing.is_set(), "no pass listed the domains while the promotion ran"
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    assert untaken and not any(untaken), "the registry was read while a returned promotion waited"


class _SlowRename(SimHypervisor):
    """The standby's rename takes 0.2 s: a promotion returns during the pass's registry refresh rather
    than before its second look at the calls, as on a loaded host."""

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        if old == "domnet-standby":
            time.sleep(0.2)
        return super().rename(old, new, domid)


def test_a_promotion_taken_after_the_pass_listed_does_not_make_the_promoted_instance_a_dead_standby(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """domnet serves nobody, so its incident ends in the very turn that takes the promotion, in the pass
    that saw the death and submitted it: that pass's listing, taken before the rename, still names the
    promoted instance domnet-standby. Taken for the standby, it was found gone on the next pass —
    `standby-died` with the driver domain's own domid, and the next standby after 2 s rather than the
    crash loop's backoff."""
    handle = start_daemon(topology=STANDBY_TOPOLOGY, guests=False, hypervisor=_SlowRename)
    wait_until(lambda: standby_ready(handle) is not None, what="the standby ready")
    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]
    calls, real_progress = reconciler.calls, reconciler._progress
    held: list[bool] = []

    def progress(name: str) -> None:  # domnet's turn waits for the promotion to return
        if name == "domnet" and ("domnet", "start") in calls._running and not held:
            held.append(returned(calls))
        real_progress(name)

    reconciler._progress = progress
    standby = standby_ready(handle)
    handle.sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: len(events(handle, "standby-started")) >= 2, 15, "the next standby")
    assert held == [True], "the promotion did not return within the pass that submitted it"
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    assert events(handle, "standby-died") == []


def test_a_promotion_that_fails_while_a_pass_lists_is_judged_on_a_listing_taken_after_it(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The promotion renames the standby, then fails (its devices refused) and destroys it; it returns
    while a pass lists the domains, and that listing, taken before the destroy, shows the promoted
    standby running as domnet. The pass takes the failure at its second look; judged on that listing,
    what it saw of domnet and of its standby predates the failure."""
    key = ("domnet", "start")

    class FailsAsAPassLists(SimHypervisor):
        calls: ToolstackCalls | None = None
        armed = False
        listing = threading.Event()

        def ensure_passthrough(self, spec: Any, disks: bool = True) -> None:
            if self.armed and spec.name == "domnet":
                self.armed = False
                self.listing.wait(5)
                raise XendddError("domnet: pci-attach refused (one promotion)")
            super().ensure_passthrough(spec, disks)

        def domains(self) -> list[DomainInfo]:
            seen = super().domains()
            calls = self.calls
            if calls is not None and key in calls._running and not self.listing.is_set():
                self.listing.set()  # the promotion fails now, after this listing
                returned(calls, key)
            return seen

    handle = started_with_a_ready_standby(start_daemon, hypervisor=FailsAsAPassLists, healthy_uptime=0.0)
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, FailsAsAPassLists)
    hv.calls = handle.daemon._wiring.reconciler._recovery._t.calls  # type: ignore[union-attr]
    hv.armed = True
    sim = handle.sim
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), 20, "the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")
    assert hv.listing.is_set(), "no pass listed the domains while the promotion ran"
    assert len(events(handle, "restart-failed")) == 1
    assert events(handle, "crashed-again") == []
    assert len(events(handle, "restarted")) == 1
