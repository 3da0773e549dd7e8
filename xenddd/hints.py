"""Hints that wake the reconciler. They carry no authority: each says only "look again at this".

Event sources (libvirt lifecycle, xenstore watches, udev, reconnects, the control socket) put hints on the
daemon's one queue; the reconciler drains it, coalesces, and re-reads real state before acting, so a
missed, duplicated or reordered hint cannot change the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DomainHint:
    """Something happened to a domain (libvirt lifecycle event, @introduceDomain/@releaseDomain)."""

    source: str
    name: str | None = None
    domid: int | None = None


@dataclass(frozen=True)
class XenstoreHint:
    """A watched xenstore subtree changed (or a watch fired spuriously): re-read `path`."""

    path: str


@dataclass(frozen=True)
class ResyncHint:
    """Re-read everything: daemon start, a reconnect to xenstored or libvirtd, a config reload, a timer."""

    reason: str


@dataclass(frozen=True)
class CallReturned:
    """A recovery's toolstack call (start, attach, detach) returned on its worker: advance the recovery.
    Nothing in xenstore is implied, so the registry is not re-read for it."""

    what: str = "toolstack call"


@dataclass(frozen=True)
class Recheck:
    """The time a pass asked to be called again has come (a backoff ends, a deadline passes, a batch of
    hinted paths is due). Nothing in xenstore is implied, so the registry is not re-read for it."""


@dataclass(frozen=True)
class ControlRequest:
    """An operator request from the control socket, executed on the reconciler's thread so that planned
    operations (destroy, restart, create) never race with recovery; `reply` is called exactly once."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)
    reply: Callable[[dict[str, Any]], None] = field(default=lambda _: None, compare=False)


Hint = DomainHint | XenstoreHint | ResyncHint | CallReturned | Recheck | ControlRequest


def domain_gone(hint: Hint) -> bool:
    """`@releaseDomain`: some domain shut down or went away — xenstored's word, the earliest there is,
    ahead of libvirt's destroy of a crashed domain and its lifecycle event."""
    return isinstance(hint, XenstoreHint) and hint.path == "@releaseDomain"
