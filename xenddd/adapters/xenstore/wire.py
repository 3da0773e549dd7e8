"""The wire under xenddd's xenstore client: pyxs's transport and router, with its defects contained.

pyxs gives us the wire format (`Packet`, `Op`), the Unix-socket transport and a router thread that matches
replies to requests. What it gets wrong, and what this package does instead:

- A request in flight when the connection drops waits forever: the router thread dies and `RVar.get()` has
  no timeout. Here every call waits on the reply with a deadline, and the router announces its own death
  (`XenstoreRouter.__call__`) by failing every pending request at once and waking the watch stream.
- `Router.terminate()` joins the router without a timeout and cannot interrupt a half-read reply; we shut
  the socket down instead, which makes the router's `recv` fail, and join with a bound.
- Request ids come from a process-wide counter that is not wrapped at 2**32 (`struct.error` after that);
  each connection here numbers its own requests modulo 2**32.
- `check_watch_path` rejects `@releaseDomain/<domid>`, `execute_command` rejects empty values, and a
  `Client` holds one transaction id for all threads: requests are built and sent directly, bypassing them.
- There is no RESET_WATCHES: after a reconnect the server has forgotten our watches anyway, so all of them
  are registered again and the stream yields `Reconnected` (events during the gap are lost: resync).

A call that times out leaves the connection in an unknown state (xenstored answers in order, so a hung reply
blocks every later one): the connection is dropped and the next call or the watch stream reconnects.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from pyxs._internal import Packet
from pyxs.client import Router, RVar
from pyxs.connection import UnixSocketConnection
from pyxs.exceptions import ConnectionError as PyXSConnectionError

from xenddd.adapters.xenstore.errors import XenstoreUnavailable

log = logging.getLogger(__name__)

MAX_PAYLOAD = 4096
NUL = b"\0"
ERRNO_BY_NAME = {name: code for code, name in errno.errorcode.items()}
HEADER = Packet._struct
MAX_REPLY = 1 << 20
DIRECTORY_PART = 22  # Xen >= 4.15; not in pyxs's Op table


class Reply(NamedTuple):
    op: int
    rq_id: int
    tx_id: int
    size: int
    payload: bytes


class ReplyConnection(UnixSocketConnection):  # type: ignore[misc]
    """pyxs's connection, minus its reply validation: `Packet` refuses ops it does not know (such as
    DIRECTORY_PART's reply) and payloads above 4096 bytes, and a refusal there kills the router thread."""

    def recv(self) -> Reply:
        if not self.is_connected:
            raise PyXSConnectionError("not connected")
        try:
            op, rq_id, tx_id, size = HEADER.unpack(self.transport.recv(HEADER.size))
            if size > MAX_REPLY:
                raise OSError(f"a {size}-byte reply is not xenstore")
            payload = self.transport.recv(size) if size else b""
        except OSError as exc:
            self.close()
            raise PyXSConnectionError(f"reading from {self.path}: {exc}") from None
        return Reply(op, rq_id, tx_id, size, payload)


@dataclass(frozen=True)
class Lost:
    router_id: int


class _ConnectionLostMarker:
    """Set into pending RVars when the router dies, so that their waiters wake at once."""


LOST_REPLY: Any = _ConnectionLostMarker()


class EventSink:
    """What pyxs's router expects of a subscriber: an `events` queue it puts `Event`s into."""

    def __init__(self, events: queue.Queue[object]) -> None:
        self.events = events


class XenstoreRouter(Router):  # type: ignore[misc]
    """pyxs's router, made to report its death instead of leaving callers waiting forever."""

    def __init__(self, connection: UnixSocketConnection, on_exit: Callable[[XenstoreRouter], None]) -> None:
        super().__init__(connection)
        self.thread.name = "xenddd-xenstore-router"
        self._on_exit = on_exit
        self.dead = False

    def __call__(self) -> None:
        try:
            super().__call__()
        except Exception as exc:  # thread boundary: the reason is logged, the death is reported below
            log.debug("xenstore router stopped: %r", exc)
        finally:
            self.dead = True
            for rvar in list(self.rvars.values()):
                rvar.set(LOST_REPLY)
            self.rvars.clear()
            self._on_exit(self)

    def send_batch(self, rq_ids: list[int], data: bytes) -> list[RVar]:
        """Register a reply slot per request id, then send the whole batch in one write.

        The slots are registered under the send lock before sending, as pyxs's own `send` does, but one
        `sendall` covers the batch instead of two per request: pipelined scans are CPU-bound.
        """
        rvars = []
        with self.send_lock:
            for rq_id in rq_ids:
                rvar = RVar()
                self.rvars[rq_id] = rvar
                rvars.append(rvar)
            transport = self.connection.transport
            if transport is None:
                raise XenstoreUnavailable("the connection to xenstored is closed")
            transport.send(data)
        return rvars

    def wait(self, rvar: RVar, deadline: float) -> Any:
        """The reply in `rvar`; LOST_REPLY if the router died first, None if `deadline` passed."""
        with rvar.condition:
            while rvar.target is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                rvar.condition.wait(min(remaining, 0.5))
                if rvar.target is None and self.dead:
                    rvar.target = LOST_REPLY
        return rvar.target

    def shutdown(self, join_timeout: float = 1.0) -> None:
        transport = self.connection.transport
        sock = getattr(transport, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self.thread.is_alive():
            self.thread.join(join_timeout)
