"""End to end on the simulated host with the real daemon: crashed driver domains come back with every
frontend reattached with the same identity, and nothing is lost or duplicated whatever happens meanwhile."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
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
    wait_until,
)
from xenddd.adapters.hypervisor_api import DomainInfo
from xenddd.adapters.xenstore.errors import XenstoreUnavailable
from xenddd.config.spec import DriverDomainSpec
from xenddd.errors import InputError
from xenddd.hints import DomainHint, Hint, ResyncHint
from xenddd.model import DeviceKind
from xenddd.sim.host import SimHost
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.kernels import BackendKernel

FIVE_DEVICES = 5  # web: vif+vbd, db: vif+vbd, cache: vif


def test_crashed_network_and_block_domains_get_all_five_frontends_back(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="guests connected at start")
    before = frontends(sim)
    old_net, old_store = sim.host.domains["domnet"].domid, sim.host.domains["domstore"].domid

    sim.host.crash("domnet")
    sim.host.crash("domstore")

    wait_until(lambda: len(events(handle, "recovered")) == 2, what="two recoveries")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="all five frontends connected again")
    after = frontends(sim)
    assert after.keys() == before.keys()
    for key, device in after.items():
        assert device["mac"] == before[key]["mac"]
        assert device["vdev"] == before[key]["vdev"]
    new_net, new_store = sim.host.domains["domnet"].domid, sim.host.domains["domstore"].domid
    assert new_net not in (None, old_net) and new_store not in (None, old_store)
    assert {d["backend_id"] for k, d in after.items() if k[1] == "vif"} == {str(new_net)}
    assert {d["backend_id"] for k, d in after.items() if k[1] == "vbd"} == {str(new_store)}
    assert len(events(handle, "reattached")) == FIVE_DEVICES


def test_an_external_destroy_is_recovered_like_a_crash(start_daemon: Callable[..., RunningDaemon]) -> None:
    handle = start_daemon()
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    handle.sim.host.destroy("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 1)
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES))


def test_a_crash_loop_ends_in_failed_and_an_operator_restart_clears_it(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = start_daemon(max_restarts=2)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    for crash in range(3):
        wait_until(
            lambda: sim.host.domains["domnet"].domid is not None, what=f"domnet up before crash {crash}"
        )
        sim.host.crash("domnet")
        if crash < 2:
            wait_until(lambda n=crash: len(events(handle, "restarted")) == n + 1, what="restart")
    wait_until(lambda: len(events(handle, "failed")) == 1, what="failed state")
    snapshot = handle.daemon._wiring.reconciler.snapshot()  # type: ignore[union-attr]
    domnet = next(d for d in snapshot["driver_domains"] if d["name"] == "domnet")
    assert domnet["failed"] and domnet["state"] == "failed"
    assert sim.host.domains["domnet"].domid is None

    answers: list[dict[str, object]] = []
    from xenddd.hints import ControlRequest

    handle.daemon.hints.put(ControlRequest("restart", {"name": "domnet"}, answers.append))
    wait_until(
        lambda: bool(answers) and sim.host.domains["domnet"].domid is not None, what="operator restart"
    )
    assert answers[0]["ok"] is True
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="frontends back after the operator's restart")


def test_a_guest_destroyed_during_the_outage_is_dropped_not_lost(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.host.boot_delay = 1.0  # the new instance takes a while to be ready, so the outage lasts
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "restarted")) == 1)
    sim.host.destroy("cache")
    wait_until(lambda: len(events(handle, "recovered")) == 1, timeout=30)
    dropped = events(handle, "dropped")
    assert [d["guest"] for d in dropped] == ["cache"]
    wait_until(lambda: all_connected(sim, FIVE_DEVICES - 1))


def test_a_paused_guest_is_reattached_when_it_resumes(start_daemon: Callable[..., RunningDaemon]) -> None:
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.host.pause("db")
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "reattached")) == 2, what="the running guests' vifs")
    assert not events(handle, "recovered")
    sim.host.unpause("db")
    wait_until(lambda: len(events(handle, "recovered")) == 1, what="recovery completed after resume")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))


def test_a_reattached_vif_whose_handshake_stalls_is_detached_and_attached_again(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """cache's netfront does not probe its new vif (its kernel stalls, the domain keeps running): the
    attach succeeded, but the recovery must not wait on that handshake forever."""
    handle = start_daemon(reattach_timeout=0.3)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    cache = sim.host.domains["cache"].kernel
    assert cache is not None
    cache.pause()
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "reattach-failed"), what="the stalled handshake given up")
    (stalled, *_) = events(handle, "reattach-failed")
    assert stalled["guest"] == "cache" and "not Connected within" in str(stalled["error"])
    assert "frontend INITIALISING" in str(stalled["error"])
    assert not events(handle, "recovered")
    cache.unpause()
    wait_until(lambda: len(events(handle, "recovered")) == 1, what="the recovery completed")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every frontend connected again")
    (reattached,) = [e for e in events(handle, "reattached") if e["guest"] == "cache"]
    assert int(str(reattached["attempts"])) >= 2
    assert len(frontends(sim)) == FIVE_DEVICES


def test_a_reattached_vif_whose_new_backend_gives_up_is_attached_again_without_waiting_for_the_timeout(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The new domnet's `xl devd` removes cache's new backend (its hotplug script missed libxl's 40 s)
    before cache's netfront connected: nothing will connect that device, so it is attached again at
    once, not after `reattach_timeout` (seen on real Xen under load: 120 s lost per stall)."""
    handle = start_daemon(reattach_timeout=600)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    cache = sim.host.domains["cache"]
    assert cache.kernel is not None and cache.domid is not None
    cache.kernel.pause()
    old = sim.host.domains["domnet"].domid
    sim.host.crash("domnet")

    def new_backend() -> str:
        new = sim.host.domains["domnet"].domid
        return f"/local/domain/{new}/backend/vif/{cache.domid}/0" if new not in (None, old) else "/none"

    wait_until(lambda: sim.host.dom0.read(f"{new_backend()}/state") is not None, what="cache's new vif")
    sim.host.dom0.rm(new_backend())
    wait_until(lambda: events(handle, "reattach-failed"), timeout=10, what="the attach given up at once")
    (failed,) = events(handle, "reattach-failed")
    assert failed["guest"] == "cache" and "gave up before Connected" in str(failed["error"])
    cache.kernel.unpause()
    wait_until(lambda: len(events(handle, "recovered")) == 1, what="the recovery completed")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every frontend connected again")


