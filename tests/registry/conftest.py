"""The adapter under test, connected as dom0 to the simulator's xenstored (fixture `sim_xenstored`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xenddd.adapters.xenstore import Xenstore
from xenddd.sim.xenstored import SocketServer


@pytest.fixture
def xenstored(sim_xenstored: SocketServer) -> SocketServer:
    return sim_xenstored


@pytest.fixture
def xs(sim_xenstored: SocketServer) -> Iterator[Xenstore]:
    client = Xenstore(sim_xenstored.path, call_timeout=10, backoff_initial=0.01, backoff_max=0.2)
    yield client
    client.close()
