"""A simulated xenstored's clients: each connection's domain, watches and open transactions, and the
fault switches tests flip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from xenddd.sim.store import (
    Perm,
    Transaction,
)

log = logging.getLogger(__name__)


EventSink = Callable[[str, str], None]

NodePerms = tuple[Perm, ...]


@dataclass
class Faults:
    """Switches the tests and the demo flip to make the simulated xenstored misbehave like a real one can."""

    hang_ops: set[int] = field(default_factory=set)  # never answer these operations
    drop_events: bool = False  # watch events are lost (as during a missed wake-up)
    event_delay: float = 0.0  # seconds before each watch event is sent


@dataclass
class Watch:
    given: str  # as the client wrote it (relative paths are reported back relative)
    path: str  # absolute, or a special @ path
    token: str


class Connection:
    """One client: its domain, watches and open transactions."""

    def __init__(self, domid: int, sink: EventSink) -> None:
        self.domid = domid
        self.sink = sink
        self.watches: dict[tuple[str, str], Watch] = {}  # by (absolute path, token)
        self.transactions: dict[int, Transaction] = {}

    def home(self) -> str:
        return f"/local/domain/{self.domid}"


def relative_path(path: str, watch: Watch, conn: Connection) -> str:
    if watch.given.startswith("/") or path.startswith("@"):
        return path
    prefix = conn.home() + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path
