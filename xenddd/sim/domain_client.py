"""An in-process xenstore client acting as one domain, for the simulated toolstack and kernels."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import weakref
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
    UNWATCH,
    WATCH,
    WRITE,
)

log = logging.getLogger(__name__)


class DomainClient:
    """An in-process client acting as domain `domid`: permission checks and quotas apply as to that domain.

    Watch callbacks run on the engine's one dispatcher thread (in order for each client), never under the
    database lock, so a callback may itself read and write. One thread for every domain of the host, not
    one each: a host of a thousand guests was a thousand threads taking turns at the GIL.
    """

    def __init__(self, engine: Xenstored, domid: int) -> None:
        self.engine = engine
        self.domid = domid
        self._callbacks: dict[str, Callable[[str], None]] = {}
        self._tokens = itertools.count()
        self._dispatcher = _dispatcher_of(engine)
        self.conn = engine.attach(domid, lambda path, token: self._dispatcher.put(self, path, token))
        self._registered = False
        self._closed = False

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

    def watch(self, path: str, callback: Callable[[str], None]) -> str:
        """Returns the watch's token, for `unwatch`."""
        token = f"sim-{next(self._tokens)}-{path}"
        self._callbacks[token] = callback
        self._ensure_dispatcher()
        self._call(WATCH, path.encode() + b"\0" + token.encode() + b"\0")
        return token

    def unwatch(self, path: str, token: str) -> None:
        self._call(UNWATCH, path.encode() + b"\0" + token.encode() + b"\0")
        self._callbacks.pop(token, None)

    def close(self) -> None:
        self._closed = True
        self.engine.detach(self.conn)
        if self._registered:
            self._registered = False
            self._dispatcher.unregister()

    def _ensure_dispatcher(self) -> None:
        if not self._registered and not self._closed:
            self._registered = True
            self._dispatcher.register()

    def deliver(self, path: str, token: str) -> None:
        """Run the callback of the watch `token` (on the dispatcher thread)."""
        callback = self._callbacks.get(token)
        if callback is None or self._closed:
            return
        try:
            callback(path)
        except XsError as exc:
            log.debug("sim dom%d watch callback on %s: %s", self.domid, path, exc.errno_name)
        except Exception:
            log.exception("sim dom%d watch callback on %s failed", self.domid, path)


class _Dispatcher:
    """The thread that delivers the watch events of an engine's in-process clients; it runs while any of
    them has a watch, and ends with the last one's close (the host's threads end with the host)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients = 0
        self._queue: queue.Queue[tuple[DomainClient, str, str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def put(self, client: DomainClient, path: str, token: str) -> None:
        self._queue.put((client, path, token))

    def register(self) -> None:
        with self._lock:
            self._clients += 1
            if self._thread is None:
                self._queue = queue.Queue()
                self._thread = threading.Thread(
                    target=_deliver_all, args=(self._queue,), name="sim-domain-watches", daemon=True
                )
                self._thread.start()

    def unregister(self) -> None:
        with self._lock:
            self._clients -= 1
            if self._clients > 0 or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._queue.put(None)
        if thread is not threading.current_thread():
            thread.join(2.0)


def _deliver_all(events: queue.Queue[tuple[DomainClient, str, str] | None]) -> None:
    while True:
        item = events.get()
        if item is None:
            return
        client, path, token = item
        client.deliver(path, token)


_DISPATCHERS: weakref.WeakKeyDictionary[Xenstored, _Dispatcher] = weakref.WeakKeyDictionary()
_DISPATCHERS_LOCK = threading.Lock()


def _dispatcher_of(engine: Xenstored) -> _Dispatcher:
    with _DISPATCHERS_LOCK:
        dispatcher = _DISPATCHERS.get(engine)
        if dispatcher is None:
            dispatcher = _DISPATCHERS[engine] = _Dispatcher()
        return dispatcher
