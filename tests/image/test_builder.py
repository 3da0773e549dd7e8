"""`xenddd image build` on a small fake Debian root: what goes in, from which package, in which order,
and that the same root gives the same bytes."""

from __future__ import annotations

import gzip
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.image.elf_files import bzimage, elf, packed
from tests.image.fake_root import KERNEL, LIBC, XEN, FakeRoot, unpack
from xenddd.cli.main import cli
from xenddd.errors import InputError
from xenddd.image.builder import BuildRequest, Image, build, write
from xenddd.image.manifest import Manifest
from xenddd.image.root_tree import RootTree

MODULES = f"/usr/lib/modules/{KERNEL}"


@pytest.fixture
def root(tmp_path: Path) -> FakeRoot:
    return FakeRoot(tmp_path / "root")


def built(root: FakeRoot, **options: object) -> Image:
    request = BuildRequest(**{"kinds": ("network",), **options})  # type: ignore[arg-type]
    return build(RootTree(root.path), request)


def members(image: Image) -> dict[str, tuple[int, bytes]]:
    return unpack(gzip.decompress(image.initrd))


def test_a_network_image_has_netback_bridge_vif_bridge_and_xl_with_its_libraries(root: FakeRoot) -> None:
    image = built(root)
    files = members(image)
    for path in (
        "/init",
        f"{MODULES}/kernel/drivers/net/xen-netback/xen-netback.ko",
        f"{MODULES}/kernel/net/bridge/bridge.ko",
        "/etc/xen/scripts/vif-bridge",
        "/etc/xen/xl.conf",
        f"/usr/lib/xen-{XEN}/bin/xl",
        "/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17",
        LIBC,
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "/usr/bin/bash",
        "/usr/bin/flock",
    ):
        assert path in files, path
    assert files["/usr/sbin/xl"][1] == f"/usr/lib/xen-{XEN}/bin/xl".encode()
    assert files["/init"][1].startswith(b"#!/usr/bin/busybox sh\n")  # the busybox the image carries
    # the image's own vif-bridge, not Xen's bash one from the root (xen-utils-common)
    assert files["/etc/xen/scripts/vif-bridge"][1].startswith(b"#!/usr/bin/busybox sh\n")
    assert b"xenstore-ls -f" in files["/etc/xen/scripts/vif-bridge"][1]
    assert files["/etc/xen/scripts/vif-bridge"][0] & 0o777 == 0o755
    origins = {f.path: f.origin for f in image.manifest.files}
    assert origins["/etc/xen/scripts/vif-bridge"] == "generated:vif-bridge"
    assert origins["/etc/xen/scripts/vif-route"] == "package:xen-utils-common"
    assert "/etc/xen/scripts/block" not in files and "/usr/sbin/losetup" not in files
    assert stat.S_ISLNK(files["/lib64"][0]) and files["/lib64"][1] == b"usr/lib64"


def test_the_block_kind_brings_blkback_the_block_scripts_and_losetup_and_skips_a_built_in_loop(
    root: FakeRoot,
) -> None:
    image = built(root, kinds=("block",))
    files = members(image)
    assert f"{MODULES}/kernel/drivers/block/xen-blkback/xen-blkback.ko" in files
    assert {"/etc/xen/scripts/block", "/etc/xen/scripts/block-dummy", "/usr/sbin/losetup"} <= files.keys()
    # the image's own `block`, which hands what it does not serve itself to Xen's, kept beside it
    assert files["/etc/xen/scripts/block"][1].startswith(b"#!/usr/bin/busybox sh\n")
    assert b"block.xen" in files["/etc/xen/scripts/block"][1]
    mode, body = files["/etc/xen/scripts/block.xen"]
    assert mode & 0o777 == 0o755 and body == b"#!/bin/bash\n"  # the root's (fake) Xen script
    origins = {f.path: f.origin for f in image.manifest.files}
    assert origins["/etc/xen/scripts/block"] == "generated:block"
    assert origins["/etc/xen/scripts/block.xen"] == "package:xen-utils-common"
    assert "loop" not in image.manifest.modules
    assert "/etc/xen/scripts/vif-bridge" not in files
    assert image.manifest.nics == []


