"""The simulated host in a process of its own, the benchmark's layout: a daemon in this process recovers
a crashed driver domain through it, and lifecycle events and toolstack errors cross the process boundary."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xenddd.adapters.hypervisor_api import LifecycleEvent, LifecycleKind
from xenddd.config.loader import parse_config
from xenddd.config.spec import Config
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, VifParams
from xenddd.service.daemon import Daemon
from xenddd.service.simulated import simulated_runtime
from xenddd.sim.remote_host import RemoteHost

TOPOLOGY = """
[xenddd]
state_dir = "{tmp}/state"
control_socket = "{tmp}/control.sock"

[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/boot/dd"
[driver_domain.restart]
backoff_base = 0
backoff_cap = 0

[[simulation.guest]]
name = "web"
vif = ["domnet"]

[[simulation.guest]]
name = "db"
vif = ["domnet"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config(TOPOLOGY.format(tmp=tmp_path), tmp_path / "xenddd.toml")


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[RemoteHost]:
    before = set(threading.enumerate())
    host = RemoteHost.start(tmp_path / "xenstored.sock")
    yield host
    host.stop()
    assert not host.socket_path.exists(), "the host's xenstored socket outlived it"
    left = [t.name for t in threading.enumerate() if t not in before and t.name.startswith("sim-")]
    assert not left, f"threads of the remote host outlived it: {left}"


def test_a_driver_domain_crashed_in_the_host_process_is_recovered_by_a_daemon_in_this_one(
    remote: RemoteHost, config: Config
) -> None:
    daemon = Daemon(config, simulated_runtime(remote, config))
    thread = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
    thread.start()
    try:
        wait_until(lambda: connected(daemon) == 2, what="both guests' vifs connected")
        dead = remote.hypervisor.domain("domnet")
        assert dead is not None and dead.domid is not None

        remote.crash("domnet")

        wait_until(lambda: bool(records(daemon, "recovered")), what="the recovery")
        [detected] = records(daemon, "detected")
        assert (detected["domid"], detected["reason"], detected["frontends"]) == (dead.domid, "crashed", 2)
        wait_until(lambda: connected(daemon) == 2, what="both vifs connected again")
        again = remote.hypervisor.domain("domnet")
        assert again is not None and again.domid not in (None, dead.domid)
        assert remote.requests_served() > 0 and remote.quota_hits() == []
    finally:
        daemon.stop()
        thread.join(10)
    assert not thread.is_alive(), "the daemon did not stop"


def test_lifecycle_events_and_toolstack_errors_cross_the_process_boundary(
    remote: RemoteHost, config: Config
) -> None:
    seen: queue.Queue[LifecycleEvent] = queue.Queue()
    remote.hypervisor.define(config.driver_domains[0])
    started = remote.hypervisor.start("domnet")  # before the watch: its event is kept for it
    remote.hypervisor.watch_lifecycle(seen.put, lambda: None)

    remote.crash("domnet")

    first, second = seen.get(timeout=10), seen.get(timeout=10)
    assert (first.name, first.kind, first.domid) == ("domnet", LifecycleKind.STARTED, started.domid)
    assert (second.name, second.kind) == ("domnet", LifecycleKind.CRASHED)
    with pytest.raises(XendddError, match=r"^nobody: no such domain$"):
        remote.hypervisor.attach("nobody", DeviceKind.VIF, 0, VifParams(mac="00:16:3e:00:00:01"), "domnet")
    remote.hypervisor.close()


def connected(daemon: Daemon) -> int:
    """Frontends the daemon's registry knows with their backend Connected (4)."""
    wiring = daemon._wiring
    entries = wiring.registry.frontends() if wiring is not None else []
    return sum(1 for f in entries if f.backend_state == 4 and not f.orphaned)


def records(daemon: Daemon, event: str) -> list[dict[str, object]]:
    return [r for r in daemon.history.since() if r["event"] == event]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
