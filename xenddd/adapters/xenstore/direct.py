"""The connection xenddd's requests go over: answered on the caller's own thread, one batch at a time.

The watch stream needs a reader thread (pyxs's router, `wire`): events come whenever xenstored sends them.
Replies do not: a request's thread can read its own, as xenstored answers a connection's requests in
order. Through the router each reply cost two thread switches under the GIL — the router woken to read
it, then the caller woken to take it — and in a PV dom0 under emulation a switch is dear: on the test bed
the router thread used 8.8 s of CPU in a 95-s recovery round, the main thread 15 s. Natively, through the
simulated xenstored, a lone request costs 174 µs of CPU through the router and 40 µs here.

So requests and their replies use a second connection of their own, with no watches on it (a watch's
events are sent on the connection that registered it, so `watch`/`unwatch` stay on the router's). One
batch at a time (the client holds a lock around `exchange`); the socket is non-blocking and each wait is
a `select` bounded by the call's deadline. After a timeout or a broken connection the socket is closed
and the next call connects again: a connection whose reply may still come cannot be reused, since
replies are matched by their order.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time

from xenddd.adapters.xenstore.errors import XenstoreTimeout, XenstoreUnavailable
from xenddd.adapters.xenstore.wire import HEADER, MAX_REPLY, Reply

WATCH_EVENT = 15  # XS_WATCH_EVENT: never sent on this connection, which registers no watch


class DirectConnection:
    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def exchange(self, data: bytes, count: int, deadline: float) -> list[Reply]:
        """Send `data` (`count` requests, framed) and read their `count` replies, by `deadline` (a
        monotonic time). Raises XenstoreTimeout or XenstoreUnavailable, the connection closed then."""
        sock = self._usable()
        try:
            view = memoryview(data)
            while view:
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    _wait(sock, writing=True, deadline=deadline)
            return [self._reply(sock, deadline) for _ in range(count)]
        except TimeoutError:
            self.close()
            raise XenstoreTimeout(f"xenstored did not answer within the deadline at {self.path}") from None
        except OSError as exc:
            self.close()
            raise XenstoreUnavailable(f"lost the connection to xenstored at {self.path}: {exc}") from None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buffer.clear()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _usable(self) -> socket.socket:
        """The open socket if xenstored has not closed it meanwhile (a restart: found before anything is
        sent, so that a request is never lost with a connection only the server knew was gone), else a
        new one. The socket is non-blocking: each wait is a poll bounded by the call's deadline."""
        sock = self._sock
        if sock is not None:
            try:
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return sock  # open, nothing unasked for in it
            except OSError:
                pass
            self.close()  # closed by the server, or bytes no request asked for: either way, a new one
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise XenstoreUnavailable(f"cannot connect to xenstored at {self.path}: {exc}") from None
        sock.setblocking(False)
        self._sock = sock
        return sock

    def _reply(self, sock: socket.socket, deadline: float) -> Reply:
        while True:
            op, rq_id, tx_id, size = HEADER.unpack(self._take(sock, HEADER.size, deadline))
            if size > MAX_REPLY:
                raise OSError(f"a {size}-byte reply is not xenstore")
            payload = self._take(sock, size, deadline) if size else b""
            if op != WATCH_EVENT:
                return Reply(op, rq_id, tx_id, size, payload)

    def _take(self, sock: socket.socket, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            try:
                chunk = sock.recv(max(65536, size - len(self._buffer)))
            except BlockingIOError:
                _wait(sock, writing=False, deadline=deadline)
                continue
            if not chunk:
                raise OSError("xenstored closed the connection")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def _wait(sock: socket.socket, *, writing: bool, deadline: float) -> None:
    """Until the socket can be written (or read), or TimeoutError at `deadline`."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    ready = select.select([], [sock], [], remaining) if writing else select.select([sock], [], [], remaining)
    if not any(ready):
        raise TimeoutError
