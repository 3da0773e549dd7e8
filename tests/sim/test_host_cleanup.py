"""The simulated toolstack's delayed cleanup of a crashed domain cleans up that instance only."""

from __future__ import annotations

import time

import pytest

from xenddd.sim.domain_client import DomainClient
from xenddd.sim.socket_host import SimulatedHost
from xenddd.sim.store import XsError


def test_a_domain_started_again_before_its_crash_is_cleaned_up_keeps_running(sim_host: SimulatedHost) -> None:
    host = sim_host.host
    host.cleanup_delay = 0.05
    host.define("domnet", driver=True)
    crashed = host.start("domnet").domid
    host.crash("domnet")
    restarted = host.start("domnet").domid  # cleans up the dying instance itself, as libvirt's start does
    time.sleep(0.2)  # past the crashed instance's cleanup
    assert restarted != crashed
    assert host.domains["domnet"].domid == restarted and host.domains["domnet"].state == "running"


def test_a_crash_fires_release_domain_at_once_and_libvirts_event_only_after_the_cleanup(
    sim_host: SimulatedHost,
) -> None:
    """xenstored hears of the shutdown first; libvirt marks the domain crashed, destroys it (its nodes
    go), and queues its lifecycle event last."""
    host = sim_host.host
    host.cleanup_delay = 0.3
    heard: list[tuple[str, float]] = []
    host.listen(lambda what, domain: heard.append((what, time.monotonic())))
    releases: list[float] = []
    watcher = DomainClient(sim_host.engine, 0)
    watcher.watch("@releaseDomain", lambda path: releases.append(time.monotonic()))
    host.define("domnet", driver=True)
    domid = host.start("domnet").domid
    time.sleep(0.05)
    releases.clear()  # the watch's first firing, on registration

    crashed_at = time.monotonic()
    host.crash("domnet")
    time.sleep(0.1)
    assert releases and releases[0] - crashed_at < 0.1
    assert host.domains["domnet"].state == "crashed" and host.dom0.read(f"/local/domain/{domid}/name")
    assert [what for what, _ in heard] == ["started"]
    time.sleep(0.4)
    assert [what for what, _ in heard] == ["started", "crashed"]
    assert heard[1][1] - crashed_at >= 0.3 and host.dom0.read(f"/local/domain/{domid}/name") is None
    watcher.close()


def test_a_detach_from_a_dying_domain_fails_until_its_backend_is_gone_then_cleans_up_the_frontend(
    sim_host: SimulatedHost,
) -> None:
    """libxl's remove waits for the backend to close, which a dead domain's never does; with the backend
    directory gone it cleans up the frontend only, whether or not the dead domain is still listed."""
    host = sim_host.host
    host.kept_on_crash.add("domnet")  # xl's: its remains stay until destroyed
    host.define("domnet", driver=True)
    dead = host.start("domnet").domid
    guest = host.create_guest("web", vif=("domnet",))
    host.crash("domnet")
    assert dead in host.dying
    with pytest.raises(XsError, match="EBUSY"):
        host.detach("web", "vif", 0)
    host.dom0.rm(f"/local/domain/{dead}/backend/vif/{guest.domid}/0")
    host.detach("web", "vif", 0)
    assert host.dom0.read(f"/local/domain/{guest.domid}/device/vif/0") is None
    assert host.dom0.read(f"/libxl/{guest.domid}/device/vif/0") is None
    assert dead in host.dying and host.dom0.read(f"/local/domain/{dead}/name") == b"domnet"
