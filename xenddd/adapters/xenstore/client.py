"""xenddd's xenstore client: thread-safe calls with deadlines, pipelining, transactions and a watch stream.

Built on `wire` (pyxs's transport and router with their defects contained; its docstring lists them). A
call that times out leaves the connection in an unknown state (xenstored answers in order, so a hung reply
blocks every later one): the connection is dropped and the next call or the watch stream reconnects. After
a reconnect every watch is registered again and the stream yields `Reconnected` (events during the gap are
lost: the caller resyncs).
"""

from __future__ import annotations

import errno
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyxs._internal import Event, Op
from pyxs.exceptions import PyXSError

from xenddd.adapters.xenstore.direct import DirectConnection
from xenddd.adapters.xenstore.errors import (
    XenstoreConflict,
    XenstoreError,
    XenstoreTimeout,
    XenstoreUnavailable,
    absent_as_none,
    value_or_none,
)
from xenddd.adapters.xenstore.paths import decode_names, encode_path
from xenddd.adapters.xenstore.transaction import Transaction
from xenddd.adapters.xenstore.wire import (
    DIRECTORY_PART,
    ERRNO_BY_NAME,
    HEADER,
    LOST_REPLY,
    MAX_PAYLOAD,
    NUL,
    EventSink,
    Lost,
    ReplyConnection,
    XenstoreRouter,
)

log = logging.getLogger(__name__)
_WAKE = object()  # put on the event queue by `wake`

T = TypeVar("T")

_PIPELINE_WINDOW = 256


@dataclass(frozen=True)
class WatchEvent:
    """A watch fired: `path` changed (or the watch fired spuriously), below the registered `watched`."""

    path: str
    watched: str


@dataclass(frozen=True)
class Reconnected:
    """The connection was re-established and all watches registered again; anything may have changed."""

    generation: int


