"""A Debian kernel's bzImage unpacked into the ELF kernel inside it (`image build --unpack-kernel`).

Xen's domain builder boots a PV kernel from its ELF: given a bzImage, it decompresses the payload in dom0
at every start of the domain. For a driver domain that is part of every recovery's outage — on the test
bed, trixie's zstd kernel under emulation, 1.3 to 1.4 s of a start to ready of about 10 s — paid again for
an image whose kernel never changes between starts. Unpacked once at build time, the start maps the ELF
as it is; the price is disk in dom0 (Debian's kernel: 12 MB packed, about 58 MB unpacked). The memory the
domain's kernel occupies is the same either way.

The layout is the x86 boot protocol's (Linux's Documentation/arch/x86/boot.rst): `HdrS` at 0x202, the
protocol version at 0x206 (2.08 and later give the payload's offset and length at 0x248 and 0x24c, from
the end of the setup sectors, whose count is at 0x1f1). The kernel's build appends the unpacked size
(32 bits, little-endian) to every payload format but gzip, whose own trailer holds it. What comes out
must be an ELF of exactly that size; anything else is refused in one line, and nothing is written.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import struct
import zlib
from collections.abc import Callable
from typing import Any

from xenddd.errors import InputError

HEADER_MAGIC = b"HdrS"
MIN_PROTOCOL = 0x208  # payload_offset and payload_length
ELF_MAGIC = b"\x7fELF"
# a driver domain's kernel, unpacked: Debian's is about 58 MB; beyond this a size field is nonsense
MAX_UNPACKED = 512 << 20
LZ4_MAGIC = 0x184C2102  # lz4's legacy format
LZ4_BLOCK = 8 << 20  # what each of its blocks but the last unpacks to


def unpack(bzimage: bytes, where: str) -> bytes:
    """The ELF kernel inside `bzimage` (read from `where`, named in errors)."""
    payload = _payload(bzimage, where)
    found = next((known for known in _FORMATS if payload.startswith(known[0])), None)
    if found is None:
        raise InputError(f"{where}: the kernel's payload is in no format --unpack-kernel reads ({_NAMES})")
    _magic, name, decode = found
    size = _le32(payload[-4:])
    body = payload if name == "gzip" else payload[:-4]  # gzip's trailer is its own, the size its last word
    if not 0 < size <= MAX_UNPACKED:
        raise InputError(f"{where}: the kernel's {name} payload gives an unpacked size of {size} bytes")
    try:
        elf = decode(body, size)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        raise InputError(f"{where}: the kernel's {name} payload does not decompress ({exc})") from exc
    if len(elf) != size or not elf.startswith(ELF_MAGIC):
        what = "an ELF" if elf.startswith(ELF_MAGIC) else "no ELF"
        raise InputError(
            f"{where}: the kernel's {name} payload unpacks to {what} of {len(elf)} bytes, not {size}"
        )
    return elf


def _payload(bzimage: bytes, where: str) -> bytes:
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != HEADER_MAGIC:
        raise InputError(f"{where}: not a bzImage (no boot protocol header)")
    (version,) = struct.unpack_from("<H", bzimage, 0x206)
    if version < MIN_PROTOCOL:
        raise InputError(
            f"{where}: boot protocol {version >> 8}.{version & 0xFF:02d}, 2.08 or later has a payload"
        )
    setup_sectors = bzimage[0x1F1] or 4  # 0 means 4, as the boot protocol says
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    if length <= 4 or start + length > len(bzimage):
        raise InputError(f"{where}: the bzImage's payload lies outside the file")
    return bzimage[start : start + length]


def _le32(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _streamed(decompressor: Callable[[], Any]) -> Callable[[bytes, int], bytes]:
    """A format Python reads itself: one byte more than the size asked for, so a longer output shows."""
    return lambda body, size: decompressor().decompress(body, size + 1)


def _zstd(body: bytes, size: int) -> bytes:
    zstandard = _library("zstandard", "zstd", "python3-zstandard")
    try:
        # the kernel's frame is packed with a large window (--ultra -22) and records no content size
        unpacker = zstandard.ZstdDecompressor(max_window_size=1 << 31)
        with unpacker.stream_reader(body) as reader:
            return bytes(reader.read(size + 1))
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from exc


def _lz4(body: bytes, size: int) -> bytes:
    """lz4's legacy format (`lz4 -l`, bookworm's cloud kernel): the magic, then blocks each after its
    packed length, every block but the last unpacking to LZ4_BLOCK; the magic may come again between."""
    block = _library("lz4.block", "lz4", "python3-lz4")
    chunks: list[bytes] = []
    at = total = 0
    while at < len(body) and total <= size:
        if len(body) - at < 4:
            raise ValueError(f"{len(body) - at} bytes after the last block")
        length, at = _le32(body[at : at + 4]), at + 4
        if length == LZ4_MAGIC:
            continue
        if length > len(body) - at:
            raise ValueError(f"a block of {length} bytes runs past the payload")
        try:
            chunk = block.decompress(body[at : at + length], uncompressed_size=LZ4_BLOCK)
        except block.LZ4BlockError as exc:
            raise ValueError(str(exc)) from exc
        chunks.append(chunk)
        total, at = total + len(chunk), at + length
    return b"".join(chunks)


def _library(module: str, fmt: str, package: str) -> Any:
    """The decompressor a format needs beyond Python's own: an optional dependency, named if missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pip = module.split(".")[0]
        raise InputError(
            f"the kernel's payload is {fmt}: --unpack-kernel needs {package} (pip: {pip})"
        ) from None


_FORMATS: tuple[tuple[bytes, str, Callable[[bytes, int], bytes]], ...] = (
    (b"\x1f\x8b", "gzip", _streamed(lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))),
    (b"\xfd7zXZ\x00", "xz", _streamed(lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ))),
    (b"\x5d\x00\x00", "lzma", _streamed(lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE))),
    (b"BZh", "bzip2", _streamed(bz2.BZ2Decompressor)),
    (b"\x28\xb5\x2f\xfd", "zstd", _zstd),
    (LZ4_MAGIC.to_bytes(4, "little"), "lz4", _lz4),
)
_NAMES = ", ".join(name for _m, name, _d in _FORMATS)
