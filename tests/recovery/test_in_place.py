"""In-place reconnect on the simulated host (`reconnect = "in-place"`): a crashed driver domain comes back
with its domid, its guests' backend directories are written again from dom0's records, and no guest
device is detached or attached; when the same domid cannot be had, or a device does not reconnect so, the
recovery falls back to detach and attach; a daemon killed right after the start finishes the job in the
next one."""

from __future__ import annotations

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
    freeze,
    frontends,
    wait_until,
)
from xenddd.adapters.hypervisor_api import DomainInfo
from xenddd.config.spec import DriverDomainSpec, Readiness
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, DriverDomainKind, Frontend, VifParams
from xenddd.recovery.frontend_steps import IN_PLACE_CONFIRM, confirm_seconds
from xenddd.recovery.intent import PendingFrontend
from xenddd.registry.guest_view import GuestView
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.kernels import BackendKernel

FIVE_DEVICES = 5
IN_PLACE_TOPOLOGY = TOPOLOGY.replace(
    'name = "domnet"\nkind = "network"\nkernel = "/boot/dd"\n',
    'name = "domnet"\nkind = "network"\nkernel = "/boot/dd"\ntoolstack = "xl"\nreconnect = "in-place"\n',
    1,
)
DEVICE_CALLS: list[tuple[str, str]] = []


class CountingDeviceCalls(SimHypervisor):
    """Every detach and attach of a guest device, in DEVICE_CALLS."""

    def attach(self, guest: str, *args: Any) -> None:
        DEVICE_CALLS.append(("attach", guest))
        super().attach(guest, *args)

    def detach(self, guest: str, *args: Any) -> None:
        DEVICE_CALLS.append(("detach", guest))
        super().detach(guest, *args)


def vifs(handle: RunningDaemon) -> dict[tuple[str, str, str], dict[str, str | None]]:
    return {k: d for k, d in frontends(handle.sim).items() if k[1] == "vif"}


def started(
    start_daemon: Callable[..., RunningDaemon],
    hypervisor: type[CountingDeviceCalls] = CountingDeviceCalls,
    **options: Any,
) -> RunningDaemon:
    """The daemon settled on the in-place topology, the device calls of getting there forgotten."""
    DEVICE_CALLS.clear()
    handle = start_daemon(topology=IN_PLACE_TOPOLOGY, hypervisor=hypervisor, **options)
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="the guests' devices connected")
    DEVICE_CALLS.clear()
    return handle


def test_a_crashed_driver_domain_comes_back_with_its_domid_and_no_guest_device_is_detached(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = started(start_daemon)
    sim = handle.sim
    dead = domid(sim.host.domains["domnet"])
    before = vifs(handle)

    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")

    assert domid(sim.host.domains["domnet"]) == dead
    assert [(e["domid"], e["in_place"]) for e in events(handle, "restarted")] == [(dead, True)]
    assert DEVICE_CALLS == []  # the guests' devices were never touched
    assert vifs(handle) == before
    assert len(events(handle, "reattached")) == 3 and not events(handle, "in-place-failed")
    # the backends are laid out as libxl lays them out: the driver domain owns them, the guest reads
    guest = domid(sim.host.domains["web"])
    assert sim.host.dom0.get_perms(f"/local/domain/{dead}/backend/vif/{guest}/0") == [f"n{dead}", f"r{guest}"]

    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]
    status = next(d for d in reconciler.snapshot()["driver_domains"] if d["name"] == "domnet")
    assert status["reconnect"] == "in-place" and status["domid"] == dead

    sim.host.crash("domnet")  # and again: the same domid once more
    wait_until(lambda: len(events(handle, "recovered")) == 2, what="the second recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected again")
    assert domid(sim.host.domains["domnet"]) == dead and DEVICE_CALLS == []


