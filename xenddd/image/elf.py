"""What a dynamically linked ELF executable or shared library needs, and what a kernel module says of
itself, read from their bytes without running anything.

The initramfs builder copies each binary's shared libraries out of a Debian root tree. `ldd` would run the
build host's loader on the target, which is wrong when the tree is another release (or refuses a binary the
host cannot load); reading the file is exact and safe. Only the program headers are used, as the kernel and
ld.so do: they are what a loaded binary has, while section headers are optional (`sstrip` removes them).
A kernel module is a relocatable object with no program headers: its `.modinfo` section (found through
the section headers) carries what depmod would index, for a kernel unpacked from its package where depmod
never ran. Only ELF64 little-endian x86-64 is supported; anything else, or a corrupt file, raises `ElfError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xenddd.errors import XendddError

ELF_MAGIC = b"\x7fELF"
_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr: type flags offset vaddr paddr filesz memsz align
_DYN = struct.Struct("<qQ")  # Elf64_Dyn: d_tag, d_val
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr: name type flags addr offset size link info ...
ET_REL, ET_EXEC, ET_DYN, EM_X86_64 = 1, 2, 3, 62
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME = 0, 1, 5, 14


class ElfError(XendddError):
    """The bytes are no well-formed ELF64 x86-64 executable or shared library; the caller names the file."""


@dataclass(frozen=True)
class DynamicInfo:
    interpreter: str | None  # PT_INTERP's path; None for a shared library or a static binary
    needed: tuple[str, ...]  # DT_NEEDED sonames in the order of the dynamic section
    soname: str | None  # DT_SONAME if any


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def dynamic_info(data: bytes) -> DynamicInfo:
    """The interpreter, needed libraries and soname of an ELF64 x86-64 file; empty for a static binary."""
    segments = _program_headers(data)
    loads = [(vaddr, offset, size) for kind, offset, vaddr, size in segments if kind == PT_LOAD]
    for _vaddr, offset, size in loads:
        _within(data, offset, size, "a PT_LOAD segment")
    interpreter = None
    interp = next(((offset, size) for kind, offset, _, size in segments if kind == PT_INTERP), None)
    if interp is not None:
        interpreter = _decode(_within(data, *interp, "PT_INTERP").split(b"\0", 1)[0], "PT_INTERP")
        if not interpreter:
            raise ElfError("PT_INTERP names no interpreter")
    dynamic = next(((offset, size) for kind, offset, _, size in segments if kind == PT_DYNAMIC), None)
    if dynamic is None:
        return DynamicInfo(interpreter, (), None)
    table = _within(data, *dynamic, "PT_DYNAMIC")
    entries = []
    for tag, value in (_DYN.unpack_from(table, at) for at in range(0, len(table) - _DYN.size + 1, _DYN.size)):
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    else:
        raise ElfError("the dynamic section has no DT_NULL entry")
    strtab = next((value for tag, value in entries if tag == DT_STRTAB), None)
    names = [(tag, value) for tag, value in entries if tag in (DT_NEEDED, DT_SONAME)]
    if names and strtab is None:
        raise ElfError("the dynamic section has DT_NEEDED or DT_SONAME but no DT_STRTAB")
    strings: dict[int, str] = {}
    if strtab is not None:
        base, end = _file_range(loads, strtab)
        strings = {value: _string(data, base + value, end) for _, value in names}
    needed = tuple(strings[value] for tag, value in names if tag == DT_NEEDED)
    soname = next((strings[value] for tag, value in names if tag == DT_SONAME), None)
    return DynamicInfo(interpreter, needed, soname)


def modinfo(data: bytes) -> list[tuple[str, str]]:
    """The `key=value` entries of a kernel module's `.modinfo` section, in order (`depends`, `alias`,
    `softdep` repeat); empty if it has none."""
    kind, _, _, _, _, shoff, _, _, _, _, shentsize, shnum, shstrndx = _header(data)
    if kind != ET_REL:
        raise ElfError(f"ELF type {kind} is not a relocatable object (a kernel module)")
    if shnum and shentsize != _SECTION_HEADER.size:
        raise ElfError(f"section headers of {shentsize} bytes, not {_SECTION_HEADER.size}")
    if shstrndx >= shnum:
        raise ElfError(f"the section-name table's index {shstrndx} is beyond the {shnum} sections")
    table = _within(data, shoff, shnum * _SECTION_HEADER.size, "the section header table")
    sections = [_SECTION_HEADER.unpack_from(table, i * _SECTION_HEADER.size) for i in range(shnum)]
    names = _within(data, sections[shstrndx][4], sections[shstrndx][5], "the section-name table")
    for name_at, _, _, _, offset, size, *_ in sections:
        if names[name_at : names.find(b"\0", name_at)] == b".modinfo":
            body = _within(data, offset, size, "the .modinfo section")
            entries = [_decode(raw, ".modinfo").partition("=") for raw in body.split(b"\0") if raw]
            return [(key, value) for key, _, value in entries]
    return []


def _header(data: bytes) -> tuple[int, ...]:
    """The ELF header's fields after e_ident (type, machine, ..., shstrndx), once it is known to be ELF64
    little-endian x86-64."""
    if not is_elf(data):
        raise ElfError("not an ELF file (no \\x7fELF magic)")
    if data[4:5] != b"\x02":
        raise ElfError("not a 64-bit ELF file (only ELF64 x86-64 is supported)")
    if data[5:6] != b"\x01":
        raise ElfError("not a little-endian ELF file (only ELF64 x86-64 is supported)")
    if len(data) < _HEADER.size:
        raise ElfError(f"truncated: {len(data)} bytes, shorter than the {_HEADER.size}-byte ELF header")
    fields: tuple[int, ...] = _HEADER.unpack_from(data)[1:]
    if fields[1] != EM_X86_64:
        raise ElfError(f"built for ELF machine {fields[1]}, not x86-64 ({EM_X86_64})")
    return fields


def _program_headers(data: bytes) -> list[tuple[int, int, int, int]]:
    """(p_type, p_offset, p_vaddr, p_filesz) of each program header, after checking the ELF header."""
    kind, _, _, _, phoff, _, _, _, phentsize, phnum, _, _, _ = _header(data)
    if kind not in (ET_EXEC, ET_DYN):
        raise ElfError(f"ELF type {kind} is neither an executable nor a shared library")
    if phnum and phentsize != _PROGRAM_HEADER.size:
        raise ElfError(f"program headers of {phentsize} bytes, not {_PROGRAM_HEADER.size}")
    table = _within(data, phoff, phnum * _PROGRAM_HEADER.size, "the program header table")
    headers = (_PROGRAM_HEADER.unpack_from(table, i * _PROGRAM_HEADER.size) for i in range(phnum))
    return [(kind, offset, vaddr, filesz) for kind, _, offset, vaddr, _, filesz, _, _ in headers]


def _within(data: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size > len(data):
        raise ElfError(f"{what} (bytes {offset}..{offset + size}) lies beyond the file's {len(data)} bytes")
    return data[offset : offset + size]


def _file_range(loads: list[tuple[int, int, int]], address: int) -> tuple[int, int]:
    """The file offset of a virtual address and the end of the PT_LOAD segment's file bytes holding it."""
    for vaddr, offset, size in loads:
        if vaddr <= address < vaddr + size:
            return offset + address - vaddr, offset + size
    raise ElfError(f"DT_STRTAB address {address:#x} is in no PT_LOAD segment's file bytes")


def _string(data: bytes, offset: int, end: int) -> str:
    stop = data.find(b"\0", offset, end)
    if stop < 0:
        raise ElfError(f"the string at file offset {offset} does not end inside its PT_LOAD segment")
    return _decode(data[offset:stop], "a dynamic string")


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ElfError(f"{what} is not UTF-8: {raw!r}") from None