def test_the_same_root_gives_the_same_initrd_bytes_and_manifest(root: FakeRoot) -> None:
    first, second = built(root), built(root)
    assert first.initrd == second.initrd
    assert first.manifest.to_json() == second.manifest.to_json()
    assert built(root, compression="xz").initrd != first.initrd


def test_awk_keeps_its_alternatives_chain_and_the_file_comes_from_mawk(root: FakeRoot) -> None:
    image = built(root)
    files = members(image)
    assert files["/usr/bin/awk"][1] == b"/etc/alternatives/awk"
    assert files["/etc/alternatives/awk"][1] == b"/usr/bin/mawk"
    origins = {f.path: f.origin for f in image.manifest.files}
    assert origins["/usr/bin/mawk"] == "package:mawk"


def test_a_file_dpkg_lists_under_bin_is_found_under_merged_usr(root: FakeRoot) -> None:
    image = built(root)
    assert {f.path: f.origin for f in image.manifest.files}["/usr/bin/bash"] == "package:pkg-bash"
    assert image.manifest.packages["pkg-bash"] == "1.0-1"
    assert image.manifest.release == "bookworm" and image.manifest.kernel == KERNEL


def test_a_library_no_package_provides_names_the_binary_and_the_soname(root: FakeRoot) -> None:
    root.remove("/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17")
    with pytest.raises(InputError, match=r"/usr/lib/xen-4.17/bin/xl needs libxenlight.so.4.17"):
        built(root)


def test_a_command_the_root_lacks_is_named(root: FakeRoot) -> None:
    root.remove("/usr/bin/flock")
    with pytest.raises(InputError, match="no command flock"):
        built(root)


def test_xz_modules_are_stored_decompressed(root: FakeRoot) -> None:
    files = members(built(root))
    assert files[f"{MODULES}/kernel/drivers/net/xen-netback/xen-netback.ko"][1] == b"module xen-netback"


def test_r8169_loads_after_its_realtek_softdep_also_through_busybox_modprobe(root: FakeRoot) -> None:
    image = built(root, nics=("r8169",))
    order = image.manifest.modules
    assert order.index("libphy") < order.index("realtek") < order.index("r8169")
    dep = members(image)[f"{MODULES}/modules.dep"][1].decode()
    line = next(
        ln for ln in dep.splitlines() if ln.startswith("kernel/drivers/net/ethernet/realtek/r8169.ko:")
    )
    # busybox's modprobe loads a line's list from its end: libphy, then realtek
    assert line.split(": ")[1].split() == [
        "kernel/drivers/net/phy/realtek.ko",
        "kernel/drivers/net/phy/libphy.ko",
    ]
    assert image.manifest.pci_aliases == [["pci:v000010ECd00008168sv*sd*bc*sc*i*", "r8169"]]


def test_the_boot_list_loads_the_backends_and_not_the_nic_drivers(root: FakeRoot) -> None:
    """One list in dependency order, which the init loads in one process; the NIC drivers are loaded as
    their devices appear."""
    files = members(built(root))
    names = [Path(p).name for p in files["/etc/xenddd-dd/modules"][1].decode().split()]
    assert names.index("llc.ko") < names.index("stp.ko") < names.index("bridge.ko")
    assert "xen-netback.ko" in names and "e1000.ko" not in names
    assert "/etc/xenddd-dd/backends" not in files


def test_a_nic_the_operator_names_must_exist_while_missing_defaults_are_skipped(root: FakeRoot) -> None:
    with pytest.raises(InputError, match="has no module tg3"):
        built(root, nics=("tg3",))
    image = built(root)  # the default set names igb, ixgbe, ... which this kernel lacks
    assert image.manifest.nics == ["e1000", "r8169"]


