"""An installed Debian root, read as data: the host's own `/` or a debootstrapped tree.

Symlinks are resolved inside the root, never on the build host: `/usr/bin/awk` in the tree points at
`/etc/alternatives/awk`, which must be the tree's alternative, not the builder's. Debian's dpkg database
records paths as the package shipped them (`/bin/bash` in bookworm, `/usr/bin/bash` in trixie) while the
files live under merged `/usr`, so ownership is looked up by the canonical path of each recorded one.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from xenddd.errors import InputError

_MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one lookup
_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str


class RootTree:
    """Reads files of the root at `path` by their absolute paths inside it."""

    def __init__(self, path: Path) -> None:
        if not (path / "var/lib/dpkg/status").is_file():
            raise InputError(f"{path} is not an installed Debian root (no var/lib/dpkg/status)")
        self.path = path

    def canonical(self, inside: str) -> str:
        """The path with every symlink in it resolved within the root (`/bin/bash` → `/usr/bin/bash`)."""
        return self.resolve(inside)[0]

    def resolve(self, inside: str) -> tuple[str, list[tuple[str, str]]]:
        """The canonical path and the symlinks followed to reach it, each as (where it is, its target), so
        an image can carry the same chain (`/usr/bin/awk` → `/etc/alternatives/awk` → `/usr/bin/mawk`)."""
        links: list[tuple[str, str]] = []
        pending = inside.split("/")
        resolved: list[str] = []
        followed = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                resolved = resolved[:-1]
                continue
            host = self._host("/".join([*resolved, part]))
            if host.is_symlink():
                followed += 1
                if followed > _MAX_LINKS:
                    raise InputError(f"{inside}: too many levels of symbolic links in {self.path}")
                target = os.readlink(host)
                links.append(("/" + "/".join([*resolved, part]), target))
                resolved = [] if target.startswith("/") else resolved
                pending = target.split("/") + pending
            else:
                resolved.append(part)
        return "/" + "/".join(resolved), links

    def exists(self, inside: str) -> bool:
        return self._host(self.canonical(inside)).exists()

    def is_executable_file(self, inside: str) -> bool:
        host = self._host(self.canonical(inside))
        return host.is_file() and bool(host.stat().st_mode & stat.S_IXUSR)

    def read(self, inside: str) -> bytes:
        return self._host(self.canonical(inside)).read_bytes()

    def mode(self, inside: str) -> int:
        return stat.S_IMODE(self._host(self.canonical(inside)).stat().st_mode)

    def listdir(self, inside: str) -> list[str]:
        host = self._host(self.canonical(inside))
        return sorted(p.name for p in host.iterdir()) if host.is_dir() else []

    def files_under(self, inside: str) -> list[str]:
        """Every regular file below a directory of the root, by its path inside, sorted; symlinks are not
        followed (a kernel's modules are plain files)."""
        top = self.canonical(inside)
        host = self._host(top)
        found = [
            posixpath.join(top, os.path.relpath(os.path.join(directory, name), host))
            for directory, _, names in os.walk(host)
            for name in names
            if not os.path.islink(os.path.join(directory, name))
        ]
        return sorted(found)

    def which(self, command: str, search: tuple[str, ...]) -> str | None:
        """Where the tree's shell finds `command` on `search` (a PATH, first match), not resolved."""
        for directory in search:
            candidate = posixpath.join(directory, command)
            if self.is_executable_file(candidate):
                return candidate
        return None

    def owner(self, inside: str) -> Package | None:
        """The package that ships this file (by its canonical path), or None for a file no package lists."""
        name = self._owners.get(_merged_usr(self.canonical(inside)))
        return self.packages.get(name) if name else None

    @cached_property
    def packages(self) -> dict[str, Package]:
        """Installed packages (status `install ok installed`) by name, from dpkg's status file."""
        found: dict[str, Package] = {}
        text = (self.path / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
        for stanza in text.split("\n\n"):
            fields = dict(_field(line) for line in stanza.splitlines() if line[:1] not in ("", " ", "\t"))
            if fields.get("Status") == "install ok installed" and "Package" in fields:
                name = fields["Package"]
                found[name] = Package(name, fields.get("Version", ""), fields.get("Architecture", ""))
        return found

    @cached_property
    def _owners(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        for listing in sorted((self.path / "var/lib/dpkg/info").glob("*.list")):
            name = listing.name.removesuffix(".list").split(":", 1)[0]
            for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
                owners.setdefault(_merged_usr(line), name)
        return owners

    def _host(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")


def _merged_usr(path: str) -> str:
    """Where a path dpkg recorded lives on a merged-/usr system (every Debian root since bookworm)."""
    top, _, rest = path.lstrip("/").partition("/")
    return f"/usr/{top}/{rest}" if top in _MERGED else path


def _field(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key.strip(), value.strip()