def test_a_new_instance_that_probes_no_attached_device_is_destroyed_and_started_again(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The new domnet wrote its readiness key, then its kernel stopped answering xenstore: no backend
    attached to it leaves state 1, and detaching and attaching again would meet the same silence (real
    Xen: ten minutes of it). Once the attaches' `reattach_timeout` is over, that instance is destroyed and
    judged as one that died; the next one serves every guest."""
    handle = start_daemon(reattach_timeout=0.5)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.host.unresponsive_next.add("domnet")
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "unresponsive"), what="the silent instance given up")
    (silent,) = events(handle, "unresponsive")
    assert sorted(str(d) for d in silent["devices"]) == ["cache vif 0", "db vif 0", "web vif 0"]
    wait_until(lambda: len(events(handle, "recovered")) == 1, what="the recovery completed")
    (again,) = events(handle, "crashed-again")
    assert again["domid"] == silent["domid"] and again["reason"] == "destroyed"
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every frontend connected again")
    newest = sim.host.domains["domnet"].domid
    assert newest != silent["domid"] and len(events(handle, "restarted")) == 2
    assert {d["backend_id"] for k, d in frontends(sim).items() if k[1] == "vif"} == {str(newest)}
    assert not events(handle, "reattach-failed")


def test_a_silent_instance_ready_by_running_alone_is_not_taken_for_unresponsive(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """With `condition = "running"` nothing says the new domnet's backends have loaded (a full
    distribution loads netback late in its boot): backends below InitWait are no proof of a silent
    kernel, and its devices only go the stalled-handshake way."""
    timeout = "reattach_timeout = {reattach_timeout}"
    topology = TOPOLOGY.replace(timeout, f'condition = "running"\n{timeout}', 1)
    handle = start_daemon(reattach_timeout=0.3, topology=topology)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.host.unresponsive_next.add("domnet")
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "reattach-failed"), what="a stalled handshake given up")
    domnet_kernel(sim.host).stall_initwait = False
    wait_until(lambda: len(events(handle, "recovered")) == 1, what="the recovery completed")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every frontend connected again")
    assert not events(handle, "unresponsive") and len(events(handle, "restarted")) == 1


def test_one_guest_whose_backend_is_never_probed_does_not_take_its_driver_domain_down(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """Only cache's new backend stays below InitWait (as one does whose guest removed its frontend
    directory before netback read it): web's and db's vifs are Connected through the same instance,
    which therefore answers. cache's device goes the stalled-handshake way, never the instance."""
    released = threading.Event()

    class CacheUnprobed(SimHypervisor):
        def attach(self, guest: str, kind: DeviceKind, *args: Any) -> None:
            if guest == "cache" and kind is DeviceKind.VIF and not released.is_set():
                wait_until(lambda: connected_vifs(self.host) == {"web", "db"}, what="web and db first")
                domnet_kernel(self.host).stall_initwait = True
            super().attach(guest, kind, *args)

    handle = start_daemon(reattach_timeout=0.5, hypervisor=CacheUnprobed)
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "reattach-failed"), what="cache's handshake given up")
    (stalled, *_) = events(handle, "reattach-failed")
    assert stalled["guest"] == "cache" and "backend INITIALISING" in str(stalled["error"])
    released.set()
    domnet_kernel(sim.host).stall_initwait = False
    wait_until(lambda: len(events(handle, "recovered")) == 1, what="the recovery completed")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every frontend connected again")
    assert not events(handle, "unresponsive") and len(events(handle, "restarted")) == 1