def test_an_unknown_kind_is_refused_and_nothing_is_built(root: FakeRoot) -> None:
    with pytest.raises(InputError, match="choose from network, block"):
        built(root, kinds=("storage",))


def test_an_included_file_lands_where_asked_with_its_mode(root: FakeRoot, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o750)
    image = built(root, includes=((hook, "etc/xenddd-dd/start.d/hook"),))
    mode, body = members(image)["/etc/xenddd-dd/start.d/hook"]
    assert stat.S_IMODE(mode) == 0o750 and body == b"#!/bin/sh\n"
    assert {f.path: f.origin for f in image.manifest.files}[
        "/etc/xenddd-dd/start.d/hook"
    ] == f"include:{hook}"


def test_written_images_verify_against_their_manifest_until_a_byte_changes(
    root: FakeRoot, tmp_path: Path
) -> None:
    out = tmp_path / "image"
    write(built(root), out)
    manifest = Manifest.load(out)
    assert manifest.mismatches(out) == []
    (out / "initrd.img").write_bytes(b"changed")
    assert manifest.mismatches(out) == ["initrd.img differs from the manifest"]


def test_an_unpacked_kernel_is_written_as_vmlinux_in_place_of_a_vmlinuz_left_before(
    root: FakeRoot, tmp_path: Path
) -> None:
    kernel = elf(interpreter=None, dynamic=False)
    (root.path / f"boot/vmlinuz-{KERNEL}").write_bytes(bzimage(packed(kernel, "zstd")))
    out = tmp_path / "image"
    write(built(root), out)
    assert (out / "vmlinuz").is_file() and not (out / "vmlinux").exists()
    image = built(root, unpack_kernel=True)
    assert (image.kernel, image.manifest.kernel_file) == (kernel, "vmlinux")
    write(image, out)
    assert sorted(p.name for p in out.iterdir()) == ["initrd.img", "manifest.json", "vmlinux"]
    manifest = Manifest.load(out)
    assert manifest.sizes["vmlinux"] == len(kernel) and manifest.mismatches(out) == []
    (out / "vmlinux").write_bytes(b"changed")
    assert manifest.mismatches(out) == ["vmlinux differs from the manifest"]


def test_a_kernel_that_is_no_bzimage_is_refused_when_asked_to_unpack_it(root: FakeRoot) -> None:
    with pytest.raises(InputError, match=f"vmlinuz-{KERNEL}: not a bzImage"):
        built(root, unpack_kernel=True)


def test_a_manifest_written_before_unpacking_reads_as_vmlinuz_and_an_unknown_kernel_file_is_refused(
    root: FakeRoot, tmp_path: Path
) -> None:
    out = tmp_path / "image"
    write(built(root), out)
    raw = json.loads((out / "manifest.json").read_text())
    del raw["kernel_file"]
    (out / "manifest.json").write_text(json.dumps(raw))
    assert Manifest.load(out).kernel_file == "vmlinuz" and Manifest.load(out).mismatches(out) == []
    raw["kernel_file"] = "../../etc/passwd"
    (out / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match="damaged image manifest"):
        Manifest.load(out)


def test_image_build_unpack_kernel_says_what_it_wrote_and_a_packed_kernel_it_cannot_read_writes_nothing(
    root: FakeRoot, tmp_path: Path
) -> None:
    args = ["image", "build", "--kind", "network", "--from-root", str(root.path), "--unpack-kernel"]
    refused = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "o")])
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "not a bzImage" in refused.stderr and not (tmp_path / "o").exists()
    kernel = elf(interpreter=None, dynamic=False)
    (root.path / f"boot/vmlinuz-{KERNEL}").write_bytes(bzimage(packed(kernel, "xz")))
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert f"kernel {KERNEL} (vmlinux 0.0 MB)" in result.stdout
    listed = CliRunner().invoke(cli, ["image", "list", str(tmp_path / "o")])
    assert f"vmlinux {len(kernel)} B, initrd.img" in listed.stdout
