"""The simulated xenstored's database: nodes, permissions, transactions, quotas and watch matching.

Semantics follow Xen's docs/misc/xenstore.txt and the C xenstored of Xen 4.17:
- A node's permissions are a list; the first entry names the owner and the access of everyone not listed
  (`n` none, `r` read, `w` write, `b` both); dom0 is privileged and bypasses them. A node created by an
  unprivileged domain inherits its parent's permissions with that domain as owner.
- WRITE and MKDIR create missing parents; RM is recursive; removing an absent node whose parent exists is OK.
- A transaction works on its own copy of the tree; at commit, if any node it read or wrote changed in the
  meantime (per-node generation counters), the commit fails with EAGAIN and nothing is applied.
- Watches fire for the path itself and everything below it, and for removed descendants; relative paths are
  relative to the domain's home `/local/domain/<domid>`.
Quotas apply to unprivileged domains only (`quotas.py`); a domain's node count is kept as nodes are added,
removed and handed over, so checking it costs nothing however large the store grows.
- A transaction sees each node as it was when it first touched it (as C xenstored's do, which copy only
  what they access): starting one costs nothing however large the store is.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from xenddd.sim.quotas import QuotaBook

PRIVILEGED = 0
_PATH_CHARS = re.compile(r"[A-Za-z0-9/_@.:;-]*")
PATH_MAX = 3072  # XENSTORE_ABS_PATH_MAX
PAYLOAD_MAX = 4096  # XENSTORE_PAYLOAD_MAX


class XsError(Exception):
    """A xenstore error, named like the errno the wire protocol carries (ENOENT, EACCES, EAGAIN...)."""

    def __init__(self, errno_name: str) -> None:
        super().__init__(errno_name)
        self.errno_name = errno_name


@dataclass(frozen=True)
class Perm:
    domid: int
    access: str  # n, r, w, b

    def __str__(self) -> str:
        return f"{self.access}{self.domid}"

    @classmethod
    def parse(cls, text: str) -> Perm:
        if len(text) < 2 or text[0] not in "nrwb" or not text[1:].isdigit():
            raise XsError("EINVAL")
        return cls(int(text[1:]), text[0])


@dataclass
class Node:
    value: bytes
    perms: tuple[Perm, ...]
    children: set[str] = field(default_factory=set)
    gen: int = 0

    @property
    def owner(self) -> int:
        return self.perms[0].domid

    def copy(self) -> Node:
        return Node(self.value, self.perms, set(self.children), self.gen)


def can(domid: int, node: Node, want: str, introduced: Mapping[int, int] | None = None) -> bool:
    """`want` is 'r' or 'w'; the owner may do anything, listed domains their entry, others the default.
    `introduced`: see `valid_perms`."""
    if domid == PRIVILEGED or node.owner == domid:
        return True
    access = node.perms[0].access
    for perm in valid_perms(node, introduced)[1:]:
        if perm.domid == domid:
            access = perm.access
            break
    return access == "b" or access == want


def valid_perms(node: Node, introduced: Mapping[int, int] | None) -> tuple[Perm, ...]:
    """The node's permissions but the entries xenstored ignores (domain_adjust_node_perms, XSA-322): one
    naming a domain that is gone, or one introduced after the node was last written — an earlier domain
    of that domid. A new domain never inherits a dead one's access, and GET_PERMS no longer shows it.
    `introduced`: each known domain's generation (see Store.introduced); None checks nothing."""
    if introduced is None:
        return node.perms
    kept = [p for p in node.perms[1:] if p.domid in introduced and introduced[p.domid] <= node.gen]
    return (node.perms[0], *kept)


