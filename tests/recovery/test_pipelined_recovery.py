"""The recovery is pipelined: the restart does not wait for the stale frontends' detaches, a detach waits
for the toolstack's cleanup of the dead instance instead of failing against it, a healthy domain is
restarted at once, and driver domains that die together are restarted together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.recovery.conftest import (
    TOPOLOGY,
    RunningDaemon,
    all_connected,
    events,
    wait_until,
)
from xenddd.errors import XendddError
from xenddd.hints import DomainHint, Hint, XenstoreHint
from xenddd.sim.host import SimHost
from xenddd.sim.hypervisor import SimHypervisor

FIVE_DEVICES = 5


def test_the_restart_begins_while_the_stale_frontends_are_still_being_detached(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    detaching = threading.Event()
    release = threading.Event()

    class SlowDetach(SimHypervisor):
        def detach(self, *args: Any, **kwargs: Any) -> None:
            detaching.set()
            release.wait(20)
            super().detach(*args, **kwargs)

    handle = start_daemon(hypervisor=SlowDetach)
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    handle.sim.host.crash("domnet")
    wait_until(detaching.is_set, what="a detach under way")
    wait_until(lambda: events(handle, "restarted"), what="the restart, while the detaches hang")
    assert not events(handle, "detached")
    release.set()
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES))


def test_a_device_connected_before_its_attach_returns_is_reattached_and_the_late_return_harms_nothing(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """On a loaded real host an `xl network-attach` outlived its device's handshake by minutes: the device
    is judged by xenstore, so the recovery ends without it; the late return is taken outside the
    incident, and the next crash reattaches the device again."""
    hanging = threading.Event()
    release = threading.Event()

    class HangingAttach(SimHypervisor):
        def attach(self, *args: Any, **kwargs: Any) -> None:
            super().attach(*args, **kwargs)
            if not release.is_set():
                hanging.set()
                release.wait(30)

    handle = start_daemon(hypervisor=HangingAttach)
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    handle.sim.host.crash("domnet")
    wait_until(hanging.is_set, what="an attach that does not return")
    wait_until(lambda: events(handle, "recovered"), what="the recovery, while the attaches hang")
    assert len(events(handle, "reattached")) == 3  # the three vifs; the two vbds are domstore's
    release.set()
    wait_until(
        lambda: not handle.daemon._wiring.reconciler.calls.keys(lambda _k: True), what="late returns taken"
    )  # type: ignore[union-attr]

    handle.sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) == 2, what="the second recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES))


def test_the_detached_phase_is_reported_when_the_detaches_end_not_when_the_attaches_after_them_return(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The phase goes to the events and to MTTR tables: one frontend's detach ends only after another
    one's attach began (as behind a promoted standby, ready at once), and that attach hangs; the phase
    ends with the last detach all the same."""
    crashed, attaching, release = threading.Event(), threading.Event(), threading.Event()
    first = threading.Lock()

    class LateDetachHangingAttach(SimHypervisor):
        def detach(self, *args: Any, **kwargs: Any) -> None:
            if crashed.is_set() and first.acquire(blocking=False):
                attaching.wait(20)
            super().detach(*args, **kwargs)

        def attach(self, *args: Any, **kwargs: Any) -> None:
            super().attach(*args, **kwargs)
            if crashed.is_set():
                attaching.set()
                release.wait(30)

    handle = start_daemon(hypervisor=LateDetachHangingAttach)
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    crashed.set()
    handle.sim.host.crash("domnet")
    wait_until(attaching.is_set, what="an attach under way, with a detach still to end")
    wait_until(lambda: events(handle, "detached"), what="the detached phase, while the attaches hang")
    release.set()
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES))


def test_a_failing_detach_is_retried_without_holding_the_restart(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    failures = {"left": 2}

    class FlakyDetach(SimHypervisor):
        def detach(self, *args: Any, **kwargs: Any) -> None:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise XendddError("libxenlight failed to detach network device")
            super().detach(*args, **kwargs)

    handle = start_daemon(hypervisor=FlakyDetach)
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    handle.sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    restarted, detached = events(handle, "restarted")[0], events(handle, "detached")[0]
    assert failures["left"] == 0
    assert restarted["seq"] < detached["seq"]  # the retries came after the restart was already done
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES))


def test_the_restart_and_the_detaches_wait_for_the_toolstack_to_clean_up_the_dead_instance(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """libvirt cleans up a crashed domain on its own: a detach before that fails against the dying
    backend, and a start would race the cleanup; both wait for it instead."""
    detach_errors: list[str] = []
    started_while_dying: list[str] = []

    class CountingDetach(SimHypervisor):
        def detach(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().detach(*args, **kwargs)
            except XendddError as exc:
                detach_errors.append(str(exc))
                raise

        def start(self, name: str) -> Any:
            if self.host.domains[name].domid in self.host.dying:
                started_while_dying.append(name)
            return super().start(name)

    handle = start_daemon(hypervisor=CountingDetach, max_restarts=1)
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    handle.sim.host.cleanup_delay = 0.5
    handle.sim.host.crash("domstore")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES))
    assert detach_errors == [] and started_while_dying == []