def test_when_the_domid_cannot_be_had_the_devices_are_reattached_to_a_cold_start(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    class DomidTaken(CountingDeviceCalls):
        def start_with_domid(self, name: str, domid: int) -> DomainInfo:
            raise XendddError(f"{name}: starting it as domid {domid} failed: the domid is in use")

    handle = started(start_daemon, DomidTaken)
    sim = handle.sim
    dead = domid(sim.host.domains["domnet"])

    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")

    (failed,) = events(handle, "in-place-failed")
    assert "the domid is in use" in failed["error"]
    new = domid(sim.host.domains["domnet"])
    assert new != dead and [e["domid"] for e in events(handle, "restarted")] == [new]
    assert {d["backend_id"] for d in vifs(handle).values()} == {str(new)}
    assert sorted(DEVICE_CALLS) == sorted(
        [*[("detach", g) for g in ("web", "db", "cache")], *[("attach", g) for g in ("web", "db", "cache")]]
    )


def test_a_device_that_does_not_reconnect_in_place_is_detached_and_attached_while_the_others_do(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """One backend's hotplug script never finishes in the new instance (it stays InitWait): after
    reattach_timeout that device takes the detach/attach way, the others reconnected in place."""

    class OneHotplugStalls(CountingDeviceCalls):
        def start_with_domid(self, name: str, domid: int) -> DomainInfo:
            info = super().start_with_domid(name, domid)
            cache = self.host.domains["cache"].domid
            kernel = self.host.domains[name].kernel
            assert isinstance(kernel, BackendKernel)
            kernel.stalled_hotplug.add(f"/local/domain/{domid}/backend/vif/{cache}/0")
            return info

    handle = started(start_daemon, OneHotplugStalls, reattach_timeout=1.0)
    sim = handle.sim
    dead = domid(sim.host.domains["domnet"])
    sim.host.crash("domnet")

    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")
    (failed,) = events(handle, "in-place-failed")
    assert failed["guest"] == "cache" and failed["error"].startswith(
        "not reconnected in place: not Connected"
    )
    assert set(DEVICE_CALLS) == {("detach", "cache"), ("attach", "cache")}  # web's and db's untouched
    assert domid(sim.host.domains["domnet"]) == dead


def test_a_guest_named_in_reattach_guests_gets_a_new_device_while_the_others_keep_theirs(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """`reattach_guests`: that guest's vif is detached and attached (its I/O fails at the crash instead of
    waiting), the others are restored in place; each `reattached` event says which way; and so again when
    the driver domain dies a second time."""
    topology = IN_PLACE_TOPOLOGY.replace(
        'reconnect = "in-place"\n', 'reconnect = "in-place"\nreattach_guests = ["db"]\n'
    )
    DEVICE_CALLS.clear()
    handle = start_daemon(topology=topology, hypervisor=CountingDeviceCalls)
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="the guests' devices connected")
    DEVICE_CALLS.clear()
    sim = handle.sim
    dead = domid(sim.host.domains["domnet"])
    before = vifs(handle)

    for crash in (1, 2):
        sim.host.crash("domnet")
        wait_until(lambda n=crash: len(events(handle, "recovered")) == n, what=f"recovery {crash}")
        wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")
        assert domid(sim.host.domains["domnet"]) == dead
        calls = list(DEVICE_CALLS)  # only db's vif was detached and attached, once per crash
        assert calls == [("detach", "db"), ("attach", "db")] * crash
        reattached = events(handle, "reattached")[-3:]
        assert {e["guest"]: e["in_place"] for e in reattached} == {"web": True, "db": False, "cache": True}
    assert not events(handle, "in-place-failed")
    after = vifs(handle)
    assert {k for k in before if before[k] != after[k]} <= {k for k in before if k[0] == "db"}


def test_a_daemon_killed_right_after_the_start_as_the_same_domid_is_finished_by_the_next_one(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    first = started(start_daemon)
    sim = first.sim
    dead = domid(sim.host.domains["domnet"])
    freezing = freeze(first, lambda step, domain: (step, domain) == ("start_with_domid", "domnet"))
    sim.host.crash("domnet")
    wait_until(freezing.frozen.is_set, what="the first daemon to freeze after the start")

    second = start_daemon(sim=sim, topology=IN_PLACE_TOPOLOGY, hypervisor=CountingDeviceCalls)
    try:
        wait_until(lambda: len(events(second, "recovered")) == 1, timeout=30, what="the second's recovery")
        wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="every device connected")
        assert domid(sim.host.domains["domnet"]) == dead
        assert DEVICE_CALLS == []
    finally:
        second.stop()
        freezing.release.set()


def test_a_device_restored_in_place_is_given_up_on_soon_after_libxl_kills_its_hotplug_script() -> None:
    """An attach is given reattach_timeout; a device restored in place no longer than libxl's 40 s
    hotplug limit with a margin (a guest's outage), and a shorter reattach_timeout still holds."""
    vif = Frontend(3, "web", "uuid", DeviceKind.VIF, 0, "domnet", 1, VifParams(mac="00:16:3e:00:00:01"))
    for timeout, restore, expected in (
        (120.0, False, 120.0),
        (120.0, True, IN_PLACE_CONFIRM),
        (30.0, True, 30.0),
    ):
        spec = DriverDomainSpec(
            "domnet",
            frozenset({DriverDomainKind.NETWORK}),
            readiness=Readiness(reattach_timeout_seconds=timeout),
        )
        assert confirm_seconds(spec, PendingFrontend(vif, restore=restore)) == expected
    assert 40.0 < IN_PLACE_CONFIRM < 120.0


def test_devices_are_restored_in_place_no_more_at_once_than_the_lane_is_wide(
    start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore starts its hotplug script in a driver domain that has just booted; with
    max_parallel_reattach = 1 each device is restored only once the one before it connected."""
    restored: list[float] = []
    restore = GuestView.restore_backend

    def recording(view: GuestView, *args: Any) -> str | None:
        restored.append(time.time())
        return restore(view, *args)

    monkeypatch.setattr(GuestView, "restore_backend", recording)
    topology = IN_PLACE_TOPOLOGY.replace("[xenddd]\n", "[xenddd]\nmax_parallel_reattach = 1\n", 1)
    DEVICE_CALLS.clear()
    handle = start_daemon(topology=topology, hypervisor=CountingDeviceCalls)
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="the guests' devices connected")
    handle.sim.host.crash("domnet")

    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    connected = sorted(e["ts"] for e in events(handle, "reattached"))
    assert len(restored) == len(connected) == 3  # web, db and cache: domnet's
    for index, when in enumerate(restored[1:], start=1):
        assert sum(ts <= when for ts in connected) >= index, (restored, connected)
    assert not [c for c in DEVICE_CALLS if c[0] == "detach"]
