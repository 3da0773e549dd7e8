"""A storage driver domain's warm standby on the simulated host: it boots without the writable disk it
serves on, which moves to it at a promotion. When the standby says its `block` script waits for a target
that is not there yet (data/feature-block-wait, as the image's does), that disk is attached beside the
guests' reattach instead of before it, and the recovery ends only once it is Connected; a disk that cannot
be attached takes the promoted instance down, and the recovery goes on cold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import pytest

from tests.recovery.conftest import (
    TOPOLOGY,
    FreezingHypervisor,
    RunningDaemon,
    all_connected,
    domid,
    events,
    frontends,
    standby_ready,
    wait_until,
)
from xenddd.config.spec import DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.recovery.phases import BLOCK_WAIT_FEATURE
from xenddd.recovery.toolstack_calls import ToolstackCalls
from xenddd.sim.hypervisor import SimHypervisor

FIVE_DEVICES = 5
STORE_STANDBY = TOPOLOGY.replace(
    'name = "domstore"\nkind = "block"\nkernel = "/boot/dd"\n',
    'name = "domstore"\nkind = "block"\nkernel = "/boot/dd"\ntoolstack = "xl"\n'
    '[[driver_domain.disk]]\npath = "/dev/vg/store"\nvdev = "xvdb"\n'
    "[driver_domain.standby]\nenabled = true\n",
    1,
)


def store_standby_ready(handle: RunningDaemon) -> int | None:
    return standby_ready(handle, "domstore")


def vbds_connected_to(handle: RunningDaemon, backend: int) -> bool:
    vbds = [d for key, d in frontends(handle.sim).items() if key[1] == "vbd"]
    return len(vbds) == 2 and all(
        d["backend_id"] == str(backend) and d["state"] == d["backend_state"] == "4" for d in vbds
    )


class MovedDisks(SimHypervisor):
    """Records each ensure_passthrough of domstore after the crash; the one that attaches the disks
    returns once `release()` says so (or fails with `error`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.armed = threading.Event()
        self.calls: list[bool] = []
        self.entered = threading.Event()
        self.released = threading.Event()
        self.error: str | None = None

    def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
        if spec.name != "domstore" or not self.armed.is_set():
            return
        self.calls.append(disks)
        if disks:
            self.entered.set()
            assert self.released.wait(10), "never released"
            if self.error is not None:
                raise XendddError(self.error)


def started(
    start_daemon: Callable[..., RunningDaemon], feature: bool
) -> tuple[RunningDaemon, MovedDisks, int]:
    handle = start_daemon(topology=STORE_STANDBY, hypervisor=MovedDisks, healthy_uptime=0.0)
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="the guests' devices connected")
    wait_until(lambda: store_standby_ready(handle) is not None, what="the standby ready")
    standby = store_standby_ready(handle)
    assert standby is not None
    if feature:
        handle.sim.host.dom0.write(f"/local/domain/{standby}/{BLOCK_WAIT_FEATURE}", b"1")
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, MovedDisks)
    hv.armed.set()
    return handle, hv, standby


def test_the_disk_of_a_standby_that_waits_for_it_is_attached_beside_the_guests_reattach(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The guests' disks reach the promoted standby while its own disk's attach is still under way, and
    the recovery is over only once that attach has returned."""
    handle, hv, standby = started(start_daemon, feature=True)
    handle.sim.host.crash("domstore")
    wait_until(hv.entered.is_set, what="the disks' attach")
    wait_until(lambda: vbds_connected_to(handle, standby), what="the guests' disks on the promoted standby")
    assert not events(handle, "recovered")
    hv.released.set()
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    assert hv.calls == [False, True]  # the promotion left the disks to a call of their own
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    (attached,) = events(handle, "disks-attached")
    assert attached["ts"] <= events(handle, "recovered")[0]["ts"]
    assert domid(handle.sim.host.domains["domstore"]) == standby
    assert all_connected(handle.sim, FIVE_DEVICES)


def test_a_disks_attach_that_returns_before_the_promotion_is_taken_is_not_made_again(
    start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promotion submits its disks' attach as it ends, so that attach can return (and wake a pass)
    before the promotion's own result is taken: that pass must leave the attach's result for the one that
    knows the disks follow, not drop it and make the attach again."""
    run = ToolstackCalls._run

    def promotion_returning_late(calls: ToolstackCalls, key: Hashable, call: Callable[[], Any]) -> None:
        def late() -> Any:
            value = call()
            if key == ("domstore", "start"):
                time.sleep(0.5)
            return value

        run(calls, key, late)

    monkeypatch.setattr(ToolstackCalls, "_run", promotion_returning_late)
    handle, hv, standby = started(start_daemon, feature=True)
    hv.released.set()
    handle.sim.host.crash("domstore")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    assert hv.calls == [False, True]
    assert len(events(handle, "disks-attached")) == 1
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]


