"""`image build --unpack-kernel`: the ELF kernel out of a bzImage, in each payload format Debian's kernels
have used, and one clear error for anything else."""

from __future__ import annotations

import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.image.elf_files import bzimage, elf, packed
from xenddd.errors import InputError
from xenddd.image.bzimage import unpack

KERNEL = elf(interpreter=None, dynamic=False) + bytes(range(256)) * 64
FORMATS = ("gzip", "xz", "lzma", "bzip2", "zstd", "lz4")
LZ4 = b"\x02\x21\x4c\x18"


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_payload_format_unpacks_to_the_elf_inside(fmt: str) -> None:
    assert unpack(bzimage(packed(KERNEL, fmt)), "/boot/vmlinuz-x") == KERNEL


def test_setup_sectors_of_zero_mean_four_as_the_boot_protocol_says() -> None:
    image = bytearray(bzimage(packed(KERNEL, "xz"), setup_sectors=4))
    image[0x1F1] = 0
    assert unpack(bytes(image), "k") == KERNEL


@pytest.mark.parametrize(
    ("image", "said"),
    [
        (b"a kernel", "not a bzImage"),
        (bzimage(packed(KERNEL, "xz"), version=0x0206), "boot protocol 2.06, 2.08 or later"),
        (bzimage(packed(KERNEL, "xz"))[:-10], "payload lies outside the file"),
        (bzimage(b"\x89LZO" + bytes(40)), "in no format --unpack-kernel reads (gzip, xz,"),
        (bzimage(LZ4 + b"\xff\x00\x00\x00" + bytes(40) + struct.pack("<I", 1000)), "(a block of 255 bytes"),
        (bzimage(packed(KERNEL, "xz")[:-4] + struct.pack("<I", len(KERNEL) + 1)), "an ELF of"),
        (bzimage(packed(b"\x7fELX" + KERNEL[4:], "zstd")), "no ELF of"),
        (bzimage(packed(KERNEL, "bzip2")[:40] + struct.pack("<I", len(KERNEL))), "no ELF of 0 bytes"),
        (
            bzimage(b"\xfd7zXZ\x00" + bytes(40) + struct.pack("<I", len(KERNEL))),
            "xz payload does not decompress",
        ),
        (bzimage(packed(KERNEL, "zstd")[:-4] + struct.pack("<I", 0)), "unpacked size of 0 bytes"),
    ],
)
def test_what_is_not_an_unpackable_kernel_is_refused_in_one_line(image: bytes, said: str) -> None:
    with pytest.raises(InputError) as refused:
        unpack(image, "/boot/vmlinuz-x")
    message = str(refused.value)
    assert message.startswith("/boot/vmlinuz-x: ") and said in message and "\n" not in message


@pytest.mark.parametrize(
    ("fmt", "module", "package"),
    [("zstd", "zstandard", "python3-zstandard"), ("lz4", "lz4.block", "python3-lz4")],
)
def test_a_kernel_packed_so_without_its_module_names_the_package(
    monkeypatch: pytest.MonkeyPatch, fmt: str, module: str, package: str
) -> None:
    image = bzimage(packed(KERNEL, fmt))
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(InputError, match=f"payload is {fmt}: --unpack-kernel needs {package} "):
        unpack(image, "k")
    assert unpack(bzimage(packed(KERNEL, "xz")), "k") == KERNEL  # the others need nothing more


@given(
    magic=st.sampled_from(
        [b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x5d\x00\x00", b"BZh", b"\x28\xb5\x2f\xfd", b"\x02\x21\x4c\x18", b""]
    ),
    rest=st.binary(max_size=200),
)
def test_any_payload_gives_an_elf_or_one_input_error(magic: bytes, rest: bytes) -> None:
    try:
        kernel = unpack(bzimage(magic + rest), "k")
    except InputError as refused:
        assert "\n" not in str(refused)
    else:
        assert kernel.startswith(b"\x7fELF")
