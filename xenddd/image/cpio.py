"""A deterministic initramfs: cpio `newc` written here, never by `find | cpio`, so that the same files give
the same bytes (sorted paths, inode numbers in that order, owner root, one mtime, no device nodes: the
kernel's built-in initramfs provides /dev/console).

Compression: gzip with no timestamp or name in its header, or xz with CRC32 and a 1 MiB dictionary (what
the kernel's XZ decoder accepts), or none. Xen's PV domain builder gunzips a gzip initrd in dom0 before
the domain starts; xz is left to the driver domain's kernel.
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
from dataclasses import dataclass

COMPRESSIONS = ("gzip", "xz", "none")
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory (data None, target None), a file (data) or a symlink (target)."""

    path: str  # absolute inside the image
    mode: int  # permission bits only
    data: bytes | None = None
    target: str | None = None

    @property
    def kind(self) -> int:
        if self.target is not None:
            return stat.S_IFLNK
        return stat.S_IFREG if self.data is not None else stat.S_IFDIR


def archive(entries: list[Entry], mtime: int = 0) -> bytes:
    """The newc archive of `entries` plus every parent directory they need, sorted by path."""
    by_path = {e.path: e for e in entries}
    for entry in entries:
        parent = entry.path.rsplit("/", 1)[0]
        while parent and parent not in by_path:
            by_path[parent] = Entry(parent, 0o755)
            parent = parent.rsplit("/", 1)[0]
    out = io.BytesIO()
    for inode, path in enumerate(sorted(by_path, key=lambda p: p.encode()), start=1):
        entry = by_path[path]
        body = entry.data if entry.data is not None else (entry.target or "").encode()
        _member(out, path.lstrip("/"), entry.kind | entry.mode, inode, body, mtime)
    _member(out, _TRAILER, 0, 0, b"", 0)
    return out.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as packed:
            packed.write(data)
        return buffer.getvalue()
    if how == "xz":
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 1 << 20}]
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
    return data


def _member(out: io.BytesIO, name: str, mode: int, inode: int, body: bytes, mtime: int) -> None:
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, 1, mtime, len(body), 0, 0, 0, 0, len(encoded), 0)
    out.write(b"070701" + b"".join(b"%08X" % value for value in fields))
    out.write(encoded)
    out.write(b"\0" * (-(110 + len(encoded)) % 4))
    out.write(body)
    out.write(b"\0" * (-len(body) % 4))