def domnet_kernel(host: SimHost) -> BackendKernel:
    """The running domnet's netback and `xl devd`, whose probing a test stops and starts again."""
    kernel = host.domains["domnet"].kernel
    assert isinstance(kernel, BackendKernel)
    return kernel


def connected_vifs(host: SimHost) -> set[str]:
    """The guests whose vif 0 is Connected at both ends."""
    found = set()
    for domain in list(host.domains.values()):
        if domain.driver or domain.domid is None:
            continue
        path = f"/local/domain/{domain.domid}/device/vif/0"
        backend = (host.dom0.read(f"{path}/backend") or b"").decode()
        if backend and host.dom0.read(f"{path}/state") == b"4" and host.dom0.read(f"{backend}/state") == b"4":
            found.add(domain.name)
    return found


def test_a_second_crash_before_the_recovery_ends_takes_back_the_frontends_already_reattached(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """web's and db's vifs are confirmed on the second domnet while paused cache holds the incident open;
    when that instance dies too they are served by a dead backend again and must be recovered with it."""
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.host.pause("cache")
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "reattached")) == 2, what="web's and db's vifs on the new domnet")
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "restarted")) == 2, what="the second restart")
    sim.host.unpause("cache")
    wait_until(lambda: len(events(handle, "recovered")) == 1, what="the recovery completed")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every frontend connected again")
    newest = str(sim.host.domains["domnet"].domid)
    assert {d["backend_id"] for k, d in frontends(sim).items() if k[1] == "vif"} == {newest}


def test_a_daemon_restart_mid_recovery_finishes_without_duplicates(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    first = start_daemon()
    sim = first.sim
    wait_until(lambda: first.settled(FIVE_DEVICES))
    sim.host.boot_delay = 1.0
    sim.host.crash("domnet")
    wait_until(lambda: len(events(first, "restarted")) == 1)
    first.stop()  # the recovery is in "waiting-ready" with its intent on disk
    assert not events(first, "ready")

    second = start_daemon(sim=sim)
    wait_until(lambda: len(events(second, "recovered")) == 1, timeout=30)
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))
    assert len(frontends(sim)) == FIVE_DEVICES


def test_a_missed_crash_event_is_found_by_the_next_resync(start_daemon: Callable[..., RunningDaemon]) -> None:
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    sim.engine.faults.drop_events = True  # xenstore watch events are lost
    sim.hypervisor._events = __import__("queue").Queue()  # and libvirt's event is never delivered
    sim.host.crash("domnet")
    sim.engine.faults.drop_events = False
    from xenddd.hints import ResyncHint

    handle.daemon.hints.put(ResyncHint("test: periodic resync"))
    wait_until(lambda: len(events(handle, "recovered")) == 1)
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))


