"""An in-process xenstore client acting as one domain, for the simulated toolstack and kernels."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from xenddd.sim.store import (
    XsError,
)
from xenddd.sim.xenstored import Xenstored
from xenddd.sim.xenstored_ops import (
    DIRECTORY,
    GET_PERMS,
    MKDIR,
    READ,
    RM,
    SET_PERMS,
    TRANSACTION_END,
    TRANSACTION_START,
    WATCH,
    WRITE,
)

log = logging.getLogger(__name__)


class DomainClient:
    """An in-process client acting as domain `domid`: permission checks and quotas apply as to that domain.

    Watch callbacks run on one dispatcher thread per client, never under the database lock, so a callback
    may itself read and write.
    """

    def __init__(self, engine: Xenstored, domid: int) -> None:
        self.engine = engine
        self.domid = domid
        self._events: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._callbacks: dict[str, Callable[[str], None]] = {}
        self.conn = engine.attach(domid, lambda path, token: self._events.put((path, token)))
        self._thread: threading.Thread | None = None

    def _call(self, op: int, payload: bytes, tx_id: int = 0) -> bytes:
        return self.engine.execute(self.conn, op, tx_id, payload)

    def read(self, path: str, tx: int = 0) -> bytes | None:
        try:
            return self._call(READ, path.encode() + b"\0", tx)
        except XsError as exc:
            if exc.errno_name == "ENOENT":
                return None
            raise

    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._call(WRITE, path.encode() + b"\0" + data, tx)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self._call(MKDIR, path.encode() + b"\0", tx)

    def rm(self, path: str, tx: int = 0) -> None:
        self._call(RM, path.encode() + b"\0", tx)

    def directory(self, path: str, tx: int = 0) -> list[str]:
        try:
            raw = self._call(DIRECTORY, path.encode() + b"\0", tx)
        except XsError as exc:
            if exc.errno_name == "ENOENT":
                return []
            raise
        return [name.decode() for name in raw.split(b"\0") if name]

    def set_perms(self, path: str, perms: list[str], tx: int = 0) -> None:
        self._call(SET_PERMS, path.encode() + b"\0" + b"".join(p.encode() + b"\0" for p in perms), tx)

    def get_perms(self, path: str) -> list[str]:
        raw = self._call(GET_PERMS, path.encode() + b"\0")
        return [p.decode() for p in raw.split(b"\0") if p]

    def transaction(self, body: Callable[[int], None], attempts: int = 16) -> None:
        """Run `body(tx_id)` in a transaction, again from the start when the commit meets EAGAIN."""
        for _ in range(attempts):
            tx = int(self._call(TRANSACTION_START, b"\0").rstrip(b"\0"))
            try:
                body(tx)
            except BaseException:
                self._call(TRANSACTION_END, b"F\0", tx)
                raise
            try:
                self._call(TRANSACTION_END, b"T\0", tx)
                return
            except XsError as exc:
                if exc.errno_name != "EAGAIN":
                    raise
        raise XsError("EAGAIN")

    def watch(self, path: str, callback: Callable[[str], None]) -> None:
        token = f"sim-{len(self._callbacks)}-{path}"
        self._callbacks[token] = callback
        self._ensure_dispatcher()
        self._call(WATCH, path.encode() + b"\0" + token.encode() + b"\0")

    def close(self) -> None:
        self.engine.detach(self.conn)
        self._events.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _ensure_dispatcher(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._dispatch, name=f"sim-dom{self.domid}-watches", daemon=True
            )
            self._thread.start()

    def _dispatch(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            path, token = item
            callback = self._callbacks.get(token)
            if callback is None:
                continue
            try:
                callback(path)
            except XsError as exc:
                log.debug("sim dom%d watch callback on %s: %s", self.domid, path, exc.errno_name)
            except Exception:
                log.exception("sim dom%d watch callback on %s failed", self.domid, path)
