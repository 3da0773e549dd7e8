"""Crash-safe JSON records in the state directory (registry, intent log, original PCI drivers, history).

A record is replaced atomically (write a temporary file, fsync it, rename over the old one, fsync the
directory), so a SIGKILL or power loss leaves either the old or the new record, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from xenddd.errors import XendddError


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


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


def read_json(path: Path, default: Any = None) -> Any:
    """The record at `path`, or `default` if there is none; a corrupt record is an error, never ignored."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return default
    try:
        return json.loads(data)
    except ValueError as exc:
        raise XendddError(f"state file {path} is corrupt ({exc}); move it aside to start afresh") from None


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