def test_a_planned_destroy_refuses_while_serving_and_does_not_restart(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    from xenddd.hints import ControlRequest

    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    answers: list[dict[str, object]] = []
    handle.daemon.hints.put(ControlRequest("destroy", {"name": "domstore"}, answers.append))
    wait_until(lambda: len(answers) == 1)
    assert answers[0]["ok"] is False and "serves 2 frontend(s)" in str(answers[0]["error"])
    handle.daemon.hints.put(ControlRequest("destroy", {"name": "domstore", "force": True}, answers.append))
    wait_until(lambda: len(answers) == 2)
    assert answers[1]["ok"] is True
    assert sim.host.domains["domstore"].domid is None
    assert not [k for k in frontends(sim) if k[1] == "vbd"]
    handle.daemon.hints.put(ControlRequest("status", {}, answers.append))
    wait_until(lambda: len(answers) == 3)
    assert sim.host.domains["domstore"].domid is None
    assert not events(handle, "detected")


def test_a_hostile_driver_domain_forging_a_backend_gets_nothing_attached(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    from xenddd.sim.domain_client import DomainClient

    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    net, store = sim.host.domains["domnet"], sim.host.domains["domstore"]
    cache = sim.host.domains["cache"]
    # domnet, acting as itself, invents a backend for cache's (non-existent) disk 51712
    hostile = DomainClient(sim.engine, net.domid)  # type: ignore[arg-type]
    forged = f"/local/domain/{net.domid}/backend/vbd/{cache.domid}/51712"
    hostile.write(f"{forged}/frontend", f"/local/domain/{cache.domid}/device/vbd/51712")
    hostile.write(f"{forged}/params", "/dev/vg/web-xvda")
    hostile.write(f"{forged}/state", "4")
    wait_until(lambda: any(forged in path for path in handle.daemon._wiring.registry.rejected()))  # type: ignore[union-attr]
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 1)
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))
    assert ("cache", "vbd", "51712") not in frontends(sim)
    assert store.domid is not None and len(events(handle, "reattached")) == 3
    hostile.close()


def test_a_driver_domain_spoiling_optional_vif_keys_cannot_keep_the_guest_from_being_reattached(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """#16: a malformed ip, mtu or rate in the backend once rejected the whole device, so the guest was
    never reattached after the next crash. Only the bad values are ignored now, each said once."""
    from xenddd.sim.domain_client import DomainClient

    said: list[str] = []
    registry_log = logging.getLogger("xenddd.registry")
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    registry_log.addHandler(handler)
    registry_log.setLevel(logging.WARNING)  # whatever level an earlier test left the root logger at
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    net, web = sim.host.domains["domnet"], sim.host.domains["web"]
    hostile = DomainClient(sim.engine, net.domid)  # type: ignore[arg-type]
    backend = f"/local/domain/{net.domid}/backend/vif/{web.domid}/0"
    hostile.write(f"{backend}/ip", "10.0.0.300 ; reboot")
    hostile.write(f"{backend}/mtu", "9" * 30)
    hostile.write(f"{backend}/rate", "as fast as you like")
    wait_until(lambda: all(any(key in line for line in said) for key in ("ip '10.", "mtu '999", "rate 'as")))

    sim.host.crash("domnet")

    wait_until(lambda: len(events(handle, "recovered")) == 1)
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))
    assert ("web", "vif", 0) in {(e["guest"], e["kind"], e["devid"]) for e in events(handle, "reattached")}
    assert sum("mtu '999" in line for line in said) == 1
    registry_log.removeHandler(handler)
    registry_log.setLevel(logging.NOTSET)
    hostile.close()


@pytest.mark.parametrize("killed_after", ["detach", "start", "attach"])
def test_a_daemon_killed_right_after_any_step_is_finished_by_the_next_one_without_duplicates(
    start_daemon: Callable[..., RunningDaemon], killed_after: str
) -> None:
    """The first daemon freezes for good right after performing a step, before it could record it — as
    a SIGKILL there would leave things: the worker that made the call never returns, and every later
    toolstack call of that daemon (its loop's next look at the domains included) blocks for good.
    A second daemon on the same state directory finishes the job."""
    first = start_daemon()
    sim = first.sim
    wait_until(lambda: first.settled(FIVE_DEVICES))
    freezing = freeze(first, lambda step, _domain: step == killed_after)
    sim.host.crash("domnet")
    wait_until(freezing.frozen.is_set, what=f"the first daemon to freeze after {killed_after}")

    second = start_daemon(sim=sim)
    try:
        wait_until(
            lambda: len(events(second, "recovered")) == 1, timeout=30, what="the second daemon's recovery"
        )
        wait_until(lambda: all_connected(sim, FIVE_DEVICES))
        assert not events(second, "reattach-failed")  # nothing attached twice (a second attach would fail)
        assert sum(1 for d in sim.host.domains.values() if d.driver and d.domid is not None) == 2
    finally:
        second.stop()
        freezing.release.set()