class Xenstore:
    """A thread-safe xenstore connection with deadlines, reconnection and a watch stream.

    Values are `bytes` (whatever a domain wrote); paths are `str` built with `xs_join`. Reads of absent
    nodes return None rather than raising, since absence is the normal answer in a world of vanishing
    domains. `next_event()` is the watch stream; only one thread should consume it.
    """

    def __init__(
        self,
        socket_path: Path | str,
        *,
        call_timeout: float = 5.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
    ) -> None:
        self.socket_path = str(socket_path)
        self.call_timeout = call_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.requests_sent = 0
        self.events_received = 0  # watch events taken (for `status`: what the daemon's watches cost it)
        self._lock = threading.RLock()
        self._router: XenstoreRouter | None = None
        self._generation = 0
        self._rq_ids = itertools.count(1)
        self._events: queue.Queue[object] = queue.Queue()
        self._sink = EventSink(self._events)
        self._watches: dict[str, str] = {}  # token -> path
        self._tokens = itertools.count(1)
        self._closed = threading.Event()
        self._backoff = backoff_initial
        # requests and replies, on the caller's thread (direct.py says why); the router's connection
        # carries the watches
        self._direct = DirectConnection(self.socket_path)
        self._direct_lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect now (calls connect lazily anyway); raises XenstoreUnavailable if xenstored is not there."""
        self._connected_router()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            router, self._router = self._router, None
        if router is not None:
            router.shutdown()
        self._direct.close()

    def __enter__(self) -> Xenstore:
        self.connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def set_next_request_id(self, rq_id: int) -> None:
        """Where this connection's request numbering continues (tests use it to cross the 2**32 wrap)."""
        with self._lock:
            self._rq_ids = itertools.count(rq_id)

    def _connected_router(self) -> XenstoreRouter:
        with self._lock:
            if self._closed.is_set():
                raise XenstoreUnavailable("the xenstore connection is closed")
            router = self._router
            if router is not None and not router.dead:
                return router
            return self._reconnect_locked()

    def _reconnect_locked(self) -> XenstoreRouter:
        previous = self._router
        router = XenstoreRouter(ReplyConnection(self.socket_path), self._router_exited)
        try:
            router.start()
        except (PyXSError, OSError) as exc:
            raise XenstoreUnavailable(f"cannot connect to xenstored at {self.socket_path}: {exc}") from None
        self._router = router
        self._generation += 1
        self._rq_ids = itertools.count(1)
        try:
            for token, path in self._watches.items():
                router.subscribe(token.encode(), self._sink)
                self._ack(router, Op.WATCH, path.encode() + NUL + token.encode() + NUL, 0)
        except XenstoreError:
            router.shutdown()
            raise
        if previous is not None:
            log.info(
                "reconnected to xenstored at %s; %d watches re-registered",
                self.socket_path,
                len(self._watches),
            )
            self._events.put(Reconnected(self._generation))
        self._backoff = self.backoff_initial
        return router

    def _router_exited(self, router: XenstoreRouter) -> None:
        self._events.put(Lost(id(router)))

    def _drop(self, router: XenstoreRouter) -> None:
        with self._lock:
            if self._router is router and not router.dead:
                log.warning("dropping the xenstore connection to %s", self.socket_path)
            router.dead = True
        router.shutdown(join_timeout=0.2)

    # -- requests --------------------------------------------------------------------------------------

    def _send(self, router: XenstoreRouter, op: int, payload: bytes, tx_id: int) -> Any:
        return self._send_many(router, [(op, payload)], tx_id)[0]

    def _send_many(
        self, router: XenstoreRouter, requests: Sequence[tuple[int, bytes]], tx_id: int
    ) -> list[Any]:
        """Number the requests on this connection and send them as one batch (`XenstoreRouter.send_batch`)."""
        rq_ids, data = self._framed(requests, tx_id)
        try:
            rvars = router.send_batch(rq_ids, data)
        except (PyXSError, OSError) as exc:
            self._drop(router)
            raise XenstoreUnavailable(f"lost the connection to xenstored: {exc}") from None
        self.requests_sent += len(rq_ids)
        return rvars

    def _framed(self, requests: Sequence[tuple[int, bytes]], tx_id: int) -> tuple[list[int], bytes]:
        """The requests numbered (one count for both connections) and framed as one batch."""
        for _op, payload in requests:
            if len(payload) > MAX_PAYLOAD:
                raise XenstoreError(f"xenstore request of {len(payload)} bytes exceeds {MAX_PAYLOAD} bytes")
        with self._lock:
            rq_ids = [next(self._rq_ids) & 0xFFFFFFFF for _ in requests]
        data = b"".join(
            HEADER.pack(op, rq_id, tx_id, len(payload)) + payload
            for (op, payload), rq_id in zip(requests, rq_ids, strict=True)
        )
        return rq_ids, data

    def _wait(self, router: XenstoreRouter, rvar: Any, op: int, deadline: float) -> bytes:
        reply = router.wait(rvar, deadline)
        if reply is None:
            self._drop(router)
            raise XenstoreTimeout(f"xenstored did not answer within {self.call_timeout:g} s")
        if reply is LOST_REPLY:
            raise XenstoreUnavailable("lost the connection to xenstored during a request")
        payload: bytes = reply.payload
        if reply.op == Op.ERROR:
            raise _refusal(payload)
        if reply.op != op:
            self._drop(router)
            raise XenstoreUnavailable(f"xenstored answered op {reply.op} to op {op}")
        return payload

    def _call(self, op: int, payload: bytes, tx_id: int = 0) -> bytes:
        result = self._exchange([(op, payload)], tx_id, time.monotonic() + self.call_timeout)[0]
        if isinstance(result, XenstoreError):
            raise result
        return result

    def _exchange(
        self, requests: Sequence[tuple[int, bytes]], tx_id: int, deadline: float
    ) -> list[bytes | XenstoreError]:
        """Requests on the direct connection, sent as one batch; each reply's payload, or the error
        xenstored answered it with. A reply out of order or of another op ends the connection."""
        if self._closed.is_set():
            raise XenstoreUnavailable("the xenstore connection is closed")
        with self._direct_lock:
            rq_ids, data = self._framed(requests, tx_id)
            replies = self._direct.exchange(data, len(requests), deadline)
            self.requests_sent += len(requests)
            if any(r.rq_id != rq_id for r, rq_id in zip(replies, rq_ids, strict=True)):
                self._direct.close()
                raise XenstoreUnavailable("xenstored's replies came out of order")
        results: list[bytes | XenstoreError] = []
        for (op, _payload), reply in zip(requests, replies, strict=True):
            if reply.op == Op.ERROR:
                results.append(_refusal(reply.payload))
            elif reply.op != op:
                with self._direct_lock:
                    self._direct.close()
                raise XenstoreUnavailable(f"xenstored answered op {reply.op} to op {op}")
            else:
                results.append(reply.payload)
        return results

    def _ack(self, router: XenstoreRouter, op: int, payload: bytes, tx_id: int) -> None:
        rvar = self._send(router, op, payload, tx_id)
        self._wait(router, rvar, op, time.monotonic() + self.call_timeout)

    def _pipeline(self, requests: Sequence[tuple[int, bytes]], tx_id: int = 0) -> list[bytes | XenstoreError]:
        """Send many requests before reading the first reply: a scan costs one latency, not N."""
        deadline = time.monotonic() + self.call_timeout
        results: list[bytes | XenstoreError] = []
        for start in range(0, len(requests), _PIPELINE_WINDOW):
            results += self._exchange(requests[start : start + _PIPELINE_WINDOW], tx_id, deadline)
        return results

    def _router_pipeline(self, requests: Sequence[tuple[int, bytes]]) -> list[bytes | XenstoreError]:
        """Requests on the router's connection: the watches' own, which xenstored keeps per connection."""
        router = self._connected_router()
        deadline = time.monotonic() + self.call_timeout
        results: list[bytes | XenstoreError] = []
        for start in range(0, len(requests), _PIPELINE_WINDOW):
            window = requests[start : start + _PIPELINE_WINDOW]
            rvars = self._send_many(router, window, 0)
            for (op, _payload), rvar in zip(window, rvars, strict=True):
                try:
                    results.append(self._wait(router, rvar, op, deadline))
                except XenstoreUnavailable:
                    raise
                except XenstoreError as exc:
                    results.append(exc)
        return results

    # -- operations ------------------------------------------------------------------------------------

    def read(self, path: str, tx_id: int = 0) -> bytes | None:
        return absent_as_none(lambda: self._call(Op.READ, encode_path(path), tx_id))

    def read_many(self, paths: Sequence[str], tx_id: int = 0) -> list[bytes | None]:
        results = self._pipeline([(Op.READ, encode_path(p)) for p in paths], tx_id)
        return [value_or_none(r) for r in results]

    def directory(self, path: str, tx_id: int = 0) -> list[str] | None:
        return self.directory_many([path], tx_id)[0]

    def directory_many(self, paths: Sequence[str], tx_id: int = 0) -> list[list[str] | None]:
        """Listings of `paths` (None where absent); one too long for a reply is fetched in parts."""
        results = self._pipeline([(Op.DIRECTORY, encode_path(p)) for p in paths], tx_id)
        listings: list[list[str] | None] = []
        for path, result in zip(paths, results, strict=True):
            if isinstance(result, XenstoreError) and result.errno == errno.E2BIG:
                result = self._directory_in_parts(path, tx_id)
            payload = value_or_none(result)
            listings.append(None if payload is None else decode_names(payload))
        return listings

    def _directory_in_parts(self, path: str, tx_id: int, attempts: int = 8) -> bytes:
        """DIRECTORY_PART: byte ranges of the child list, restarted if the node's generation changes.

        A part ending in an extra NUL (an empty name) is the last one.
        """
        for _attempt in range(attempts):
            offset, parts, generation = 0, [], None
            while True:
                reply = self._call(DIRECTORY_PART, encode_path(path) + str(offset).encode() + NUL, tx_id)
                current, _sep, part = reply.partition(NUL)
                if generation is not None and current != generation:
                    break  # the directory changed between parts: start again
                generation = current
                if part in (b"", NUL) or part.endswith(NUL + NUL):
                    parts.append(part[:-1] if part else part)
                    return b"".join(parts)
                parts.append(part)
                offset += len(part)
        raise XenstoreConflict(f"{path} kept changing while being listed", errno.EAGAIN)

    def write(self, path: str, value: bytes | str, tx_id: int = 0) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._call(Op.WRITE, encode_path(path) + data, tx_id)

    def write_many(self, items: Sequence[tuple[str, bytes | str]], tx_id: int = 0) -> None:
        """Write many nodes pipelined (one latency for all); the first refusal is raised after all replies."""
        requests = [(Op.WRITE, encode_path(p) + (v.encode() if isinstance(v, str) else v)) for p, v in items]
        for result in self._pipeline(requests, tx_id):
            if isinstance(result, XenstoreError):
                raise result

    def mkdir(self, path: str, tx_id: int = 0) -> None:
        self._call(Op.MKDIR, encode_path(path), tx_id)

    def rm(self, path: str, tx_id: int = 0) -> None:
        """Remove `path` and its children; removing what is already gone is not an error."""
        absent_as_none(lambda: self._call(Op.RM, encode_path(path), tx_id))

    def get_perms(self, path: str, tx_id: int = 0) -> list[str] | None:
        payload = absent_as_none(lambda: self._call(Op.GET_PERMS, encode_path(path), tx_id))
        return None if payload is None else decode_names(payload)

    def set_perms(self, path: str, perms: Sequence[str], tx_id: int = 0) -> None:
        """`perms` as xenstored spells them: owner first, e.g. `['n0', 'r5']` (w/r/b/n + domid)."""
        for perm in perms:
            if not re.fullmatch(r"[wrbn][0-9]{1,5}", perm):
                raise ValueError(f"{perm!r} is not a xenstore permission")
        self._call(Op.SET_PERMS, encode_path(path) + b"".join(p.encode() + NUL for p in perms), tx_id)

    def transaction(self, body: Callable[[Transaction], T], *, attempts: int = 8) -> T:
        """Run `body` in a transaction, again from the start when the commit fails with EAGAIN.

        `body` must be safe to repeat: it sees a fresh snapshot on every attempt. After `attempts`
        conflicts XenstoreConflict is raised; an exception from `body` aborts the transaction.
        """
        for attempt in range(attempts):
            tx_id = int(self._call(Op.TRANSACTION_START, NUL).rstrip(NUL) or b"0")
            try:
                result = body(Transaction(self, tx_id))
            except XenstoreError as exc:
                self._end(tx_id, commit=False)
                if exc.errno != errno.EAGAIN:
                    raise
                continue
            except BaseException:
                self._end(tx_id, commit=False)
                raise
            try:
                self._call(Op.TRANSACTION_END, b"T" + NUL, tx_id)
                return result
            except XenstoreUnavailable:
                raise
            except XenstoreError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
            log.debug("xenstore transaction conflict, attempt %d of %d", attempt + 1, attempts)
            self._closed.wait(min(0.001 * 2**attempt, 0.1))
        raise XenstoreConflict(
            f"xenstore transaction still conflicting after {attempts} attempts", errno.EAGAIN
        )

    def _end(self, tx_id: int, *, commit: bool) -> None:
        try:
            self._call(Op.TRANSACTION_END, (b"T" if commit else b"F") + NUL, tx_id)
        except XenstoreError as exc:
            log.debug("ending xenstore transaction %d: %s", tx_id, exc)

    # -- watches ---------------------------------------------------------------------------------------

    def watch(self, path: str) -> None:
        """Watch `path` (or `@introduceDomain` / `@releaseDomain`); kept across reconnects until unwatched."""
        failed = self.watch_many([path])
        if failed:
            raise failed[path]

    def watch_many(self, paths: Sequence[str]) -> dict[str, XenstoreError]:
        """Watch every path in one pipelined round trip (a recovery arms one per reattached frontend);
        returns the paths xenstored refused, with why. Kept across reconnects until unwatched."""
        with self._lock:
            router = self._connected_router()
            new: list[tuple[str, str]] = []
            for path in dict.fromkeys(paths):
                if path in self._watches.values():
                    continue
                token = f"xenddd-{next(self._tokens)}"
                self._watches[token] = path
                router.subscribe(token.encode(), self._sink)
                new.append((token, path))
            if not new:
                return {}
            requests = [(Op.WATCH, path.encode() + NUL + token.encode() + NUL) for token, path in new]
            try:
                results = self._router_pipeline(requests)
            except XenstoreUnavailable:
                return {}  # kept: the reconnect registers them
            failed = {}
            for (token, path), result in zip(new, results, strict=True):
                if isinstance(result, XenstoreError):
                    del self._watches[token]
                    failed[path] = result
            return failed

    def unwatch(self, path: str) -> None:
        self.unwatch_many([path])

    def unwatch_many(self, paths: Sequence[str]) -> None:
        """Remove the watches on `paths` in one pipelined round trip; an unknown path is no error."""
        wanted = set(paths)
        with self._lock:
            gone = [(t, p) for t, p in self._watches.items() if p in wanted]
            for token, _path in gone:
                del self._watches[token]
        if not gone:
            return
        requests = [(Op.UNWATCH, path.encode() + NUL + token.encode() + NUL) for token, path in gone]
        try:
            results = self._router_pipeline(requests)
        except XenstoreUnavailable:
            return  # the server forgot them with the connection; nothing is re-registered for them
        for (_token, path), result in zip(gone, results, strict=True):
            if isinstance(result, XenstoreError):
                log.debug("unwatch %s: %s", path, result)

    @property
    def watched(self) -> list[str]:
        with self._lock:
            return sorted(self._watches.values())

    def wake(self) -> None:
        """End a `next_event` wait at once (it returns None): a watcher being stopped need not wake
        periodically to notice, which on a loaded dom0 costs a thread switch under the GIL each time."""
        self._events.put(_WAKE)

    def next_event(self, timeout: float | None = None) -> WatchEvent | Reconnected | None:
        """The next watch event, `Reconnected` after a lost connection came back, or None on timeout
        (or when `wake` was called).

        When the connection is found dead, this reconnects with exponential backoff (bounded by
        `backoff_max`) for as long as `timeout` allows; close() interrupts the wait.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed.is_set():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._events.get(timeout=remaining)
            except queue.Empty:
                return None
            if item is _WAKE:
                return None
            if isinstance(item, Event):
                path = item.path.decode("ascii", "replace")
                watched = self._watches.get(item.token.decode("ascii", "replace"))
                self.events_received += 1
                if watched is not None:
                    return WatchEvent(path, watched)
            elif isinstance(item, Reconnected):
                return item
            elif isinstance(item, Lost) and self._router is not None and id(self._router) == item.router_id:
                if self._reconnect_with_backoff(deadline):
                    continue
                return None
        return None

    def _reconnect_with_backoff(self, deadline: float | None) -> bool:
        while not self._closed.is_set():
            try:
                self._connected_router()
                return True
            except XenstoreUnavailable as exc:
                log.warning("xenstored unreachable (%s); retrying in %.2f s", exc, self._backoff)
            delay = self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max)
            if deadline is not None and time.monotonic() + delay > deadline:
                self._events.put(Lost(id(self._router)))
                self._closed.wait(max(0.0, deadline - time.monotonic()))
                return False
            self._closed.wait(delay)
        return False


def _refusal(payload: bytes) -> XenstoreError:
    """xenstored's error reply (its errno's name) as the error to raise or return."""
    name = payload.rstrip(NUL).decode("ascii", "replace")
    return XenstoreError(f"xenstored: {name}", ERRNO_BY_NAME.get(name, 0))
