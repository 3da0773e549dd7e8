"""The simulated xenstored: the real wire protocol on a Unix socket, plus in-process "as domain N" clients.

Socket clients (pyxs, xenddd's adapter, Debian's xenstore-* C tools via XENSTORED_PATH) speak
`struct xsd_sockmsg {u32 type, req_id, tx_id, len}` little-endian, payload ≤ 4096 bytes, and are privileged
(dom0), exactly as on a real host's socket. The simulated toolstack and kernels use `DomainClient`s, which are
permission-checked and quota-limited as the domain they act for.

Each socket connection has a reader thread that executes requests under the one database lock and answers
directly; watch events go through the connection's outgoing queue and writer thread, so a slow client never
stalls the database. Fault injection (`faults`) can hang or drop replies, delay or drop events, and drop
every connection as a xenstored restart does.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xenddd.sim.store import (
    PAYLOAD_MAX,
    PRIVILEGED,
    TRANSACTIONS_PER_DOMAIN_QUOTA,
    WATCHES_PER_DOMAIN_QUOTA,
    Node,
    Perm,
    Store,
    Transaction,
    Tree,
    XsError,
    can,
    normalise,
    parent_of,
    watch_matches,
)

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIII")
(CONTROL, DIRECTORY, READ, GET_PERMS, WATCH, UNWATCH, TRANSACTION_START, TRANSACTION_END, INTRODUCE, RELEASE,
 GET_DOMAIN_PATH, WRITE, MKDIR, RM, SET_PERMS, WATCH_EVENT, ERROR, IS_DOMAIN_INTRODUCED, RESUME, SET_TARGET
 ) = range(20)  # fmt: skip
RESET_WATCHES = 21
DIRECTORY_PART = 22
OP_NAMES = {
    v: k for k, v in globals().items() if isinstance(v, int) and k.isupper() and k not in ("PRIVILEGED",)
}

EventSink = Callable[[str, str], None]


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
        self.watches: list[Watch] = []
        self.transactions: dict[int, Transaction] = {}

    def home(self) -> str:
        return f"/local/domain/{self.domid}"


class Xenstored:
    """The database engine shared by socket and in-process clients."""

    def __init__(self) -> None:
        self.store = Store()
        self.lock = threading.RLock()
        self.connections: list[Connection] = []
        self.introduced: set[int] = {0}
        self.faults = Faults()
        # xenstored's --watch-nb; a driver domain serving more than ~120 devices needs it raised, on real
        # Xen as here, since its backends watch every frontend's state
        self.watch_quota = WATCHES_PER_DOMAIN_QUOTA
        self._index: dict[str, list[tuple[Connection, Watch]]] | None = None
        self._tx_ids = iter(range(1, 1 << 31))
        self.store.write(self.store.tree, PRIVILEGED, "/local/domain/0/name", b"Domain-0")
        self.store.mkdir(self.store.tree, PRIVILEGED, "/tool/xenstored")

    # -- connections -----------------------------------------------------------------------------------

    def attach(self, domid: int, sink: EventSink) -> Connection:
        conn = Connection(domid, sink)
        with self.lock:
            self.connections.append(conn)
        return conn

    def detach(self, conn: Connection) -> None:
        with self.lock:
            if conn in self.connections:
                self.connections.remove(conn)
                self.watches_changed()

    # -- requests --------------------------------------------------------------------------------------

    def execute(self, conn: Connection, op: int, tx_id: int, payload: bytes) -> bytes:
        """Run one request as `conn`'s domain; returns the reply payload or raises XsError."""
        if len(payload) > PAYLOAD_MAX:
            raise XsError("E2BIG")
        args = payload.split(b"\0")
        with self.lock:
            tx = self._transaction(conn, tx_id) if tx_id else None
            tree = tx.tree if tx is not None else self.store.tree
            handler = _HANDLERS.get(op)
            if handler is None:
                raise XsError("ENOSYS")
            return handler(self, conn, tx, tree, args, payload)

    def _transaction(self, conn: Connection, tx_id: int) -> Transaction:
        tx = conn.transactions.get(tx_id)
        if tx is None:
            raise XsError("ENOENT")
        return tx

    def path_arg(self, conn: Connection, args: list[bytes]) -> str:
        if not args or not args[0]:
            raise XsError("EINVAL")
        try:
            return normalise(args[0].decode("ascii"), conn.domid)
        except UnicodeDecodeError:
            raise XsError("EINVAL") from None

    # -- watches ---------------------------------------------------------------------------------------

    def fire(
        self, changed: list[str], tree: Tree | None = None, removed_perms: dict[str, NodePerms] | None = None
    ) -> None:
        """Queue watch events for `changed` paths to every connection whose watches match and may read."""
        if self.faults.drop_events:
            return
        live = tree or self.store.tree
        if not removed_perms:
            self._fire_indexed(changed, live)
            return
        for conn in list(self.connections):
            for watch in conn.watches:
                sent: set[str] = set()
                for path in changed:
                    if not watch_matches(watch.path, path):
                        continue
                    if not self._may_see(conn, path, live, removed_perms):
                        continue
                    # a removed ancestor is reported as the watched node itself, as C xenstored does
                    event = watch.path if watch.path.startswith(path.rstrip("/") + "/") else path
                    if event not in sent:
                        sent.add(event)
                        conn.sink(_relative(event, watch, conn), watch.token)

    def _fire_indexed(self, changed: list[str], live: Tree) -> None:
        """Writes (the hot path) look up watches on the changed paths and their ancestors only."""
        index = self._watch_index()
        sent: set[tuple[int, str]] = set()
        for path in changed:
            candidate = path
            while True:
                for conn, watch in index.get(candidate, ()):
                    key = (id(watch), path)
                    if key not in sent and self._may_see(conn, path, live, None):
                        sent.add(key)
                        conn.sink(_relative(path, watch, conn), watch.token)
                if candidate == "/":
                    break
                candidate = parent_of(candidate)

    def watches_changed(self) -> None:
        self._index = None

    def _watch_index(self) -> dict[str, list[tuple[Connection, Watch]]]:
        if self._index is None:
            index: dict[str, list[tuple[Connection, Watch]]] = {}
            for conn in self.connections:
                for watch in conn.watches:
                    index.setdefault(watch.path, []).append((conn, watch))
            self._index = index
        return self._index

    def fire_special(self, name: str) -> None:
        for conn in list(self.connections):
            if conn.domid != PRIVILEGED:
                continue  # special nodes are readable by dom0 only (C xenstored's default permissions)
            for watch in conn.watches:
                if watch.path == name:
                    conn.sink(watch.given, watch.token)

    def _may_see(self, conn: Connection, path: str, tree: Tree, removed: dict[str, NodePerms] | None) -> bool:
        if conn.domid == PRIVILEGED:
            return True
        node = tree.get(path)
        if node is not None:
            return can(conn.domid, node, "r")
        perms = (removed or {}).get(path)
        if perms is None:
            parent = tree.get(parent_of(path))
            return parent is not None and can(conn.domid, parent, "r")
        return can(conn.domid, Node(b"", perms), "r")

    # -- domains ---------------------------------------------------------------------------------------

    def introduce(self, domid: int) -> None:
        with self.lock:
            self.introduced.add(domid)
            self.fire_special("@introduceDomain")

    def release(self, domid: int) -> None:
        with self.lock:
            self.introduced.discard(domid)
            for conn in list(self.connections):
                if conn.domid == domid:
                    conn.watches.clear()
                    conn.transactions.clear()
            self.watches_changed()
            self.fire_special("@releaseDomain")


