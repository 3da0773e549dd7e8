"""The simulated xenstored's operations: one handler per wire op, run under the engine's lock as the
connection's domain, with C xenstored's permission checks, quotas and error names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from xenddd.sim.quotas import XEN_4_22, Quotas
from xenddd.sim.store import (
    PAYLOAD_MAX,
    PRIVILEGED,
    Node,
    Perm,
    Transaction,
    Tree,
    TxTree,
    XsError,
    normalise,
    parent_of,
    valid_perms,
)
from xenddd.sim.xenstored_conn import Connection, Watch

if TYPE_CHECKING:
    from xenddd.sim.xenstored import Xenstored

log = logging.getLogger(__name__)


(CONTROL, DIRECTORY, READ, GET_PERMS, WATCH, UNWATCH, TRANSACTION_START, TRANSACTION_END, INTRODUCE, RELEASE,
 GET_DOMAIN_PATH, WRITE, MKDIR, RM, SET_PERMS, WATCH_EVENT, ERROR, IS_DOMAIN_INTRODUCED, RESUME, SET_TARGET
 ) = range(20)  # fmt: skip
RESET_WATCHES = 21
DIRECTORY_PART = 22
GET_QUOTA = 25  # Xen 4.22
SET_QUOTA = 26
OP_NAMES = {
    CONTROL: "CONTROL",
    DIRECTORY: "DIRECTORY",
    READ: "READ",
    GET_PERMS: "GET_PERMS",
    WATCH: "WATCH",
    UNWATCH: "UNWATCH",
    TRANSACTION_START: "TRANSACTION_START",
    TRANSACTION_END: "TRANSACTION_END",
    INTRODUCE: "INTRODUCE",
    RELEASE: "RELEASE",
    GET_DOMAIN_PATH: "GET_DOMAIN_PATH",
    WRITE: "WRITE",
    MKDIR: "MKDIR",
    RM: "RM",
    SET_PERMS: "SET_PERMS",
    WATCH_EVENT: "WATCH_EVENT",
    ERROR: "ERROR",
    IS_DOMAIN_INTRODUCED: "IS_DOMAIN_INTRODUCED",
    RESUME: "RESUME",
    SET_TARGET: "SET_TARGET",
    RESET_WATCHES: "RESET_WATCHES",
    DIRECTORY_PART: "DIRECTORY_PART",
    GET_QUOTA: "GET_QUOTA",
    SET_QUOTA: "SET_QUOTA",
}


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
    return b"".join(str(p).encode() + b"\0" for p in valid_perms(node, xs.store.introduced))


def _mutate(
    xs: Xenstored,
    conn: Connection,
    tx: Transaction | None,
    tree: Tree,
    path: str,
    action: Callable[[], list[str]],
    removing: list[str] | None = None,
) -> None:
    """Run a change; in a transaction, first note every node it can touch (for conflict detection).
    `removing`: the nodes a removal takes (none if `path` does not exist)."""
    exists = tree.get(path) is not None
    before = {p: _node(tree, p).perms for p in removing} if removing else {}
    if tx is not None:
        touched = [path]
        if removing is not None:
            touched += [*before, parent_of(path)]
        elif not exists:
            touched += list(_up_to_existing(tree, path))
        tx.depend(touched)
    changed = action()
    # a removal is one event per watch (for the removed node), as C xenstored fires it
    events = [path] if removing is not None else changed
    if tx is not None:
        tx.dirty.update(changed)
        tx.dirty.update(parent_of(p) for p in changed if p != "/")
        if changed:
            tx.events.update(events)  # fired at the commit: what the same requests fire outside one
            tx.removed_perms.update(before)
    elif changed:
        xs.fire(events, removed_perms=before)


def _node(tree: Tree, path: str) -> Node:
    node = tree.get(path)
    assert node is not None
    return node


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
    # walked once (a crashed driver domain's tree is tens of thousands of nodes): for the transaction's
    # conflicts, the watches' permissions and the removal itself
    nodes = tree.subtree(path) if tree.get(path) is not None else []
    _mutate(xs, conn, tx, tree, path, lambda: xs.store.rm(tree, conn.domid, path, nodes), removing=nodes)
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
    if (path, token) in conn.watches:
        raise XsError("EEXIST")
    if conn.domid != PRIVILEGED and xs.quotas.exceeded(conn.domid, "watches", xs.count_watches(conn.domid)):
        xs.quotas.record(conn.domid, "watches", xs.quotas.watch_errno(), "WATCH", path)
        raise XsError(xs.quotas.watch_errno())
    watch = Watch(given, path, token)
    xs.add_watch(conn, watch)
    conn.sink(given, token)  # the initial event every WATCH fires
    return _ok()


def _unwatch(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if len(args) < 2:
        raise XsError("EINVAL")
    path = normalise(args[0].decode("ascii", "replace"), conn.domid)
    token = args[1].decode("ascii", "replace")
    watch = conn.watches.get((path, token))
    if watch is None:
        raise XsError("ENOENT")
    xs.remove_watch(conn, watch)
    return _ok()


def _tx_start(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if tx is not None:
        raise XsError("EBUSY")
    if conn.domid != PRIVILEGED and xs.quotas.exceeded(
        conn.domid, "transactions", xs.count_transactions(conn.domid)
    ):
        xs.quotas.record(conn.domid, "transactions", "ENOSPC", "TRANSACTION_START", "")
        raise XsError("ENOSPC")
    tx_id = next(xs._tx_ids)
    conn.transactions[tx_id] = Transaction(tx_id, conn.domid, TxTree(xs.store.tree))
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
    xs.fire(sorted(tx.events), removed_perms=tx.removed_perms)
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
    xs.clear_watches(conn)
    conn.transactions.clear()
    return _ok()


def _get_quota(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    """Xen 4.22: `[[<domid>|]<quota>|]`; no argument lists the quota names."""
    words = _quota_words(xs, conn, args, 0, 2)
    if not words:
        return " ".join(Quotas.NAMES).encode() + b"\0"
    domid, name = (int(words[0]), words[1]) if len(words) == 2 else (None, words[0])
    quotas = xs.quotas.defaults if domid is None else xs.quotas.of(domid)
    if name not in Quotas.NAMES:
        raise XsError("EINVAL")
    return str(quotas.get(name)).encode() + b"\0"


def _set_quota(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    """Xen 4.22: `[<domid>|]<quota>|<value>|` — a domain's own value, or the default of domains to come."""
    words = _quota_words(xs, conn, args, 2, 3)
    if not words[-1].isdigit() or (len(words) == 3 and not words[0].isdigit()):
        raise XsError("EINVAL")
    try:
        if len(words) == 2:
            xs.quotas.defaults = xs.quotas.defaults.with_value(words[0], int(words[1]))
        else:
            domid = int(words[0])
            xs.quotas.per_domain[domid] = xs.quotas.of(domid).with_value(words[1], int(words[2]))
    except ValueError:
        raise XsError("EINVAL") from None
    return _ok()


def _quota_words(xs: Xenstored, conn: Connection, args: list[bytes], least: int, most: int) -> list[str]:
    if xs.quotas.version < XEN_4_22:
        raise XsError("ENOSYS")
    if conn.domid != PRIVILEGED:
        raise XsError("EACCES")
    words = [a.decode("ascii", "replace") for a in args if a]
    if not least <= len(words) <= most:
        raise XsError("EINVAL")
    return words


def _privileged_ok(
    xs: Xenstored, conn: Connection, tx: Transaction | None, tree: Tree, args: list[bytes], _: bytes
) -> bytes:
    if conn.domid != PRIVILEGED:
        raise XsError("EACCES")
    return _ok()


HANDLERS: dict[
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
    GET_QUOTA: _get_quota,
    SET_QUOTA: _set_quota,
}
