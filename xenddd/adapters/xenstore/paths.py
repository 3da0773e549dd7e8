"""xenstore paths: joining checked node names, splitting, and the encoding the wire carries.

Node names often come from directory listings another domain wrote; checking every component here is what
keeps a hostile name from addressing a node outside the intended subtree.
"""

from __future__ import annotations

import re

NUL = b"\0"
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_@-]+")


class InvalidXenstorePath(ValueError):
    """A path component that xenstored would not accept (or that would escape its parent)."""


def xs_join(base: str, *components: str | int) -> str:
    """Join `components` below `base`, refusing any component xenstored's node-name rules would reject.

    Components often come from directory listings written by another domain; checking them here is what
    stops a hostile name like `..` or `a/b` from addressing a node outside the intended subtree.
    """
    parts = [base.rstrip("/")]
    for component in components:
        text = str(component)
        if not _COMPONENT_RE.fullmatch(text):
            raise InvalidXenstorePath(f"{text!r} is not a xenstore node name")
        parts.append(text)
    return "/".join(parts)


def split_path(path: str) -> list[str]:
    """The components of an absolute path (`/local/domain/3` → `['local', 'domain', '3']`)."""
    return [part for part in path.split("/") if part]


def encode_path(path: str) -> bytes:
    if not path or "\0" in path or not path.isascii() or len(path) > 3072:
        raise InvalidXenstorePath(f"{path[:80]!r} is not a xenstore path")
    return path.encode() + NUL


def decode_names(payload: bytes) -> list[str]:
    return [name.decode("ascii", "replace") for name in payload.split(NUL) if name]
