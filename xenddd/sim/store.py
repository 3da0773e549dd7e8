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
Quotas apply to unprivileged domains only, with the C daemon's defaults.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

PRIVILEGED = 0
ENTRY_SIZE_QUOTA = 2048  # quota-max-entry-size
NODES_PER_DOMAIN_QUOTA = 1000  # quota-nb-entry-per-domain
WATCHES_PER_DOMAIN_QUOTA = 128  # quota-nb-watch-per-domain
TRANSACTIONS_PER_DOMAIN_QUOTA = 10  # quota-max-transaction
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


def can(domid: int, node: Node, want: str) -> bool:
    """`want` is 'r' or 'w'; the owner may do anything, listed domains their entry, others the default."""
    if domid == PRIVILEGED or node.owner == domid:
        return True
    access = node.perms[0].access
    for perm in node.perms[1:]:
        if perm.domid == domid:
            access = perm.access
            break
    return access == "b" or access == want


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
    if any(not (c.isalnum() or c in "-/_@.:;") for c in path):
        raise XsError("EINVAL")
    return path


class Tree:
    """A consistent set of nodes; the live database and each transaction's private copy are Trees."""

    def __init__(self, nodes: dict[str, Node] | None = None) -> None:
        self.nodes: dict[str, Node] = nodes if nodes is not None else {"/": Node(b"", (Perm(0, "n"),))}

    def copy(self) -> Tree:
        return Tree({path: node.copy() for path, node in self.nodes.items()})

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def owned_by(self, domid: int) -> int:
        return sum(1 for node in self.nodes.values() if node.owner == domid)

    def subtree(self, path: str) -> list[str]:
        """`path` and every descendant, parents before children."""
        out = [path]
        for child in sorted(self.nodes[path].children):
            out.extend(self.subtree(f"{path.rstrip('/')}/{child}"))
        return out


class Store:
    """The live database plus the generation counter all mutations draw from."""

    def __init__(self) -> None:
        self.tree = Tree()
        self._gen = itertools.count(1)

    def next_gen(self) -> int:
        return next(self._gen)

    # -- operations on a tree (live or a transaction's copy); they return the changed paths -----------

    def read(self, tree: Tree, domid: int, path: str) -> Node:
        node = tree.get(path)
        if node is None:
            raise XsError("ENOENT")
        if not can(domid, node, "r"):
            raise XsError("EACCES")
        return node

    def write(self, tree: Tree, domid: int, path: str, value: bytes) -> list[str]:
        if domid != PRIVILEGED and len(value) > ENTRY_SIZE_QUOTA:
            raise XsError("ENOSPC")
        node = tree.get(path)
        if node is not None:
            if not can(domid, node, "w"):
                raise XsError("EACCES")
            node.value = value
            node.gen = self.next_gen()
            return [path]
        changed = self._create(tree, domid, path)
        tree.nodes[path].value = value
        return changed

    def mkdir(self, tree: Tree, domid: int, path: str) -> list[str]:
        if tree.get(path) is not None:
            return []
        return self._create(tree, domid, path)

    def rm(self, tree: Tree, domid: int, path: str) -> list[str]:
        if path == "/":
            raise XsError("EINVAL")
        node = tree.get(path)
        if node is None:
            parent = tree.get(parent_of(path))
            if parent is None:
                raise XsError("ENOENT")
            return []
        parent = tree.nodes[parent_of(path)]
        if not can(domid, parent, "w") and not can(domid, node, "w"):
            raise XsError("EACCES")
        removed = tree.subtree(path)
        for victim in removed:
            del tree.nodes[victim]
        parent.children.discard(path.rsplit("/", 1)[1])
        parent.gen = self.next_gen()
        return removed

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
        node.perms = perms
        node.gen = self.next_gen()
        return [path]

    def _create(self, tree: Tree, domid: int, path: str) -> list[str]:
        missing = [path]
        for ancestor in ancestors(path):
            if tree.get(ancestor) is not None:
                break
            missing.append(ancestor)
        top = parent_of(missing[-1])
        parent = tree.nodes[top]
        if not can(domid, parent, "w"):
            raise XsError("EACCES")
        if domid != PRIVILEGED and tree.owned_by(domid) + len(missing) > NODES_PER_DOMAIN_QUOTA:
            raise XsError("ENOSPC")
        for new in reversed(missing):
            owner_parent = tree.nodes[parent_of(new)]
            perms = owner_parent.perms
            if domid != PRIVILEGED:
                perms = (Perm(domid, perms[0].access), *perms[1:])
            gen = self.next_gen()
            tree.nodes[new] = Node(b"", perms, gen=gen)
            owner_parent.children.add(new.rsplit("/", 1)[1])
            owner_parent.gen = gen
        return list(reversed(missing))


@dataclass
class Transaction:
    """A private copy of the tree. `start_gens` holds, for every node the transaction read or changed, its
    generation when the transaction began; the commit is refused if any of them moved since."""

    id: int
    domid: int
    tree: Tree
    start_gens: dict[str, int] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

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
            node = self.tree.get(path)
            if node is None:
                store.tree.nodes.pop(path, None)
            else:
                fresh = node.copy()
                fresh.gen = gen
                store.tree.nodes[path] = fresh


def watch_matches(watch_path: str, changed: str) -> bool:
    """A watch sees changes to its path and below; a removed ancestor removes the watched node too."""
    if watch_path.startswith("@") or changed.startswith("@"):
        return watch_path == changed
    return (
        changed == watch_path
        or changed.startswith(watch_path.rstrip("/") + "/")
        or watch_path.startswith(changed.rstrip("/") + "/")
    )