def test_a_driver_domain_that_cannot_start_says_why_once_and_starts_once_it_can(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    refusal = "0000:00:10.0 has no reset method (no FLR, PM or bus reset) and its reset policy is 'strict'"
    refusing = threading.Event()
    refusing.set()
    attempts: list[str] = []

    def prepare(spec: DriverDomainSpec) -> None:
        attempts.append(spec.name)
        if spec.name == "domnet" and refusing.is_set():
            raise InputError(refusal)

    handle = start_daemon(prepare=prepare, guests=False)  # the simulated guests would need domnet
    sim = handle.sim
    wait_until(lambda: handle.daemon._wiring is not None, what="the daemon wired")
    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]

    def domnet() -> dict[str, Any]:
        return next(d for d in reconciler.snapshot()["driver_domains"] if d["name"] == "domnet")

    for _ in range(3):  # every pass tries again ...
        tried = attempts.count("domnet")
        handle.daemon.hints.put(ResyncHint("test"))
        wait_until(lambda t=tried: attempts.count("domnet") > t, what="another attempt to start domnet")
    assert [e["error"] for e in events(handle, "error")] == [refusal]  # ... but says so once
    assert domnet()["error"] == refusal and "domnet" not in sim.host.domains  # refused before libvirt
    assert sim.host.domains["domstore"].domid is not None  # the other driver domain is not held up

    refusing.clear()
    handle.daemon.hints.put(ResyncHint("test"))
    wait_until(lambda: getattr(sim.host.domains.get("domnet"), "domid", None) is not None, what="domnet up")
    wait_until(lambda: domnet()["error"] is None, what="the error cleared")


def test_a_running_driver_domain_without_a_record_is_adopted_with_its_devices_not_restarted(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """As a daemon killed between a start and the passthrough after it leaves things: the next daemon
    adopts the running domain, hides its devices and passes through what is missing, and does not
    restart it."""
    first = start_daemon(guests=False)
    sim = first.sim
    wait_until(lambda: getattr(sim.host.domains.get("domnet"), "domid", None) is not None, what="domnet up")
    domid = sim.host.domains["domnet"].domid
    first.stop()
    (first.config.settings.state_dir / "domains" / "domnet.json").unlink()  # no record of that start
    prepared: list[str] = []
    ensured: list[str] = []
    sim.hypervisor.ensure_passthrough = lambda spec: ensured.append(spec.name)  # type: ignore[method-assign]

    second = start_daemon(sim=sim, prepare=lambda spec: prepared.append(spec.name), guests=False)
    wait_until(lambda: "domnet" in ensured, what="domnet's passthrough ensured")
    assert "domnet" in prepared and ensured == ["domnet"]  # domstore has its record: nothing to adopt
    assert sim.host.domains["domnet"].domid == domid and not events(second, "restarted")


def test_a_start_that_hands_back_the_dead_domid_is_not_taken_for_a_restart(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """Right after a crash the toolstack may still report the dead instance as running; frontends must
    not be attached to its remains."""
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    dead = sim.host.domains["domstore"].domid
    real_start = sim.hypervisor.start
    stale: list[int] = []

    def start(name: str) -> DomainInfo:
        if name == "domstore" and not stale:
            stale.append(1)
            return replace(real_start(name), domid=dead)  # the first answer names the dead instance
        return real_start(name)

    sim.hypervisor.start = start  # type: ignore[method-assign]
    sim.host.crash("domstore")
    wait_until(lambda: len(events(handle, "recovered")) == 1, timeout=30)
    assert stale and [e["domid"] for e in events(handle, "restarted")] != [dead]
    assert all(e["domid"] != dead for e in events(handle, "restarted") + events(handle, "ready"))
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))


