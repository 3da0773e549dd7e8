"""Synthetic ELF64 x86-64 files for the image tests: as small as a valid one can be, independent of the
machine the tests run on."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct

import lz4.block
import zstandard

LOADER = "/lib64/ld-linux-x86-64.so.2"
BASE = 0x400000  # the synthetic files' single PT_LOAD maps the whole file at this address
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME = 0, 1, 5, 14


def elf(
    *,
    interpreter: str | None = LOADER,
    needed: tuple[str, ...] = ("libfoo.so.1", "libc.so.6"),
    soname: str | None = "libme.so.3",
    dynamic: bool = True,
    strtab_address: int | None = None,
    elf_class: int = 2,
    byte_order: int = 1,
    machine: int = 62,
) -> bytes:
    """A minimal ELF64 file: header, program headers (PT_INTERP, PT_LOAD, PT_DYNAMIC), the interpreter
    string, the string table and, last, the dynamic section, so that any truncation cuts a segment."""
    kinds = ([PT_INTERP] if interpreter is not None else []) + [PT_LOAD] + ([PT_DYNAMIC] if dynamic else [])
    at = 64 + 56 * len(kinds)
    interp = interpreter.encode() + b"\0" if interpreter is not None else b""
    interp_at, at = at, at + len(interp)
    names = [*needed, *([soname] if soname is not None else [])]
    strtab, offsets = b"\0", []
    for name in names:
        offsets.append(len(strtab))
        strtab += name.encode() + b"\0"
    strtab_at, at = at, at + len(strtab)
    tags = [DT_NEEDED] * len(needed) + ([DT_SONAME] if soname is not None else [])
    address = BASE + strtab_at if strtab_address is None else strtab_address
    entries = [*zip(tags, offsets, strict=True), (DT_STRTAB, address), (DT_NULL, 0)]
    dyn = b"".join(struct.pack("<qQ", tag, value) for tag, value in entries) if dynamic else b""
    dyn_at, size = at, at + len(dyn)
    segment = {PT_INTERP: (interp_at, len(interp)), PT_LOAD: (0, size), PT_DYNAMIC: (dyn_at, len(dyn))}
    header = struct.pack(
        "<4sBBBB8xHHIQQQIHHHHHH",
        *(b"\x7fELF", elf_class, byte_order, 1, 0),  # ident: magic, class, data, version, OS ABI
        *(3, machine, 1, BASE, 64, 0, 0, 64, 56, len(kinds), 64, 0, 0),  # ET_DYN, ..., phoff 64, phnum
    )
    headers = b"".join(
        struct.pack("<IIQQQQQQ", kind, 4, offset, BASE + offset, BASE + offset, length, length, 8)
        for kind in kinds
        for offset, length in [segment[kind]]
    )
    data = header + headers + interp + strtab + dyn
    assert len(data) == size
    return data


def module(modinfo: list[tuple[str, str]], *, kind: int = 1, name: str = ".modinfo") -> bytes:
    """A minimal kernel module (ELF64 relocatable): a section named `name` holding the `key=value`
    entries, the section-name table, and the section headers last (null, that section, the names)."""
    body = b"".join(f"{key}={value}".encode() + b"\0" for key, value in modinfo)
    names = b"\0" + name.encode() + b"\0.shstrtab\0"
    body_at = 64
    names_at = body_at + len(body)
    headers_at = names_at + len(names)
    header = struct.pack(
        "<4sBBBB8xHHIQQQIHHHHHH",
        *(b"\x7fELF", 2, 1, 1, 0),
        *(kind, 62, 1, 0, 0, headers_at, 0, 64, 0, 0, 64, 3, 2),  # shoff, shentsize 64, shnum 3, shstrndx 2
    )
    sections = [
        (0, 0, 0, 0),
        (1, 1, body_at, len(body)),  # SHT_PROGBITS
        (1 + len(name) + 1, 3, names_at, len(names)),  # SHT_STRTAB
    ]
    headers = b"".join(
        struct.pack("<IIQQQQIIQQ", name_at, kind_, 0, 0, offset, size, 0, 0, 1, 0)
        for name_at, kind_, offset, size in sections
    )
    return header + body + names + headers


def bzimage(payload: bytes, *, version: int = 0x020F, setup_sectors: int = 1) -> bytes:
    """A bzImage as the x86 boot protocol lays it out: the setup sectors with the header's magic, version,
    payload offset and length, then the (compressed) payload."""
    setup = bytearray((setup_sectors + 1) * 512)
    setup[0x1F1] = setup_sectors
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    return bytes(setup) + payload


def packed(kernel: bytes, fmt: str) -> bytes:
    """`kernel` compressed as the kernel's build does for a bzImage: the unpacked size appended (le32) to
    every format but gzip; a zstd frame that records no content size."""
    size = struct.pack("<I", len(kernel))
    if fmt == "gzip":
        return gzip.compress(kernel, mtime=0)
    body = {
        "xz": lambda: lzma.compress(kernel, lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        "lzma": lambda: lzma.compress(kernel, lzma.FORMAT_ALONE),
        "bzip2": lambda: bz2.compress(kernel),
        "zstd": lambda: zstandard.ZstdCompressor(write_content_size=False).compress(kernel),
        "lz4": lambda: lz4_legacy(kernel),
    }[fmt]()
    return body + size


def lz4_legacy(kernel: bytes, blocks: int = 3) -> bytes:
    """lz4's legacy format in `blocks` blocks, the magic again before the last one (as concatenated
    frames have it)."""
    magic = struct.pack("<I", 0x184C2102)
    step = -(-len(kernel) // blocks)
    out = magic
    for n, at in enumerate(range(0, len(kernel), step)):
        packed_block = lz4.block.compress(kernel[at : at + step], store_size=False)
        out += (magic if n == blocks - 1 else b"") + struct.pack("<I", len(packed_block)) + packed_block
    return out
