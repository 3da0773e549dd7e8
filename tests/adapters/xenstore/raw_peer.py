"""A scripted xenstored peer over a real Unix socket, for faults the simulator cannot stage on demand.

It speaks only the framing (xsd_sockmsg header + payload); `respond(op, payload)` decides per request:
bytes → reply with the same op, (op, bytes) → reply with that op, `HANG` → never answer,
`CLOSE` → drop the connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

HEADER = struct.Struct("<IIII")
HANG = object()
CLOSE = object()


class RawPeer:
    def __init__(self, path: Path, respond: Callable[[int, bytes], object]) -> None:
        self.path = path
        self.respond = respond
        self.request_ids: list[int] = []
        self.requests = threading.Semaphore(0)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                header = _recv_exactly(conn, HEADER.size)
                op, rq_id, tx_id, length = HEADER.unpack(header)
                payload = _recv_exactly(conn, length)
                self.request_ids.append(rq_id)
                self.requests.release()
                answer = self.respond(op, payload)
                if answer is HANG:
                    continue
                if answer is CLOSE:
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                    return
                reply_op, reply = answer if isinstance(answer, tuple) else (op, answer)
                assert isinstance(reply, bytes)
                conn.sendall(HEADER.pack(reply_op, rq_id, tx_id, len(reply)) + reply)
        except OSError:
            return

    def close(self) -> None:
        self._server.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.close()


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("peer closed")
        data += chunk
    return data