def test_a_vif_keeps_its_devid_when_a_later_vif_of_the_guest_is_served_elsewhere(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """libxl gives a device attached without a devid the last listed one plus one: a guest with vif 0 on
    the crashed domnet and vif 1 on another driver domain would get its vif back as 2, and a guest
    configured on eth0's devid (udev rules, `vif-route` names, firewall rules on vif<domid>.0) loses it."""
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="guests connected at start")
    guest = sim.host.create_guest("router", vif=("domnet", "domstore"))
    wiring = handle.daemon._wiring
    assert wiring is not None
    wait_until(lambda: len(wiring.registry.frontends()) == FIVE_DEVICES + 2, what="router's vifs known")
    dom0, router = sim.host.dom0, guest.domid
    mac_before = dom0.read(f"/local/domain/{router}/device/vif/0/mac")

    sim.host.crash("domnet")

    wait_until(lambda: len(events(handle, "recovered")) == 1, what="the recovery")
    new_net = sim.host.domains["domnet"].domid
    assert [e["devid"] for e in events(handle, "reattached") if e.get("guest") == "router"] == [0]
    assert sorted(dom0.directory(f"/local/domain/{router}/device/vif")) == ["0", "1"]
    assert dom0.read(f"/local/domain/{router}/device/vif/0/backend-id") == str(new_net).encode()
    assert dom0.read(f"/local/domain/{router}/device/vif/0/mac") == mac_before
    assert not events(handle, "reattach-differs")


def test_a_reattached_device_whose_identity_differs_is_reported_field_by_field(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """A toolstack that gives the device back on another bridge: recovered, but said, with was and is."""
    from xenddd.model import VifParams

    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    real_attach = sim.hypervisor.attach

    def attach(guest: str, kind: Any, devid: int, params: Any, backend: str) -> None:
        if isinstance(params, VifParams) and guest == "cache":
            params = replace(params, bridge="xenbr1")
        real_attach(guest, kind, devid, params, backend)

    sim.hypervisor.attach = attach  # type: ignore[method-assign]
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 1)
    (differs,) = events(handle, "reattach-differs")
    assert (differs["guest"], differs["kind"], differs["devid"]) == ("cache", "vif", 0)
    assert differs["bridge"] == ["xenbr0", "xenbr1"] and "mac" not in differs


def test_a_domain_event_rereads_who_runs_and_no_backend_tree(
    start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a domain's coming or going changes in a backend tree is a watch event of its own; a
    lifecycle event re-read every driver domain's trees besides (about sixty requests on the test bed,
    several times in each recovery)."""
    monkeypatch.setattr("xenddd.service.daemon.SAFETY_RESYNC", 3600.0)  # no timer's resync in the pass
    handle = start_daemon()
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    wiring = handle.daemon._wiring
    assert wiring is not None
    registry, reconciler = wiring.registry, wiring.reconciler
    real_scan, real_refresh = registry._scan, registry.domains.refresh
    real_pass = reconciler._refresh_registry
    trees: list[object] = []  # whole backend trees read
    refreshes: list[object] = []  # the domains listed (the watcher's thread may list them too)
    alone: list[tuple[list[object], list[object]]] = []  # each pass of the event alone: what it read

    def scan(name: str, dd_domid: int, kind: DeviceKind, devices: object, **kwargs: Any) -> None:
        if devices is None:
            trees.append((name, kind))
        real_scan(name, dd_domid, kind, devices, **kwargs)  # type: ignore[arg-type]

    def refresh(**kwargs: Any) -> None:
        refreshes.append(kwargs)
        real_refresh(**kwargs)

    def registry_pass(hints: Sequence[Hint]) -> float | None:
        trees.clear()
        refreshes.clear()
        wake = real_pass(hints)
        if hints and all(h == event for h in hints):  # not a pass that also took the start's watch events
            alone.append((list(refreshes), list(trees)))
        return wake

    monkeypatch.setattr(registry, "_scan", scan)
    monkeypatch.setattr(registry.domains, "refresh", refresh)
    monkeypatch.setattr(reconciler, "_refresh_registry", registry_pass)
    event = DomainHint("libvirt", name="web", domid=domid(handle.sim.host.domains["web"]))
    for _ in range(20):
        handle.daemon.hints.put(event)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: bool(alone), timeout=1.0)
            break
    assert alone, "no pass took the event alone"
    assert all(listed and not read for listed, read in alone)


def test_the_restart_is_under_way_before_the_pass_that_saw_the_crash_rereads_the_registry(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The restart needs only what the dead instance served, which the registry knew before the crash:
    the pass that sees the death submits it first and re-reads the registry after (which took up to half
    a second of a loaded test bed's pass)."""
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]
    real_start, real_refresh = sim.hypervisor.start, reconciler._refresh_registry
    start_called = threading.Event()
    under_way: list[bool] = []

    def start(name: str) -> DomainInfo:
        if name == "domnet":
            start_called.set()
        return real_start(name)

    def refresh(hints: Sequence[Hint]) -> float | None:
        if reconciler._records["domnet"].incident is not None and not under_way:
            under_way.append(start_called.wait(3))  # a start submitted before this runs on a worker
        return real_refresh(hints)

    sim.hypervisor.start = start  # type: ignore[method-assign]
    reconciler._refresh_registry = refresh  # type: ignore[method-assign]
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 1, timeout=30)
    assert under_way == [True]
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))


