"""pytest fixtures for the simulated host: one per test, on a temporary socket, torn down cleanly.

Registered by tests/conftest.py. `sim_xenstored` is a bare xenstored (engine + socket server);
`sim_host` adds the toolstack and the Hypervisor adapter; `xs` is xenddd's own xenstore adapter connected
to `sim_xenstored` as dom0 (`xenstored` is the same server under the name the adapter tests use).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.sim.socket_host import SimulatedHost
from xenddd.sim.xenstored import Xenstored
from xenddd.sim.xenstored_socket import SocketServer


@pytest.fixture
def sim_xenstored(tmp_path: Path) -> Iterator[SocketServer]:
    server = SocketServer(Xenstored(), tmp_path / "xenstored.sock")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def xenstored(sim_xenstored: SocketServer) -> SocketServer:
    return sim_xenstored


@pytest.fixture
def xs(sim_xenstored: SocketServer) -> Iterator[Xenstore]:
    client = Xenstore(sim_xenstored.path, call_timeout=10, backoff_initial=0.01, backoff_max=0.2)
    yield client
    client.close()


@pytest.fixture
def sim_host(tmp_path: Path) -> Iterator[SimulatedHost]:
    before = set(threading.enumerate())
    simulated = SimulatedHost.start(tmp_path / "xenstored.sock")
    yield simulated
    simulated.stop()
    _assert_no_leaked_threads(before)


def _assert_no_leaked_threads(before: set[threading.Thread], timeout: float = 3.0) -> None:
    """Simulator threads must end with their host: a leak would slowly poison the whole test run."""
    leaked = [t for t in threading.enumerate() if t not in before and t.name.startswith("sim-")]
    for thread in leaked:
        thread.join(timeout)
    alive = [t.name for t in leaked if t.is_alive()]
    assert not alive, f"simulator threads outlived their host: {alive}"
