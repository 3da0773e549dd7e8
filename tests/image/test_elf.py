"""Reading an ELF file's interpreter, needed libraries and soname, and a kernel module's .modinfo, from
their bytes, on synthetic files built here (independent of the machine) and on one real binary of this
machine when there is one."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.image.elf_files import BASE, LOADER, elf, module
from xenddd.errors import XendddError
from xenddd.image.elf import DynamicInfo, ElfError, dynamic_info, is_elf, modinfo


def test_an_executable_names_its_interpreter_and_libraries_in_order() -> None:
    info = dynamic_info(elf(soname=None, needed=("libz.so.1", "libc.so.6", "libm.so.6")))
    assert info == DynamicInfo(LOADER, ("libz.so.1", "libc.so.6", "libm.so.6"), None)


def test_a_shared_library_names_its_soname_and_has_no_interpreter() -> None:
    info = dynamic_info(elf(interpreter=None))
    assert info == DynamicInfo(None, ("libfoo.so.1", "libc.so.6"), "libme.so.3")


def test_a_static_binary_needs_nothing() -> None:
    assert dynamic_info(elf(interpreter=None, dynamic=False)) == DynamicInfo(None, (), None)


def test_a_dynamic_section_with_no_names_needs_no_string_table_lookup() -> None:
    assert dynamic_info(elf(interpreter=None, needed=(), soname=None)) == DynamicInfo(None, (), None)


def test_a_real_binary_of_this_machine_needs_libc_through_the_x86_64_loader() -> None:
    binaries = [Path(os.path.realpath(path)) for path in ("/bin/ls", "/usr/bin/python3")]
    data = next((path.read_bytes() for path in binaries if path.is_file()), b"")
    if not is_elf(data) or data[4:6] != b"\x02\x01" or data[18:20] != b"\x3e\x00":
        pytest.skip("no ELF64 x86-64 /bin/ls or /usr/bin/python3 on this machine")
    info = dynamic_info(data)
    assert "libc.so.6" in info.needed
    assert info.interpreter is not None and info.interpreter.endswith("ld-linux-x86-64.so.2")


def test_is_elf_looks_at_the_four_magic_bytes_only() -> None:
    assert is_elf(b"\x7fELF")
    assert is_elf(elf(elf_class=1))
    assert not is_elf(b"#!/bin/sh\n")
    assert not is_elf(b"\x7fEL")


def test_the_error_is_a_xenddd_error_so_the_cli_prints_it_without_a_traceback() -> None:
    assert issubclass(ElfError, XendddError)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"#!/bin/sh\necho hi\n", "not an ELF file"),
        (b"", "not an ELF file"),
        (elf(elf_class=1), "not a 64-bit"),
        (elf(byte_order=2), "not a little-endian"),
        (elf(machine=183), "not x86-64"),
        (elf(strtab_address=0x10), "in no PT_LOAD"),
        (elf(strtab_address=BASE + (1 << 20)), "in no PT_LOAD"),
    ],
    ids=["a script", "empty", "32-bit", "big-endian", "aarch64", "strtab below the load", "strtab above it"],
)
def test_a_file_that_is_not_a_sound_elf64_x86_64_binary_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ElfError, match=message):
        dynamic_info(data)


def test_every_truncation_of_a_binary_is_refused() -> None:
    data = elf()
    for length in range(len(data)):
        with pytest.raises(ElfError):
            dynamic_info(data[:length])


def test_a_dynamic_section_without_dt_null_is_refused() -> None:
    data = bytearray(elf())
    data[-16:] = struct.pack("<qQ", 0x6FFFFFFB, 0)  # DT_FLAGS_1 where DT_NULL was
    with pytest.raises(ElfError, match="no DT_NULL"):
        dynamic_info(bytes(data))


def assert_only_elf_errors(data: bytes) -> None:
    try:
        info = dynamic_info(data)
    except ElfError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert isinstance(info, DynamicInfo)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_info_or_an_elf_error_and_nothing_else(data: bytes) -> None:
    assert_only_elf_errors(data)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_after_a_valid_elf64_ident_give_info_or_an_elf_error(tail: bytes) -> None:
    assert_only_elf_errors(elf()[:20] + tail)


VALID = elf()


@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=8)), max_size=6),
    st.none() | st.integers(0, len(VALID)),
)
def test_corruptions_of_a_valid_binary_give_info_or_an_elf_error(
    patches: list[tuple[int, bytes]], length: int | None
) -> None:
    data = bytearray(VALID)
    for offset, replacement in patches:
        data[offset : offset + len(replacement)] = replacement
    assert_only_elf_errors(bytes(data[:length]))


def test_a_modules_modinfo_entries_are_read_in_order_repeats_kept() -> None:
    entries = [("alias", "pci:v00008086d*"), ("depends", "libphy,mdio"), ("alias", "of:foo"), ("name", "r")]
    assert modinfo(module(entries)) == entries


def test_a_module_without_modinfo_has_no_entries_and_an_executable_is_no_module() -> None:
    assert modinfo(module([("license", "GPL")], name=".text")) == []
    with pytest.raises(ElfError, match="not a relocatable object"):
        modinfo(module([], kind=3))


def test_a_section_table_beyond_the_file_is_refused() -> None:
    data = module([("depends", "")])
    with pytest.raises(ElfError, match="section header table"):
        modinfo(data[:-10])