def test_without_the_standby_saying_it_waits_its_disk_is_attached_before_the_guests_disks(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle, hv, standby = started(start_daemon, feature=False)
    handle.sim.host.crash("domstore")
    wait_until(hv.entered.is_set, what="the disks' attach")
    assert not any(d["backend_id"] == str(standby) for k, d in frontends(handle.sim).items() if k[1] == "vbd")
    hv.released.set()
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    assert hv.calls == [True]  # within the promotion
    assert not events(handle, "disks-attached")
    wait_until(lambda: vbds_connected_to(handle, standby), what="the guests' disks on the promoted standby")


def test_a_disk_that_cannot_be_attached_takes_the_promoted_standby_down_and_the_recovery_goes_on_cold(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The attach fails once the guests' disks have connected to the promoted standby: the incident goes
    on with the instance's death, and does not end because every guest's device was confirmed."""
    handle, hv, standby = started(start_daemon, feature=True)
    hv.error = "libxl_device_disk_add failed: device /dev/vg/store is in use"
    handle.sim.host.crash("domstore")
    wait_until(hv.entered.is_set, what="the disks' attach")
    wait_until(lambda: vbds_connected_to(handle, standby), what="the guests' disks on the promoted standby")
    hv.released.set()
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES), what="every device connected")
    (failed,) = events(handle, "disks-failed")
    assert failed["domid"] == standby and "in use" in failed["error"]
    assert events(handle, "crashed-again") and events(handle, "restarted")
    assert [e["domid"] for e in events(handle, "recovered")] != [standby]
    new = domid(handle.sim.host.domains["domstore"])
    assert new != standby
    assert vbds_connected_to(handle, new)


class FreezesAtTheDisks(FreezingHypervisor):
    """As a SIGKILL leaves the daemon while the promoted standby's disk is being attached, once `recorded`
    says the daemon has saved the promotion (the attach starts as the promotion ends, before that)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded = threading.Event()

    def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
        if spec.name == "domstore" and disks:
            assert self.recorded.wait(10), "the promotion was never recorded"
            self.frozen.set()
            self.release.wait()


def test_a_daemon_killed_while_the_disk_is_attached_is_followed_by_one_that_attaches_it_again(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The attach is lost with its daemon; the record says the disk is still to come, and the next
    daemon attaches it (ensure_passthrough keeps what is there) before it calls the recovery over."""
    first, _, standby = started(start_daemon, feature=True)
    freezing = FreezesAtTheDisks(first.sim.host, lambda _step, _domain: False)
    reconciler = first.daemon._wiring.reconciler  # type: ignore[union-attr]
    first.daemon.runtime.hypervisor = freezing
    reconciler._hv = reconciler._recovery._t.hypervisor = freezing
    readiness = len(events(first, "ready"))
    first.sim.host.crash("domstore")
    wait_until(lambda: len(events(first, "ready")) > readiness, what="the promoted standby ready")
    freezing.recorded.set()
    wait_until(freezing.frozen.is_set, what="the first daemon to freeze in the disks' attach")

    second = start_daemon(sim=first.sim, topology=STORE_STANDBY, hypervisor=MovedDisks)
    again = second.daemon.runtime.hypervisor
    assert isinstance(again, MovedDisks)
    again.armed.set()
    again.released.set()
    try:
        wait_until(lambda: events(second, "recovered"), what="the second daemon's recovery")
        assert again.calls == [True] and events(second, "disks-attached")
        assert domid(first.sim.host.domains["domstore"]) == standby
        wait_until(
            lambda: vbds_connected_to(second, standby), what="the guests' disks on the promoted standby"
        )
    finally:
        second.stop()
        freezing.release.set()


@pytest.mark.parametrize("feature", [True, False])
def test_the_writable_disk_moves_to_the_standby_only_once_the_remains_destroy_has_released_it(
    start_daemon: Callable[..., RunningDaemon], feature: bool
) -> None:
    """The remains hold the disk until their destroy has torn their devices down (dom0's `block` script
    refuses a disk another domain has: "in use by another guest's disk"), so the standby of a storage
    domain takes the name only once that destroy has freed it. Here the destroy takes a moment."""

    class DestroysSlowly(MovedDisks):
        held_by_remains: list[bool] = []
        dead: int | None = None

        def destroy(self, name: str, domid: int | None = None) -> None:
            if domid is not None:
                time.sleep(0.5)
            super().destroy(name, domid)

        def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
            if spec.name == "domstore" and disks and self.armed.is_set():
                alive = [d.domid for d in self.host.domains.values()]
                self.held_by_remains.append(self.dead in alive)
            super().ensure_passthrough(spec, disks)

    handle = start_daemon(topology=STORE_STANDBY, hypervisor=DestroysSlowly, healthy_uptime=0.0)
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="the guests' devices connected")
    wait_until(lambda: store_standby_ready(handle) is not None, what="the standby ready")
    standby = store_standby_ready(handle)
    hv = handle.daemon.runtime.hypervisor
    assert isinstance(hv, DestroysSlowly)
    if feature:
        handle.sim.host.dom0.write(f"/local/domain/{standby}/{BLOCK_WAIT_FEATURE}", b"1")
    hv.dead = domid(handle.sim.host.domains["domstore"])
    hv.released.set()
    hv.armed.set()
    handle.sim.host.crash("domstore")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    assert [e["domid"] for e in events(handle, "promoted")] == [standby]
    assert hv.held_by_remains == [False]
