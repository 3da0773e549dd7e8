"""A filtering driver domain (domfw) whose uplink vif the NIC's driver domain (domnet) serves, and a guest
behind each: the three cascades of a crash — upstream, downstream, both — on the simulated host."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.recovery.conftest import RunningDaemon, freeze, wait_until
from xenddd.adapters.hypervisor_api import DomainInfo
from xenddd.errors import XendddError
from xenddd.sim.hypervisor import SimHypervisor
from xenddd.sim.socket_host import SimulatedHost

CHAIN = """
[xenddd]
state_dir = "{tmp}/state"
control_socket = "{tmp}/control.sock"

[[driver_domain]]
name = "domfw"
kind = "network"
kernel = "/boot/dd"
[[driver_domain.vif]]
backend = "domnet"
bridge = "br0"
[driver_domain.restart]
backoff_base = 0.05
backoff_cap = 0.2
[driver_domain.readiness]
reattach_timeout = {reattach_timeout}

[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/boot/dd"
[driver_domain.restart]
max_restarts = {max_restarts}
backoff_base = 0.05
backoff_cap = 0.2
healthy_uptime = {healthy_uptime}
[driver_domain.readiness]
reattach_timeout = {reattach_timeout}

[[simulation.guest]]
name = "app"
vif = ["domfw"]

[[simulation.guest]]
name = "web"
vif = ["domnet"]
"""


def vifs(sim: SimulatedHost) -> dict[str, tuple[str | None, str | None, str | None, str | None]]:
    """domain name → its vif 0 as its own nodes show it: (backend domain, MAC, state, backend state)."""
    dom0 = sim.host.dom0
    found = {}
    for domain in list(sim.host.domains.values()):
        if domain.domid is None:
            continue
        path = f"/local/domain/{domain.domid}/device/vif/0"
        backend = (dom0.read(f"{path}/backend") or b"").decode()
        if not backend:
            continue
        found[domain.name] = (
            _text(dom0.read(f"{path}/backend-id")),
            _text(dom0.read(f"{path}/mac")),
            _text(dom0.read(f"{path}/state")),
            _text(dom0.read(f"{backend}/state")),
        )
    return found


def _text(raw: bytes | None) -> str | None:
    return raw.decode() if raw is not None else None


def connected(sim: SimulatedHost) -> bool:
    """domfw's uplink, app's and web's vifs: all Connected to the running instance of their backend."""
    seen = vifs(sim)
    serving = {"domfw": "domnet", "app": "domfw", "web": "domnet"}
    return seen.keys() == serving.keys() and all(
        seen[name][0] == str(sim.host.domains[backend].domid) and seen[name][2:] == ("4", "4")
        for name, backend in serving.items()
    )


def uplinks_in_domnet(sim: SimulatedHost) -> list[str]:
    domnet, domfw = sim.host.domains["domnet"].domid, sim.host.domains["domfw"].domid
    return sim.host.dom0.directory(f"/local/domain/{domnet}/backend/vif/{domfw}")


def events(handle: RunningDaemon, name: str, dd: str | None = None) -> list[dict[str, object]]:
    return [
        r
        for r in handle.daemon.history.since()
        if r["event"] == name and (dd is None or r.get("driver_domain") == dd)
    ]


def test_the_filtering_domain_starts_after_its_upstream_with_its_uplink(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = start_daemon(topology=CHAIN)
    wait_until(lambda: connected(handle.sim), what="uplink, app and web connected")
    assert uplinks_in_domnet(handle.sim) == ["0"]
    status = handle.daemon._wiring.reconciler.snapshot()  # type: ignore[union-attr]
    assert {d["name"]: d["upstreams"] for d in status["driver_domains"]} == {
        "domfw": ["domnet"],
        "domnet": [],
    }


def test_a_crashed_upstream_gets_the_filtering_domains_uplink_back_and_leaves_it_running(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = start_daemon(topology=CHAIN)
    sim = handle.sim
    wait_until(lambda: connected(sim), what="the chain connected")
    before, fw_domid = vifs(sim), sim.host.domains["domfw"].domid

    sim.host.crash("domnet")

    wait_until(lambda: len(events(handle, "recovered", "domnet")) == 1, what="domnet recovered")
    wait_until(lambda: connected(sim), what="the chain connected again")
    assert sim.host.domains["domfw"].domid == fw_domid  # a guest of domnet like any other
    assert vifs(sim)["domfw"][1] == before["domfw"][1] and uplinks_in_domnet(sim) == ["0"]
    assert vifs(sim)["app"] == before["app"]  # behind domfw: untouched
    assert not events(handle, "detected", "domfw")


def test_a_crashed_filtering_domain_comes_back_with_its_uplink_and_then_its_clients(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = start_daemon(topology=CHAIN)
    sim = handle.sim
    wait_until(lambda: connected(sim), what="the chain connected")
    before, net_domid = vifs(sim), sim.host.domains["domnet"].domid

    sim.host.crash("domfw")

    wait_until(lambda: len(events(handle, "recovered", "domfw")) == 1, what="domfw recovered")
    wait_until(lambda: connected(sim), what="the chain connected again")
    assert sim.host.domains["domnet"].domid == net_domid
    after = vifs(sim)
    assert after["domfw"][1] == before["domfw"][1] and after["app"][1] == before["app"][1]
    assert uplinks_in_domnet(sim) == ["0"]  # from domfw's definition, not attached a second time
    assert not events(handle, "detected", "domnet")


class SlowNetStart(SimHypervisor):
    """A toolstack whose start of domnet takes a while, as a real one does: long enough for a start of
    domfw beside it to fail (its uplink's backend domain is not there yet)."""

    def start(self, name: str) -> DomainInfo:
        if name == "domnet":
            time.sleep(0.5)
        return super().start(name)


def test_both_crashing_together_restart_in_dependency_order_and_reattach_each_client_once(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    handle = start_daemon(topology=CHAIN, hypervisor=SlowNetStart)
    sim = handle.sim
    wait_until(lambda: connected(sim), what="the chain connected")
    before = vifs(sim)

    sim.host.crash("domfw")
    sim.host.crash("domnet")

    wait_until(lambda: len(events(handle, "recovered")) == 2, what="both recovered")
    wait_until(lambda: connected(sim), what="the chain connected again")
    after = vifs(sim)
    assert {name: device[1] for name, device in after.items()} == {n: d[1] for n, d in before.items()}
    assert uplinks_in_domnet(sim) == ["0"]
    restarted = [r["driver_domain"] for r in events(handle, "restarted")]
    assert restarted == ["domnet", "domfw"]
    assert [r["upstreams"] for r in events(handle, "waiting-upstream")] == [["domnet"]]
    assert not events(handle, "reattach-failed") and not events(handle, "restart-failed")


def test_a_daemon_killed_mid_cascade_is_finished_by_the_next_one(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The first daemon freezes for good right after it restarted domnet, before domfw's turn — as a
    SIGKILL there leaves things (see test_recovery_end_to_end); a second daemon finishes the cascade."""
    first = start_daemon(topology=CHAIN)
    sim = first.sim
    wait_until(lambda: connected(sim), what="the chain connected")
    freezing = freeze(first, lambda step, domain: (step, domain) == ("start", "domnet"))
    sim.host.crash("domfw")
    sim.host.crash("domnet")
    wait_until(freezing.frozen.is_set, what="the first daemon to freeze after domnet's start")

    second = start_daemon(topology=CHAIN, sim=sim)
    try:
        wait_until(lambda: len(events(second, "recovered")) == 2, timeout=30, what="both recovered")
        wait_until(lambda: connected(sim), what="the chain connected again")
        assert uplinks_in_domnet(sim) == ["0"]
        assert not events(second, "reattach-failed") and not events(second, "restart-failed")
    finally:
        second.stop()
        freezing.release.set()


def test_a_restarted_filtering_domain_whose_uplink_hotplug_stalls_gets_it_attached_again(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """domnet's hotplug script for domfw's new uplink never finishes (its `xl devd` killed it): the uplink
    sits in InitWait, which no guest's recovery looks at; after `reattach_timeout` it is detached and
    attached again, with its MAC and devid, and the chain connects."""
    handle = start_daemon(topology=CHAIN, reattach_timeout=1.0)
    sim = handle.sim
    wait_until(lambda: connected(sim), what="the chain connected")
    before = vifs(sim)
    sim.host.stall_hotplug_once.add(("domnet", "domfw"))

    sim.host.crash("domfw")

    wait_until(lambda: len(events(handle, "recovered", "domfw")) == 1, what="domfw recovered")
    wait_until(lambda: connected(sim), what="the uplink connected again")
    assert vifs(sim)["domfw"][1] == before["domfw"][1] and uplinks_in_domnet(sim) == ["0"]
    wait_until(lambda: events(handle, "own-device-connected", "domfw"), what="the uplink's connection said")
    stalled = events(handle, "own-device-stalled", "domfw")
    assert (stalled[0]["upstream"], stalled[0]["kind"], stalled[0]["devid"]) == ("domnet", "vif", 0)
    assert "not Connected within 1 s" in str(stalled[0]["reason"])
    # A slow machine may need more than the 1 s for the second handshake too: one more attempt, counted.
    assert [e["attempts"] for e in events(handle, "own-device-connected", "domfw")] == [len(stalled)]


def test_an_uplink_whose_backend_gave_up_is_attached_again_without_waiting(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The upstream's `xl devd` removed the backend of domfw's uplink (its hotplug missed libxl's limit):
    nothing will ever connect it, so it is attached again at once, not after `reattach_timeout`."""
    handle = start_daemon(topology=CHAIN, reattach_timeout=600.0)
    sim = handle.sim
    wait_until(lambda: connected(sim), what="the chain connected")
    domnet, domfw = sim.host.domains["domnet"].domid, sim.host.domains["domfw"].domid

    sim.host.dom0.rm(f"/local/domain/{domnet}/backend/vif/{domfw}/0")

    wait_until(lambda: connected(sim), timeout=10, what="the uplink connected again")
    [stalled] = events(handle, "own-device-stalled", "domfw")
    assert stalled["reason"] == "its backend gave up (absent)"
    assert not events(handle, "detected")


def test_an_uplink_detached_but_not_attached_again_is_not_forgotten_by_the_next_daemon(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    """The detach of a stalled uplink worked and its attach failed; no `/libxl` record names the device
    any more, yet the daemon after this one attaches it again: the intent was saved before the detach."""
    failing = {"on": True}

    class UplinkAttachFails(SimHypervisor):
        def attach(self, guest: str, *args: Any, **kwargs: Any) -> None:
            if guest == "domfw" and failing["on"]:
                raise XendddError("libxl: unable to add device")
            super().attach(guest, *args, **kwargs)

    first = start_daemon(topology=CHAIN, reattach_timeout=0.5, hypervisor=UplinkAttachFails)
    sim = first.sim
    wait_until(lambda: connected(sim), what="the chain connected")
    sim.host.stall_hotplug_once.add(("domnet", "domfw"))
    sim.host.crash("domfw")
    wait_until(lambda: events(first, "own-device-stalled", "domfw"), what="the stalled uplink detached")
    wait_until(lambda: not uplinks_in_domnet(sim), what="the uplink gone (its attach failed)")
    first.stop()
    failing["on"] = False

    second = start_daemon(topology=CHAIN, reattach_timeout=0.5, sim=sim)
    wait_until(lambda: connected(sim), what="the uplink attached by the next daemon")
    assert uplinks_in_domnet(sim) == ["0"]
    *_first, by_second = events(second, "own-device-stalled", "domfw")  # one history for both daemons
    assert by_second["reason"] == "its backend gave up (absent)"
