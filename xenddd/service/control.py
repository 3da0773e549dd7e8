"""The control socket: newline-delimited JSON between the CLI and the running daemon.

Every connection's peer is identified with SO_PEERCRED before a byte is read: root, the daemon's own uid, or a
member of the configured group may talk, nobody else. A request is one line of at most MAX_REQUEST bytes and
must arrive whole within REQUEST_TIMEOUT of the connection (one deadline per request, not per recv: a
client trickling a byte at a time is cut off like a silent one); each connection has its own thread and at
most MAX_CONNECTIONS are served at once, so a malformed, oversized, deeply nested or slow client costs one
thread for a bounded time and never blocks the daemon, nor other clients for longer than REQUEST_TIMEOUT.

Request:  {"version": 1, "op": "status", "args": {...}}
Response: {"version": 1, "ok": true, ...}  or  {"version": 1, "ok": false, "error": "...", "exit_code": N}
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xenddd.errors import DaemonNotRunning, XendddError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 32

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Accepts connections on `path` and answers each request with `handler(op, args)`."""

    def __init__(self, path: Path, handler: Handler, *, group: str | None = None) -> None:
        self.path = path
        self._handler = handler
        self._gid = grp.getgrnam(group).gr_gid if group else None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stop = threading.Event()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177 if self._gid is None else 0o117)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        if self._gid is not None:
            os.chown(self.path, -1, self._gid)
        # accept() blocks: stop() ends it by shutting the socket down, not by a polling timeout
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="xenddd-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # a blocked accept() returns (EINVAL)
        if self._thread is not None:
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
        self.path.unlink(missing_ok=True)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                _send(conn, {"ok": False, "error": "too many control connections", "exit_code": 1})
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="xenddd-control-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                deadline = time.monotonic() + REQUEST_TIMEOUT
                conn.settimeout(REQUEST_TIMEOUT)
                uid, gid = peer_credentials(conn)
                if not self._allowed(uid, gid):
                    log.warning("control socket: refused uid %d", uid)
                    _send(conn, {"ok": False, "error": f"uid {uid} may not control xenddd", "exit_code": 1})
                    return
                try:
                    line = _read_line(conn, deadline)
                except TimeoutError:
                    conn.settimeout(1.0)
                    error = f"request not received within {REQUEST_TIMEOUT:g} s"
                    _send(conn, {"ok": False, "error": error, "exit_code": 2})
                    return
                if line is None:
                    return
                answer = self._answer(line)
                conn.settimeout(REQUEST_TIMEOUT)  # for the reply: a client that never reads is cut off too
                _send(conn, answer)
        except OSError as exc:
            log.debug("control connection: %s", exc)
        finally:
            self._slots.release()

    def _allowed(self, uid: int, gid: int) -> bool:
        if uid in (0, os.getuid()):
            return True
        if self._gid is None:
            return False
        if gid == self._gid:
            return True
        try:
            import pwd

            return pwd.getpwuid(uid).pw_name in grp.getgrgid(self._gid).gr_mem
        except KeyError:
            return False

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON", "exit_code": 2}
        except RecursionError:  # "[[[[…" within MAX_REQUEST: json.loads recurses once per level
            return {"ok": False, "error": "request nested too deeply", "exit_code": 2}
        if not isinstance(request, dict) or request.get("version") != PROTOCOL_VERSION:
            return {"ok": False, "error": f"expected protocol version {PROTOCOL_VERSION}", "exit_code": 2}
        op, args = request.get("op"), request.get("args", {})
        if not isinstance(op, str) or not isinstance(args, dict):
            return {"ok": False, "error": "request needs 'op' (string) and 'args' (object)", "exit_code": 2}
        try:
            return self._handler(op, args)
        except XendddError as exc:
            return {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
        except Exception:  # a bug answering one request must not take the daemon down
            log.exception("control request %r failed", op)
            return {
                "ok": False,
                "error": f"internal error handling {op!r} (see the daemon's log)",
                "exit_code": 1,
            }


def request(path: Path, op: str, args: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the daemon and return its answer; DaemonNotRunning when nobody listens."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    with sock:
        try:
            sock.connect(str(path))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise DaemonNotRunning(
                    f"the xenddd daemon is not running (no one listens on {path})"
                ) from None
            if exc.errno == errno.EACCES:
                raise XendddError(
                    f"permission denied on {path}: run as root or a member of its group"
                ) from None
            raise XendddError(f"cannot reach the daemon at {path}: {exc.strerror}") from None
        # A refusal (or "too many connections") is answered before the request is read, and the daemon
        # may close before it is sent: the send then fails, but the answer is there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(
                json.dumps({"version": PROTOCOL_VERSION, "op": op, "args": args or {}}).encode() + b"\n"
            )
        try:
            line = _read_line(sock, deadline, limit=64 * 1024 * 1024)
        except TimeoutError:
            raise XendddError(f"the daemon did not answer {op!r} within {timeout:.0f} s") from None
        except ConnectionResetError:
            line = None  # killed while answering: as if it had closed the connection
    if line is None:
        # The daemon stops by closing its connections: to a client, it is no longer running.
        raise DaemonNotRunning("the daemon closed the control connection without answering (stopping?)")
    answer: dict[str, Any] = json.loads(line)
    return answer


def answer_or_raise(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer of a successful request; the daemon's error as a XendddError otherwise."""
    if not answer.get("ok"):
        error = XendddError(str(answer.get("error", "the daemon refused the request")))
        error.exit_code = int(answer.get("exit_code", 1))
        raise error
    return answer


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, gid = struct.unpack("3i", creds)
    return uid, gid


def _read_line(conn: socket.socket, deadline: float, limit: int = MAX_REQUEST) -> bytes | None:
    """One line, which must arrive whole before `deadline` (time.monotonic): TimeoutError otherwise."""
    buffer = bytearray()
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("line not complete before the deadline")
        conn.settimeout(remaining)
        chunk = conn.recv(65536)
        if not chunk:
            return bytes(buffer) if buffer else None
        buffer += chunk
        if len(buffer) > limit:
            _send(conn, {"ok": False, "error": f"request larger than {limit} bytes", "exit_code": 2})
            return None
    return bytes(buffer[: buffer.index(b"\n")])


def _send(conn: socket.socket, answer: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps({"version": PROTOCOL_VERSION, **answer}).encode() + b"\n")
    except OSError as exc:
        log.debug("control reply not delivered: %s", exc)