def test_a_crash_is_detected_on_release_domain_before_libvirt_has_cleaned_up_and_said_so(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """xenstored's @releaseDomain comes first; libvirt lists the domain as crashed while it destroys it,
    and sends its lifecycle event only after that (here 3 s later): the crash is seen at the first."""
    handle = start_daemon()
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]
    detecting: list[list[Hint]] = []  # the hints of the pass that opened the incident
    passes: list[Sequence[Hint]] = []
    real_reconcile = reconciler.reconcile

    def reconcile(hints: Sequence[Hint] = ()) -> float | None:
        before = len(events(handle, "detected"))
        wake = real_reconcile(hints)
        if len(events(handle, "detected")) > before:
            detecting.append(list(hints))
        passes.append(hints)
        return wake

    reconciler.reconcile = reconcile  # type: ignore[method-assign]
    # a pass through the wrapper first: the start's hints still queued (its domains' lifecycle events)
    # would otherwise come along with the crash's, and a pass then running would go unrecorded
    handle.daemon.hints.put(XenstoreHint("@introduceDomain"))
    wait_until(lambda: bool(passes) and handle.daemon.hints.empty(), what="the start's hints taken")
    handle.sim.host.cleanup_delay = 3.0
    handle.sim.host.crash("domnet")
    # (the pass that records `detected` returns a moment later)
    wait_until(lambda: bool(detecting), what="the crash detected")
    assert handle.sim.host.dying  # libvirt has not cleaned it up, nor said a word
    [hints] = detecting
    assert XenstoreHint("@releaseDomain") in hints and not any(isinstance(h, DomainHint) for h in hints)
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES))


def test_a_healthy_domain_is_restarted_at_once_and_a_crash_loop_backs_off(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = start_daemon(healthy_uptime=0.5, max_restarts=10)
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    time.sleep(0.6)  # domnet has now run healthy
    for crash in range(3):
        handle.sim.host.crash("domnet")
        wait_until(lambda n=crash: len(events(handle, "recovered")) == n + 1, what=f"recovery {crash}")
    delays = [e["delay"] for e in events(handle, "restart-scheduled")]
    assert delays[0] == 0.0  # after a healthy run
    assert delays[1] > 0.0  # it crashed again within healthy_uptime: a loop
    assert delays[2] > delays[1] * 0.6  # and the loop's backoff grows (within jitter)


def many_domains(count: int) -> str:
    head = '[xenddd]\nstate_dir = "{tmp}/state"\ncontrol_socket = "{tmp}/control.sock"\n'
    domain = (
        '\n[[driver_domain]]\nname = "dd{n}"\nkind = "network"\nkernel = "/boot/dd"\n'
        "[driver_domain.restart]\nmax_restarts = {{max_restarts}}\nhealthy_uptime = {{healthy_uptime}}\n"
        "[driver_domain.readiness]\nreattach_timeout = {{reattach_timeout}}\n"
    )
    guests = "".join(f'\n[[simulation.guest]]\nname = "g{n}"\nvif = ["dd{n}"]\n' for n in range(count))
    return head + "".join(domain.format(n=n) for n in range(count)) + guests


def concurrent_starts(count: int) -> Callable[[SimHost], SimHypervisor]:
    """A toolstack whose restarts wait for each other: they only all return if they all run at once."""
    barrier = threading.Barrier(count, timeout=10)
    armed = threading.Event()

    class Concurrent(SimHypervisor):
        def start(self, name: str) -> Any:
            if armed.is_set():
                barrier.wait()
            return super().start(name)

    Concurrent.armed = armed  # type: ignore[attr-defined]
    return Concurrent


@pytest.mark.parametrize("count", [2, 8])
def test_driver_domains_that_crash_together_are_restarted_together(
    start_daemon: Callable[..., RunningDaemon], count: int
) -> None:
    factory = concurrent_starts(count)
    handle = start_daemon(topology=many_domains(count), hypervisor=factory)
    wait_until(lambda: handle.settled(count), what=f"{count} guests connected")
    factory.armed.set()  # type: ignore[attr-defined]
    for n in range(count):
        handle.sim.host.crash(f"dd{n}")
    wait_until(lambda: len(events(handle, "recovered")) == count, timeout=30, what=f"{count} recoveries")
    assert not events(handle, "restart-failed")  # a start that waited alone would break the barrier
    wait_until(lambda: all_connected(handle.sim, count))


def test_a_domain_restarted_by_someone_else_while_xenddd_was_down_is_adopted_not_counted_as_a_crash(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    first = start_daemon(guests=False)
    wait_until(lambda: events(first, "daemon-started"), what="the first daemon ready")
    old = first.sim.host.domains["domnet"].domid
    first.stop()
    first.sim.host.destroy("domnet")
    first.sim.host.start("domnet")
    second = start_daemon(sim=first.sim, guests=False)
    wait_until(lambda: events(second, "adopted"), what="the new instance adopted")
    (adopted,) = events(second, "adopted")
    assert adopted["replaced"] == old and adopted["domid"] == first.sim.host.domains["domnet"].domid
    assert not events(second, "detected")
    record = second.daemon._wiring.reconciler._records["domnet"]  # type: ignore[union-attr]
    assert record.crashes == 0 and record.incident is None


def test_a_driver_domain_that_gets_through_one_handshake_at_a_time_gets_its_devices_one_at_a_time(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The new domnet's `xl devd` kills every hotplug script started while another device is still in
    its handshake (a driver domain just booted on a slow host; on the test bed every script of a 10-vif
    recovery was killed so). Attaching all six vifs again each round would lose five, then four, ... and
    park the last after `reattach_attempts`; halving the handshake window on each give-up brings them
    back one by one, within their attempts."""
    extra = "".join(f'\n[[simulation.guest]]\nname = "n{i}"\nvif = ["domnet"]\n' for i in range(3))
    handle = start_daemon(topology=TOPOLOGY + extra)
    sim = handle.sim
    wait_until(lambda: handle.settled(8))
    sim.host.hotplug_slots["domnet"] = 1
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), timeout=60, what="domnet's recovery")
    assert all_connected(sim, 8)
    assert not events(handle, "parked")
    assert events(handle, "reattach-failed")  # the slow driver domain was met