def parent_of(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


def ancestors(path: str) -> Iterator[str]:
    while path != "/":
        path = parent_of(path)
        yield path


def normalise(path: str, domid: int) -> str:
    """An absolute, validated path (relative ones are below the domain's home); special `@` paths pass."""
    if path.startswith("@"):
        if path not in ("@introduceDomain", "@releaseDomain"):
            raise XsError("EINVAL")
        return path
    if not path.startswith("/"):
        path = f"/local/domain/{domid}/{path}"
    if len(path) > PATH_MAX or (path != "/" and (path.endswith("/") or "//" in path)):
        raise XsError("EINVAL")
    if not _PATH_CHARS.fullmatch(path):
        raise XsError("EINVAL")
    return path


class Tree:
    """The live database: nodes by path, and how many each domain owns (its node quota's count)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {"/": Node(b"", (Perm(0, "n"),))}
        self.owned: Counter[int] = Counter({0: 1})

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def put(self, path: str, node: Node) -> None:
        old = self.nodes.get(path)
        if old is not None:
            self.owned[old.owner] -= 1
        self.nodes[path] = node
        self.owned[node.owner] += 1

    def remove(self, path: str) -> None:
        old = self.nodes.pop(path, None)
        if old is not None:
            self.owned[old.owner] -= 1

    def set_perms(self, path: str, node: Node, perms: tuple[Perm, ...]) -> None:
        self.owned[node.owner] -= 1
        node.perms = perms
        self.owned[node.owner] += 1

    def owned_by(self, domid: int) -> int:
        return self.owned[domid]

    def subtree(self, path: str) -> list[str]:
        """`path` and every descendant, parents before children (a driver domain's tree holds tens of
        thousands of nodes: walked without recursion or sorting)."""
        out: list[str] = []
        stack = [path]
        while stack:
            current = stack.pop()
            node = self.get(current)
            assert node is not None
            out.append(current)
            prefix = current.rstrip("/")
            stack.extend(f"{prefix}/{child}" for child in node.children)
        return out


class TxTree(Tree):
    """A transaction's view: the nodes it touched, copied from the live tree on first touch (None: removed
    in the transaction); everything else is read through to the live tree."""

    def __init__(self, live: Tree) -> None:  # no super().__init__(): it has no nodes of its own
        self.live = live
        self.local: dict[str, Node | None] = {}
        self.owned_delta: Counter[int] = Counter()

    def get(self, path: str) -> Node | None:
        if path in self.local:
            return self.local[path]
        node = self.live.get(path)
        if node is None:
            return None
        mine = self.local[path] = node.copy()
        return mine

    def put(self, path: str, node: Node) -> None:
        old = self.get(path)
        if old is not None:
            self.owned_delta[old.owner] -= 1
        self.local[path] = node
        self.owned_delta[node.owner] += 1

    def remove(self, path: str) -> None:
        old = self.get(path)
        if old is not None:
            self.owned_delta[old.owner] -= 1
        self.local[path] = None

    def set_perms(self, path: str, node: Node, perms: tuple[Perm, ...]) -> None:
        self.owned_delta[node.owner] -= 1
        node.perms = perms
        self.owned_delta[node.owner] += 1

    def owned_by(self, domid: int) -> int:
        return self.live.owned_by(domid) + self.owned_delta[domid]


class Store:
    """The live database plus the generation counter all mutations draw from."""

    def __init__(self, quotas: QuotaBook | None = None) -> None:
        self.tree = Tree()
        self.quotas = quotas or QuotaBook()
        self._gen = itertools.count(1)
        # domid → the generation its domain got when xenstored first heard of it: introduced, or named in
        # a node's permissions before that (libxl sets a new domain's up before it introduces it); forgotten
        # when the domain is released, so that a later domain with that domid gets a generation of its own
        self.introduced: dict[int, int] = {}

    def next_gen(self) -> int:
        return next(self._gen)

    def remember(self, domid: int) -> None:
        if domid not in self.introduced:
            self.introduced[domid] = self.next_gen()

    def forget(self, domid: int) -> None:
        self.introduced.pop(domid, None)

    # -- operations on a tree (live or a transaction's copy); they return the changed paths -----------

    def read(self, tree: Tree, domid: int, path: str) -> Node:
        node = tree.get(path)
        if node is None:
            raise XsError("ENOENT")
        if not can(domid, node, "r", self.introduced):
            raise XsError("EACCES")
        return node

    def write(self, tree: Tree, domid: int, path: str, value: bytes) -> list[str]:
        if domid != PRIVILEGED and self.quotas.exceeded(domid, "node-size", len(value) - 1):
            self.quotas.record(domid, "node-size", "ENOSPC", "WRITE", path)
            raise XsError("ENOSPC")
        node = tree.get(path)
        if node is not None:
            if not can(domid, node, "w", self.introduced):
                raise XsError("EACCES")
            node.value = value
            node.gen = self.next_gen()
            return [path]
        return self._create(tree, domid, path, value)

    def mkdir(self, tree: Tree, domid: int, path: str) -> list[str]:
        if tree.get(path) is not None:
            return []
        return self._create(tree, domid, path)

    def rm(self, tree: Tree, domid: int, path: str, subtree: list[str]) -> list[str]:
        """`subtree`: `tree.subtree(path)`, walked by the caller, who needs it too."""
        if path == "/":
            raise XsError("EINVAL")
        node = tree.get(path)
        if node is None:
            parent = tree.get(parent_of(path))
            if parent is None:
                raise XsError("ENOENT")
            return []
        parent = tree.get(parent_of(path))
        assert parent is not None
        if not can(domid, parent, "w", self.introduced) and not can(domid, node, "w", self.introduced):
            raise XsError("EACCES")
        for victim in subtree:
            tree.remove(victim)
        parent.children.discard(path.rsplit("/", 1)[1])
        parent.gen = self.next_gen()
        return subtree

    def set_perms(self, tree: Tree, domid: int, path: str, perms: tuple[Perm, ...]) -> list[str]:
        node = tree.get(path)
        if node is None:
            raise XsError("ENOENT")
        if not perms:
            raise XsError("EINVAL")
        if domid != PRIVILEGED and node.owner != domid:
            raise XsError("EACCES")
        if domid != PRIVILEGED and perms[0].domid != node.owner:
            raise XsError("EPERM")  # only a privileged domain may hand a node to another owner
        for perm in perms:
            self.remember(perm.domid)
        tree.set_perms(path, node, perms)
        node.gen = self.next_gen()
        return [path]

    def _create(self, tree: Tree, domid: int, path: str, value: bytes = b"") -> list[str]:
        missing = [path]
        for ancestor in ancestors(path):
            if tree.get(ancestor) is not None:
                break
            missing.append(ancestor)
        parent = tree.get(parent_of(missing[-1]))
        assert parent is not None
        if not can(domid, parent, "w", self.introduced):
            raise XsError("EACCES")
        owned = tree.owned_by(domid) + len(missing) - 1
        if domid != PRIVILEGED and self.quotas.exceeded(domid, "nodes", owned):
            self.quotas.record(domid, "nodes", "ENOSPC", "create", path)
            raise XsError("ENOSPC")
        for new in reversed(missing):
            owner_parent = tree.get(parent_of(new))
            assert owner_parent is not None
            perms = owner_parent.perms
            if domid != PRIVILEGED:
                perms = (Perm(domid, perms[0].access), *perms[1:])
            gen = self.next_gen()
            tree.put(new, Node(value if new == path else b"", perms, gen=gen))
            owner_parent.children.add(new.rsplit("/", 1)[1])
            owner_parent.gen = gen
        return list(reversed(missing))


@dataclass
class Transaction:
    """A private copy of the tree. `start_gens` holds, for every node the transaction read or changed, its
    generation when the transaction began; the commit is refused if any of them moved since."""

    id: int
    domid: int
    tree: TxTree
    start_gens: dict[str, int] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # nodes to copy into the live tree at the commit
    events: set[str] = field(default_factory=set)  # paths whose watches fire at the commit
    removed_perms: dict[str, tuple[Perm, ...]] = field(default_factory=dict)  # of the removed nodes

    def depend(self, paths: list[str]) -> None:
        for path in paths:
            if path not in self.start_gens:
                node = self.tree.get(path)
                self.start_gens[path] = node.gen if node is not None else -1

    def conflicts(self, live: Tree) -> bool:
        for path, gen in self.start_gens.items():
            node = live.get(path)
            if (node.gen if node is not None else -1) != gen:
                return True
        return False

    def apply(self, store: Store) -> None:
        """Copy every node this transaction changed into the live tree (conflicts checked first)."""
        gen = store.next_gen()
        for path in sorted(self.dirty, key=len):
            if path not in self.tree.local:
                continue  # only read (a parent of a changed node that did not change itself)
            node = self.tree.local[path]
            if node is None:
                store.tree.remove(path)
            else:
                fresh = node.copy()
                fresh.gen = gen
                store.tree.put(path, fresh)
