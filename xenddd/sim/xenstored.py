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

import bisect
import logging
import threading
from collections import Counter

from xenddd.sim.quotas import QuotaBook
from xenddd.sim.store import (
    PAYLOAD_MAX,
    PRIVILEGED,
    Node,
    Store,
    Transaction,
    Tree,
    XsError,
    can,
    normalise,
    parent_of,
)
from xenddd.sim.xenstored_conn import Connection, EventSink, Faults, NodePerms, Watch, relative_path
from xenddd.sim.xenstored_ops import HANDLERS

log = logging.getLogger(__name__)


class Xenstored:
    """The database engine shared by socket and in-process clients."""

    def __init__(self, quotas: QuotaBook | None = None) -> None:
        self.quotas = quotas or QuotaBook()
        self.store = Store(self.quotas)
        self.lock = threading.RLock()
        self.connections: list[Connection] = []
        self.introduced: set[int] = {0}
        self.faults = Faults()
        # every watch by its absolute path, and the watched paths sorted (a removal finds the watches
        # below the removed node as one range): firing costs the changed path's depth, not the watch count
        self._index: dict[str, list[tuple[Connection, Watch]]] = {}
        self._watched_paths: list[str] = []
        self._watch_counts: Counter[int] = Counter()
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
                self.clear_watches(conn)

    # -- requests --------------------------------------------------------------------------------------

    def execute(self, conn: Connection, op: int, tx_id: int, payload: bytes) -> bytes:
        """Run one request as `conn`'s domain; returns the reply payload or raises XsError."""
        if len(payload) > PAYLOAD_MAX:
            raise XsError("E2BIG")
        args = payload.split(b"\0")
        with self.lock:
            tx = self._transaction(conn, tx_id) if tx_id else None
            tree = tx.tree if tx is not None else self.store.tree
            handler = HANDLERS.get(op)
            if handler is None:
                raise XsError("ENOSYS")
            return handler(self, conn, tx, tree, args, payload)

    def _transaction(self, conn: Connection, tx_id: int) -> Transaction:
        tx = conn.transactions.get(tx_id)
        if tx is None:
            raise XsError("ENOENT")
        return tx

    def count_watches(self, domid: int) -> int:
        """A domain's watches over all its connections (C xenstored counts them per domain)."""
        return self._watch_counts[domid]

    def count_transactions(self, domid: int) -> int:
        return sum(len(c.transactions) for c in self.connections if c.domid == domid)

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
        """Queue watch events for `changed` paths to every connection whose watches match and may read.

        A watch sees changes to its path and below; `removed_perms` (the removed subtree's permissions)
        says `changed` were removed, which a watch below a removed node sees as its own node removed."""
        if self.faults.drop_events:
            return
        live = tree or self.store.tree
        sent: set[tuple[int, str]] = set()
        for path in changed:
            candidate = path
            while True:
                for conn, watch in self._index.get(candidate, ()):
                    self._send(conn, watch, path, path, live, removed_perms, sent)
                if candidate == "/" or candidate.startswith("@"):
                    break
                candidate = parent_of(candidate)
            if removed_perms and not path.startswith("@"):
                prefix = path.rstrip("/") + "/"
                low = bisect.bisect_left(self._watched_paths, prefix)
                high = bisect.bisect_left(self._watched_paths, prefix[:-1] + "0")  # "0" follows "/"
                for watched in self._watched_paths[low:high]:
                    for conn, watch in self._index[watched]:
                        # a removed ancestor is reported as the watched node itself, as C xenstored does
                        self._send(conn, watch, watched, path, live, removed_perms, sent)

    def _send(
        self,
        conn: Connection,
        watch: Watch,
        event: str,
        path: str,
        live: Tree,
        removed: dict[str, NodePerms] | None,
        sent: set[tuple[int, str]],
    ) -> None:
        key = (id(watch), event)
        if key not in sent and self._may_see(conn, path, live, removed):
            sent.add(key)
            conn.sink(relative_path(event, watch, conn), watch.token)

    def add_watch(self, conn: Connection, watch: Watch) -> None:
        conn.watches[(watch.path, watch.token)] = watch
        self._watch_counts[conn.domid] += 1
        entries = self._index.get(watch.path)
        if entries is None:
            entries = self._index[watch.path] = []
            bisect.insort(self._watched_paths, watch.path)
        entries.append((conn, watch))

    def remove_watch(self, conn: Connection, watch: Watch) -> None:
        del conn.watches[(watch.path, watch.token)]
        self._watch_counts[conn.domid] -= 1
        entries = self._index[watch.path]
        entries.remove((conn, watch))
        if not entries:
            del self._index[watch.path]
            del self._watched_paths[bisect.bisect_left(self._watched_paths, watch.path)]

    def clear_watches(self, conn: Connection) -> None:
        for watch in list(conn.watches.values()):
            self.remove_watch(conn, watch)

    def fire_special(self, name: str) -> None:
        for conn, watch in list(self._index.get(name, ())):
            if conn.domid == PRIVILEGED:  # special nodes are readable by dom0 only (C xenstored's default)
                conn.sink(watch.given, watch.token)

    def _may_see(self, conn: Connection, path: str, tree: Tree, removed: dict[str, NodePerms] | None) -> bool:
        if conn.domid == PRIVILEGED:
            return True
        node = tree.get(path)
        if node is not None:
            return can(conn.domid, node, "r", self.store.introduced)
        perms = (removed or {}).get(path)
        if perms is None:
            parent = tree.get(parent_of(path))
            return parent is not None and can(conn.domid, parent, "r", self.store.introduced)
        return can(conn.domid, Node(b"", perms), "r")

    # -- domains ---------------------------------------------------------------------------------------

    def introduce(self, domid: int) -> None:
        with self.lock:
            self.introduced.add(domid)
            self.store.remember(domid)
            self.fire_special("@introduceDomain")

    def shut_down(self, domid: int) -> None:
        """The hypervisor reported `domid` shut down (VIRQ_DOM_EXC): watchers of @releaseDomain hear of it
        now, before the toolstack has destroyed the domain and removed its nodes."""
        with self.lock:
            if domid in self.introduced:
                self.fire_special("@releaseDomain")

    def release(self, domid: int) -> None:
        """As C xenstored's domain_tree_remove: the nodes the domain owned outside its home (a driver
        domain's `mtu` in its guests' vif frontends) are deleted, since no one else may write them."""
        with self.lock:
            self.introduced.discard(domid)
            self.store.forget(domid)
            tree = self.store.tree
            owns = tree.owned_by(domid) > 0  # most domains own nothing by now: no walk of the database
            orphans = (
                [p for p, node in tree.nodes.items() if node.owner == domid and p != "/"] if owns else []
            )
            for path in sorted(orphans, key=len):
                if tree.get(path) is None:
                    continue  # under an orphan removed already
                nodes = tree.subtree(path)
                before = {p: node.perms for p in nodes if (node := tree.get(p)) is not None}
                self.store.rm(tree, PRIVILEGED, path, nodes)
                self.fire([path], removed_perms=before)
            for conn in list(self.connections):
                if conn.domid == domid:
                    self.clear_watches(conn)
                    conn.transactions.clear()
            self.fire_special("@releaseDomain")
