"""Crash-safe JSON records in the state directory (registry, intent log, original PCI drivers, history).

A record is replaced atomically (write a temporary file, fsync it, rename over the old one, fsync the
directory), so a SIGKILL or power loss leaves either the old or the new record, never a torn one.

A record can still be damaged (a full disk, a bad sector, a hand edit, a file from another version): the
daemon's readers use `read_json_or_quarantine`, so one damaged record is moved aside and rebuilt from what
xenstore and libvirt show instead of keeping the daemon — and every driver domain it supervises — down.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a parser of an untrusted record raises when the record is not what it claims to be. RecursionError:
# json.loads of a deeply nested document.
DAMAGE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError)


@dataclass(frozen=True)
class Damage:
    """A record that could not be read back: where it was, where it now is (None if it could not be
    moved), and why it was refused."""

    path: Path
    moved_to: Path | None
    reason: str


DamageReport = Callable[[Damage], None]


def write_json(path: Path, value: Any) -> None:
    """One line (`python3 -m json.tool FILE` shows it indented): without `indent` json uses its C encoder,
    six times faster — an intent naming 1,000 frontends is saved on every pass of their recovery."""
    write_text(path, json.dumps(value, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def read_json_or_quarantine(
    path: Path,
    parse: Callable[[Any], T],
    *,
    on_damage: DamageReport | None = None,
    move_aside: bool = True,
) -> T | None:
    """`parse` of the record at `path`; None if there is none, or if it is damaged.

    Damaged means not UTF-8 JSON, or refused by `parse` with one of DAMAGE_ERRORS (it should raise
    ValueError for a wrong version or shape). A damaged record is moved aside to
    `<name>.corrupt-<UTC time>` — kept for the post-mortem, and out of the way so that it is reported once
    and the caller's next save does not overwrite the evidence — then reported: one warning here, and
    `on_damage` for the caller's history. The caller starts as if there were no record and rebuilds it from
    what xenstore and libvirt show. `move_aside=False` is for readers that do not own the file (the CLI
    while the daemon runs): they only warn.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return parse(json.loads(data))
    except DAMAGE_ERRORS as exc:
        reason = f"{type(exc).__name__}: {exc}"[:300]
    moved_to = _quarantine(path) if move_aside else None
    log.warning(
        "state file %s is damaged (%s); %s, starting from what xenstore and libvirt show",
        path,
        reason,
        f"moved aside to {moved_to.name}" if moved_to else "left in place",
    )
    if on_damage is not None:
        on_damage(Damage(path, moved_to, reason))
    return None


def _quarantine(path: Path) -> Path | None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.rename(path, target)
        _fsync_dir(path.parent)
    except OSError as exc:
        log.error("cannot move the damaged %s aside: %s", path, exc)
        return None
    return target


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    if path.parent.exists():
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
