"""The simulated xenstored on a Unix socket: the real wire protocol, every connection dom0 (as xenstored's
local socket is), a reader thread per connection and a writer thread for its watch events.

A server made with `domid=N` serves its connections as that unprivileged domain instead — what a guest's
/dev/xen/xenbus is to the clients inside it — so Debian's C clients can be shown the quota errors a
domain gets.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
from pathlib import Path

from xenddd.sim.store import (
    PAYLOAD_MAX,
    PRIVILEGED,
    XsError,
)
from xenddd.sim.xenstored import Xenstored
from xenddd.sim.xenstored_ops import ERROR, OP_NAMES, WATCH_EVENT

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIII")


class SocketServer:
    """Serves a Xenstored on a Unix socket; every connection is dom0, as xenstored's local socket is."""

    def __init__(self, engine: Xenstored, path: Path, *, domid: int = PRIVILEGED) -> None:
        self.engine = engine
        self.path = Path(path)
        self.domid = domid
        self._requests_of_closed = 0
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: list[_SocketClient] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        self._stopping.clear()
        thread = threading.Thread(target=self._accept, name="sim-xenstored-accept", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Close the socket and every connection (clients see EOF, as when xenstored dies)."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self.drop_connections()
        for thread in self._threads:
            thread.join(2.0)
        self._threads.clear()
        self.path.unlink(missing_ok=True)

    def restart(self) -> None:
        """A xenstored restart: connections drop, the database (kept in memory here) survives."""
        self.stop()
        self.start()

    def drop_connections(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
            self._requests_of_closed += sum(client.requests for client in clients)
        for client in clients:
            client.close()

    def requests_served(self) -> int:
        """Requests answered on this socket since it started, over every connection."""
        with self._lock:
            return self._requests_of_closed + sum(client.requests for client in self._clients)

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            client = _SocketClient(self.engine, sock, self.domid)
            with self._lock:
                self._clients.append(client)
            client.start()
            self._threads.extend(client.threads)


class _SocketClient:
    def __init__(self, engine: Xenstored, sock: socket.socket, domid: int) -> None:
        self.engine = engine
        self.sock = sock
        self.out: queue.Queue[bytes | None] = queue.Queue()
        self.write_lock = threading.Lock()
        self.requests = 0
        self.conn = engine.attach(domid, self._event)
        self.threads = [
            threading.Thread(target=self._read_loop, name="sim-xenstored-conn", daemon=True),
            threading.Thread(target=self._write_loop, name="sim-xenstored-events", daemon=True),
        ]
        self._closed = False

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.engine.detach(self.conn)
        self.out.put(None)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _event(self, path: str, token: str) -> None:
        body = path.encode() + b"\0" + token.encode() + b"\0"
        self.out.put(HEADER.pack(WATCH_EVENT, 0, 0, len(body)) + body)

    def _write_loop(self) -> None:
        while True:
            message = self.out.get()
            if message is None:
                return
            delay = self.engine.faults.event_delay
            if delay:
                threading.Event().wait(delay)
            self._send(message)

    def _send(self, data: bytes) -> None:
        with self.write_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.close()

    def _read_loop(self) -> None:
        reader = self.sock.makefile("rb")
        try:
            while True:
                header = reader.read(HEADER.size)
                if len(header) < HEADER.size:
                    return
                op, req_id, tx_id, length = HEADER.unpack(header)
                if length > PAYLOAD_MAX:
                    log.warning("sim xenstored: client message too long (%d); dropping the client", length)
                    return  # like C xenstored: a bad client is ignored from then on
                payload = reader.read(length)
                if len(payload) < length:
                    return
                self.requests += 1
                if op in self.engine.faults.hang_ops:
                    continue
                try:
                    body = self.engine.execute(self.conn, op, tx_id, payload)
                    reply_op = op
                except XsError as exc:
                    body, reply_op = exc.errno_name.encode() + b"\0", ERROR
                except Exception:  # a simulator bug must show, but not kill the other clients
                    log.exception("sim xenstored: request %s failed", OP_NAMES.get(op, op))
                    body, reply_op = b"EIO\0", ERROR
                self._send(HEADER.pack(reply_op, req_id, tx_id, len(body)) + body)
        except (OSError, ValueError):
            return
        finally:
            self.close()
