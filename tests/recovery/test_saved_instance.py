"""A saved instance on the simulated host: domnet, booted by its first start, is saved once ready and idle
and restored at once; every later start (a crash's recovery) restores that file instead of booting. A
domain that serves guests is never saved; a file saved under another definition is not restored, one
that will not restore is dropped and made again once the domain is idle, and a save that fails leaves the
domain booted without trying again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.recovery.conftest import (
    TOPOLOGY,
    FreezingHypervisor,
    RunningDaemon,
    all_connected,
    events,
    wait_until,
)
from xenddd.adapters.hypervisor_api import DomainInfo
from xenddd.errors import XendddError
from xenddd.sim.hypervisor import SimHypervisor

FIVE_DEVICES = 5
SAVED_TOPOLOGY = TOPOLOGY.replace(
    'name = "domnet"\nkind = "network"\nkernel = "/boot/dd"\n',
    'name = "domnet"\nkind = "network"\nkernel = "/boot/dd"\n'
    "[driver_domain.saved_instance]\nenabled = true\n",
    1,
)


class Counted(SimHypervisor):
    """The toolstack, counting domnet's boots and restores; `failing` names the calls ("save",
    "restore") that fail, each as many times as its count says."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []
        self.failing: dict[str, int] = {}

    def start(self, name: str) -> DomainInfo:
        if name == "domnet":
            self.calls.append("start")
        return super().start(name)

    def save(self, name: str, path: Path) -> None:
        self.calls.append("save")
        self._fail("save")
        super().save(name, path)

    def restore(self, name: str, path: Path) -> DomainInfo:
        self.calls.append("restore")
        self._fail("restore")
        return super().restore(name, path)

    def _fail(self, call: str) -> None:
        if self.failing.get(call, 0) > 0:
            self.failing[call] -= 1
            raise XendddError(f"domnet: {call} failed (injected)")


def started(
    start_daemon: Callable[..., RunningDaemon],
    toolstack: list[Counted],
    failing: dict[str, int] | None = None,
) -> RunningDaemon:
    """domnet saved (or its save failed) before the guests are created, as a host's driver domains start
    before its guests."""

    def counted(host: Any) -> Counted:
        toolstack.append(Counted(host))
        toolstack[-1].failing.update(failing or {})
        return toolstack[-1]

    handle = start_daemon(topology=SAVED_TOPOLOGY, hypervisor=counted, guests=False)
    done = ("saved-instance", "saved-instance-failed")
    wait_until(lambda: any(events(handle, event) for event in done), what="domnet's save")
    handle.sim.create_guests(handle.config)
    wait_until(lambda: handle.settled(FIVE_DEVICES), what="the guests' devices connected")
    return handle


def domnet_status(handle: RunningDaemon) -> dict[str, Any]:
    reconciler = handle.daemon._wiring.reconciler  # type: ignore[union-attr]
    status: dict[str, Any] = next(d for d in reconciler.snapshot()["driver_domains"] if d["name"] == "domnet")
    return status