def test_a_start_that_returns_while_a_pass_lists_the_domains_is_not_taken_for_a_second_crash(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """A pass takes the calls that returned once more after its listing; a start taken then is newer than
    the listing, which does not show its instance yet: that is no death (on real Xen a restore returned
    so, and its instance was counted as crashed again, its guests detached a second time)."""
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    calls = handle.daemon._wiring.reconciler._recovery._t.calls  # type: ignore[union-attr]
    real_start, real_domains = sim.hypervisor.start, sim.hypervisor.domains
    listing, started = threading.Event(), threading.Event()
    held: list[str] = []

    def start(name: str) -> DomainInfo:
        if name == "domnet" and not held:
            held.append(name)
            assert listing.wait(10), "no pass listed the domains while the start ran"
            info = real_start(name)
            started.set()
            return info
        return real_start(name)

    def domains() -> list[DomainInfo]:
        seen = real_domains()  # before the start returns
        if held and not listing.is_set():
            listing.set()
            assert started.wait(10)
            wait_until(lambda: ("domnet", "start") in calls._done, what="the start's result kept")
        return seen

    sim.hypervisor.start = start  # type: ignore[method-assign]
    sim.hypervisor.domains = domains  # type: ignore[method-assign]
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 1, timeout=30)
    assert events(handle, "crashed-again") == []
    assert len(events(handle, "restarted")) == 1
    assert len(events(handle, "detached")) == 1
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))


def test_a_start_taken_before_a_failed_read_still_makes_the_pass_list_again(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The second look at the calls takes a start that returned during the listing, then reads the new
    instance's readiness key; xenstore failing that once (a connection reset) must not cost the pass its
    second listing: judged on the first, which predates the instance, it counted a crash that never
    happened and detached every guest again."""
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]
    calls, guests = reconciler.calls, reconciler._recovery._t.guests
    real_start, real_domains, real_read = sim.hypervisor.start, sim.hypervisor.domains, guests.read
    listing, started = threading.Event(), threading.Event()
    new: list[int] = []
    failed: list[str] = []

    def start(name: str) -> DomainInfo:
        if name == "domnet" and not new:
            assert listing.wait(10)
            info = real_start(name)
            assert info.domid is not None
            new.append(info.domid)
            started.set()
            return info
        return real_start(name)

    def domains() -> list[DomainInfo]:
        seen = real_domains()  # before the start returns
        if ("domnet", "start") in calls._running and not listing.is_set():
            listing.set()
            assert started.wait(10)
            wait_until(lambda: ("domnet", "start") in calls._done, what="the start's result kept")
        return seen

    def read(path: str) -> bytes | None:
        if new and path == f"/local/domain/{new[0]}/data/ready" and not failed:
            failed.append(path)
            raise XenstoreUnavailable("xenstored: connection reset (one read)")
        return real_read(path)

    sim.hypervisor.start = start  # type: ignore[method-assign]
    sim.hypervisor.domains = domains  # type: ignore[method-assign]
    guests.read = read  # type: ignore[method-assign]
    sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 1, timeout=30)
    assert failed, "the read never failed"
    assert events(handle, "crashed-again") == []
    wait_until(lambda: all_connected(sim, FIVE_DEVICES))