NodePerms = tuple[Perm, ...]


def _relative(path: str, watch: Watch, conn: Connection) -> str:
    if watch.given.startswith("/") or path.startswith("@"):
        return path
    prefix = conn.home() + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def _ok() -> bytes:
    return b"OK\0"


def _directory(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    path = xs.path_arg(conn, args)
    node = xs.store.read(tree, conn.domid, path)
    if tx is not None:
        tx.depend([path])
    listing = b"".join(name.encode() + b"\0" for name in sorted(node.children))
    if len(listing) > PAYLOAD_MAX:
        raise XsError("E2BIG")  # the client must use DIRECTORY_PART, as with C xenstored
    return listing


def _directory_part(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    """`<generation>\0` then whole child names from byte `offset`; an extra NUL marks the last part."""
    path = xs.path_arg(conn, args)
    if len(args) < 2 or not args[1].isdigit():
        raise XsError("EINVAL")
    node = xs.store.read(tree, conn.domid, path)
    if tx is not None:
        tx.depend([path])
    listing = b"".join(name.encode() + b"\0" for name in sorted(node.children))
    offset = int(args[1])
    if offset > len(listing):
        raise XsError("EINVAL")
    head = str(node.gen).encode() + b"\0"
    room = PAYLOAD_MAX - len(head) - 1
    chunk = listing[offset:]
    if len(chunk) > room:
        chunk = chunk[: chunk.rfind(b"\0", 0, room) + 1]
        return head + chunk
    return head + chunk + b"\0"


def _read(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    path = xs.path_arg(conn, args)
    if tx is not None:
        tx.depend([path])
    return xs.store.read(tree, conn.domid, path).value


def _get_perms(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    path = xs.path_arg(conn, args)
    node = xs.store.read(tree, conn.domid, path)
    return b"".join(str(p).encode() + b"\0" for p in node.perms)


def _mutate(
    xs: Xenstored,
    conn: Connection,
    tx: Transaction | None,
    tree: Tree,
    path: str,
    action: Callable[[], list[str]],
    removing: bool = False,
) -> None:
    """Run a change; in a transaction, first note every node it can touch (for conflict detection)."""
    exists = tree.get(path) is not None
    before = {p: tree.nodes[p].perms for p in tree.subtree(path)} if removing and exists else {}
    if tx is not None:
        touched = [path]
        if removing:
            touched += [*before, parent_of(path)]
        elif not exists:
            touched += list(_up_to_existing(tree, path))
        tx.depend(touched)
    changed = action()
    if tx is not None:
        tx.dirty.update(changed)
        tx.dirty.update(parent_of(p) for p in changed if p != "/")
    elif changed:
        # a removal is one event per watch (for the removed node), as C xenstored fires it
        xs.fire([path] if removing else changed, removed_perms=before)


def _up_to_existing(tree: Tree, path: str) -> list[str]:
    """The missing ancestors a creation adds, and the existing one whose children change."""
    chain = []
    while path != "/":
        path = parent_of(path)
        chain.append(path)
        if tree.get(path) is not None:
            break
    return chain


def _write(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], payload: bytes
) -> bytes:
    path = xs.path_arg(conn, args)
    value = payload[payload.index(b"\0") + 1 :] if b"\0" in payload else b""
    _mutate(xs, conn, tx, tree, path, lambda: xs.store.write(tree, conn.domid, path, value))
    return _ok()


def _mkdir(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    path = xs.path_arg(conn, args)
    _mutate(xs, conn, tx, tree, path, lambda: xs.store.mkdir(tree, conn.domid, path))
    return _ok()


def _rm(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    path = xs.path_arg(conn, args)
    _mutate(xs, conn, tx, tree, path, lambda: xs.store.rm(tree, conn.domid, path), removing=True)
    return _ok()


def _set_perms(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    path = xs.path_arg(conn, args)
    try:
        perms = tuple(Perm.parse(a.decode("ascii")) for a in args[1:] if a)
    except UnicodeDecodeError:
        raise XsError("EINVAL") from None
    _mutate(xs, conn, tx, tree, path, lambda: xs.store.set_perms(tree, conn.domid, path, perms))
    return _ok()


def _watch(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if len(args) < 2 or not args[0]:
        raise XsError("EINVAL")
    given = args[0].decode("ascii", "replace")
    path = normalise(given, conn.domid)
    token = args[1].decode("ascii", "replace")
    if any(w.path == path and w.token == token for w in conn.watches):
        raise XsError("EEXIST")
    if conn.domid != PRIVILEGED and len(conn.watches) >= xs.watch_quota:
        raise XsError("E2BIG")
    watch = Watch(given, path, token)
    conn.watches.append(watch)
    xs.watches_changed()
    conn.sink(given, token)  # the initial event every WATCH fires
    return _ok()


def _unwatch(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if len(args) < 2:
        raise XsError("EINVAL")
    path = normalise(args[0].decode("ascii", "replace"), conn.domid)
    token = args[1].decode("ascii", "replace")
    for watch in conn.watches:
        if watch.path == path and watch.token == token:
            conn.watches.remove(watch)
            xs.watches_changed()
            return _ok()
    raise XsError("ENOENT")


def _tx_start(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if tx is not None:
        raise XsError("EBUSY")
    if conn.domid != PRIVILEGED and len(conn.transactions) >= TRANSACTIONS_PER_DOMAIN_QUOTA:
        raise XsError("ENOSPC")
    tx_id = next(xs._tx_ids)
    conn.transactions[tx_id] = Transaction(tx_id, conn.domid, xs.store.tree.copy())
    return str(tx_id).encode() + b"\0"


def _tx_end(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if tx is None:
        raise XsError("EINVAL")
    del conn.transactions[tx.id]
    if args[0] == b"F":
        return _ok()
    if args[0] != b"T":
        raise XsError("EINVAL")
    if tx.conflicts(xs.store.tree):
        raise XsError("EAGAIN")
    tx.apply(xs.store)
    xs.fire(sorted(tx.dirty))
    return _ok()


def _domid_arg(args: list[bytes]) -> int:
    if not args or not args[0].isdigit() or len(args[0]) > 5:
        raise XsError("EINVAL")
    return int(args[0])


def _introduce(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if conn.domid != PRIVILEGED:
        raise XsError("EACCES")
    xs.introduce(_domid_arg(args))
    return _ok()


def _release(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if conn.domid != PRIVILEGED:
        raise XsError("EACCES")
    domid = _domid_arg(args)
    if domid not in xs.introduced:
        raise XsError("ENOENT")
    xs.release(domid)
    return _ok()


def _get_domain_path(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    return f"/local/domain/{_domid_arg(args)}".encode() + b"\0"


def _is_introduced(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    return b"T\0" if _domid_arg(args) in xs.introduced else b"F\0"


def _reset_watches(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    conn.watches.clear()
    conn.transactions.clear()
    xs.watches_changed()
    return _ok()


def _privileged_ok(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if conn.domid != PRIVILEGED:
        raise XsError("EACCES")
    return _ok()


_HANDLERS: dict[
    int, Callable[[Xenstored, Connection, Transaction | None, Tree, list[bytes], bytes], bytes]
] = {
    DIRECTORY: _directory,
    READ: _read,
    GET_PERMS: _get_perms,
    WATCH: _watch,
    UNWATCH: _unwatch,
    TRANSACTION_START: _tx_start,
    TRANSACTION_END: _tx_end,
    INTRODUCE: _introduce,
    RELEASE: _release,
    GET_DOMAIN_PATH: _get_domain_path,
    WRITE: _write,
    MKDIR: _mkdir,
    RM: _rm,
    SET_PERMS: _set_perms,
    IS_DOMAIN_INTRODUCED: _is_introduced,
    RESUME: _privileged_ok,
    SET_TARGET: _privileged_ok,
    RESET_WATCHES: _reset_watches,
    DIRECTORY_PART: _directory_part,
}


class SocketServer:
    """Serves a Xenstored on a Unix socket; every connection is dom0, as xenstored's local socket is."""

    def __init__(self, engine: Xenstored, path: Path) -> None:
        self.engine = engine
        self.path = Path(path)
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
        for client in clients:
            client.close()

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            client = _SocketClient(self.engine, sock)
            with self._lock:
                self._clients.append(client)
            client.start()
            self._threads.extend(client.threads)


class _SocketClient:
    def __init__(self, engine: Xenstored, sock: socket.socket) -> None:
        self.engine = engine
        self.sock = sock
        self.out: queue.Queue[bytes | None] = queue.Queue()
        self.write_lock = threading.Lock()
        self.conn = engine.attach(PRIVILEGED, self._event)
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