def crash_and_recover(handle: RunningDaemon) -> None:
    before = len(events(handle, "recovered"))
    handle.sim.host.crash("domnet")
    wait_until(lambda: len(events(handle, "recovered")) > before, what="the recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES), what="every device connected")


def saved_file(handle: RunningDaemon) -> Path:
    return handle.config.settings.state_dir / "saved" / "domnet.save"


def test_the_first_start_saves_the_ready_instance_and_runs_it_restored(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    toolstack: list[Counted] = []
    handle = started(start_daemon, toolstack)
    assert toolstack[0].calls == ["start", "save", "restore"]
    [saved] = events(handle, "saved-instance")
    assert saved["saved_domid"] != saved["domid"]
    domnet = handle.sim.host.domains["domnet"]
    assert domnet.domid == saved["domid"]  # the restored instance serves
    assert handle.sim.host.saved_name(saved_file(handle)) == "domnet"
    assert not saved_file(handle).with_name("domnet.save.part").exists()


def test_a_crash_restores_the_saved_instance_instead_of_booting(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    toolstack: list[Counted] = []
    handle = started(start_daemon, toolstack)
    for _ in range(2):
        crash_and_recover(handle)
    assert toolstack[0].calls == ["start", "save", "restore", "restore", "restore"]
    assert len(events(handle, "saved-instance")) == 1


def test_the_guests_are_reattached_to_a_restored_instance_before_its_readiness_key_is_written_again(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """Restored, the instance saved ready is ready again: the attaches go while its init catches up with
    the new domid (the simulated one writes the key `restore_delay` after the restore, and its backends
    reach InitWait only then, as a real one's hotplug waits for the `xl devd` started after the key)."""
    toolstack: list[Counted] = []
    handle = started(start_daemon, toolstack)
    handle.sim.host.restore_delay = 2.0
    handle.sim.host.crash("domnet")
    wait_until(lambda: events(handle, "ready"), what="the restored instance ready")
    [ready] = events(handle, "ready")
    assert handle.sim.host.dom0.read(f"/local/domain/{ready['domid']}/data/ready") is None
    wait_until(lambda: events(handle, "recovered"), what="the recovery")
    wait_until(lambda: all_connected(handle.sim, FIVE_DEVICES), what="every device connected")
    assert toolstack[0].calls == ["start", "save", "restore", "restore"]


def test_a_restored_instance_whose_init_refuses_is_destroyed_its_file_dropped_and_the_domain_booted(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """Used as its restore returns, the instance must still write its readiness key again: its init
    could not start `xl devd` for the new domid (it says so in data/ready-error), so the guests' backends
    wait in InitWait for a hotplug that never comes. Judged as one that died, not left to time out
    device by device; the next start boots, since the same file would be restored into the same
    failure."""
    toolstack: list[Counted] = []
    handle = started(start_daemon, toolstack)
    handle.sim.host.devd_fails_next_restore.add("domnet")
    crash_and_recover(handle)
    assert toolstack[0].calls == ["start", "save", "restore", "restore", "start"]
    [refused] = events(handle, "not-ready")
    assert "xl devd did not start after a restore" in refused["error"]
    [again] = events(handle, "crashed-again")
    assert again["domid"] == refused["domid"] and again["reason"] == "destroyed"
    assert [e["error"] for e in events(handle, "saved-instance-dropped")] == [refused["error"]]
    assert not saved_file(handle).exists()
    assert handle.sim.host.domains["domnet"].domid != refused["domid"]


def test_a_file_saved_under_another_definition_is_not_restored(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    toolstack: list[Counted] = []
    handle = started(start_daemon, toolstack)
    record = saved_file(handle).with_name("domnet.definition")
    record.write_text("0" * 64 + "\n")  # as if domnet's memory or kernel had changed since
    crash_and_recover(handle)
    assert toolstack[0].calls == ["start", "save", "restore", "start"]
    assert domnet_status(handle)["saved_instance"]["file"]["current"] is False


def test_a_file_that_will_not_restore_is_dropped_and_made_again_once_the_domain_is_idle(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    toolstack: list[Counted] = []
    handle = started(start_daemon, toolstack)
    toolstack[0].failing["restore"] = 1
    crash_and_recover(handle)
    assert toolstack[0].calls == ["start", "save", "restore", "restore", "start"]
    [dropped] = events(handle, "saved-instance-dropped")
    assert "restore failed (injected)" in dropped["error"]
    assert not saved_file(handle).exists()  # the domain serves its guests again: not saved meanwhile
    assert domnet_status(handle)["saved_instance"]["file"] is None
    for guest in ("web", "db", "cache"):
        handle.sim.host.destroy(guest)
    wait_until(lambda: len(events(handle, "saved-instance")) == 2, what="domnet saved again once idle")
    assert toolstack[0].calls[-2:] == ["save", "restore"]
    assert handle.sim.host.saved_name(saved_file(handle)) == "domnet"


def test_a_domain_that_serves_guests_is_not_saved(start_daemon: Callable[..., RunningDaemon]) -> None:
    first = start_daemon()  # no saved instance: domnet serves its guests
    wait_until(lambda: first.settled(FIVE_DEVICES), what="the guests' devices connected")
    first.stop()
    toolstack: list[Counted] = []

    def counted(host: Any) -> Counted:
        toolstack.append(Counted(host))
        return toolstack[-1]

    second = start_daemon(topology=SAVED_TOPOLOGY, sim=first.sim, guests=False, hypervisor=counted)
    crash_and_recover(second)
    assert toolstack[0].calls == ["start"]
    assert not events(second, "saved-instance")
    assert domnet_status(second)["saved_instance"] == {
        "path": str(saved_file(second)),
        "file": None,
        "saving": False,
        "error": None,
    }


def test_a_save_that_fails_leaves_the_domain_booted_and_is_not_tried_again(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    toolstack: list[Counted] = []
    handle = started(start_daemon, toolstack, failing={"save": 1})
    crash_and_recover(handle)
    for guest in ("web", "db", "cache"):
        handle.sim.host.destroy(guest)
    wait_until(lambda: domnet_status(handle)["frontends"] == 0, what="domnet idle")
    assert toolstack[0].calls == ["start", "save", "start"]
    [failed] = events(handle, "saved-instance-failed")
    assert "save failed (injected)" in failed["error"]
    assert not saved_file(handle).exists()
    assert "save failed (injected)" in domnet_status(handle)["saved_instance"]["error"]


@pytest.mark.parametrize("killed_after", ["save", "restore"])
def test_a_daemon_killed_in_a_save_leaves_the_next_one_no_crash_to_recover(
    start_daemon: Callable[..., RunningDaemon], killed_after: str
) -> None:
    """Killed once the save took domnet away (its file not yet complete under its name), the next daemon
    boots domnet and saves it again; killed once the restore brought it back, it adopts that instance
    and its file. Neither sees a crash."""
    frozen: list[FreezingHypervisor] = []

    def freezing(host: Any) -> FreezingHypervisor:
        frozen.append(FreezingHypervisor(host, lambda step, name: (step, name) == (killed_after, "domnet")))
        return frozen[-1]

    first = start_daemon(topology=SAVED_TOPOLOGY, hypervisor=freezing, guests=False)
    wait_until(frozen[0].frozen.is_set, what=f"the first daemon to freeze after the {killed_after}")
    toolstack: list[Counted] = []

    def counted(host: Any) -> Counted:
        toolstack.append(Counted(host))
        return toolstack[-1]

    second = start_daemon(topology=SAVED_TOPOLOGY, sim=first.sim, guests=False, hypervisor=counted)
    try:
        wait_until(lambda: events(second, "saved-instance-resumed"), what="the cut save taken up")
        if killed_after == "save":
            wait_until(lambda: events(second, "saved-instance"), what="domnet saved again")
            assert toolstack[0].calls == ["start", "save", "restore"]
        else:
            assert toolstack[0].calls == []
        wait_until(lambda: domnet_status(second)["saved_instance"]["file"] is not None, what="the file")
        assert domnet_status(second)["saved_instance"]["file"]["current"]
        domnet = second.sim.host.domains["domnet"]
        assert domnet.domid is not None and domnet_status(second)["domid"] == domnet.domid
        assert domnet_status(second)["crashes"] == 0 and not events(second, "detected")
    finally:
        second.stop()
        frozen[0].release.set()
