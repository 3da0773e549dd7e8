"""`image build --kernel-from`: a kernel package fetched (a fake source here; real dpkg-deb where the test
says so), followed from its metapackage, unpacked into a one-package root, and built into an image as a
kernel installed in the root would be."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.image.fake_root import KERNEL, FakeRoot, kernel_package_tree, unpack
from xenddd.adapters.debian_packages import AptPackages, control_fields
from xenddd.cli.main import cli
from xenddd.errors import InputError
from xenddd.image import kernel_package
from xenddd.image.builder import BuildRequest, Image, build
from xenddd.image.manifest import sha256
from xenddd.image.root_tree import RootTree

CLOUD = "6.1.0-test-cloud-amd64"
META = "linux-image-cloud-amd64"


class FakeSource:
    """Packages by name: a metapackage depending on the versioned one, which ships CLOUD's kernel."""

    def __init__(self, merged: bool = True, depends: str = f"kmod, linux-image-{CLOUD} (= 2.0-1)") -> None:
        self.merged = merged
        self.depends = depends
        self.downloads: list[str] = []

    def download(self, spec: str, directory: Path) -> Path:
        self.downloads.append(spec)
        directory.mkdir(parents=True, exist_ok=True)
        deb = directory / f"{spec.partition('=')[0]}.deb"
        deb.write_bytes(spec.encode())
        return deb

    def unpack(self, deb: Path, directory: Path) -> dict[str, str]:
        name = deb.name.removesuffix(".deb")
        if name == META:
            (directory / "usr/share/doc" / META).mkdir(parents=True)
            return {"Package": META, "Version": "2.0-1", "Depends": self.depends}
        kernel_package_tree(directory, name.removeprefix("linux-image-"), self.merged)
        return {"Package": name, "Version": "2.0-1", "Architecture": "amd64"}


@pytest.fixture
def root(tmp_path: Path) -> FakeRoot:
    return FakeRoot(tmp_path / "root")


def members(image: Image) -> dict[str, tuple[int, bytes]]:
    return unpack(gzip.decompress(image.initrd))


def test_a_metapackage_is_followed_and_the_image_takes_kernel_and_modules_from_its_kernel_package(
    root: FakeRoot, tmp_path: Path
) -> None:
    source = FakeSource()
    package = kernel_package.fetch(source, META, tmp_path / "scratch")
    image = build(RootTree(root.path), BuildRequest(("network",)), package)
    assert source.downloads == [META, f"linux-image-{CLOUD}=2.0-1"]
    assert image.kernel == f"the kernel {CLOUD}".encode()
    manifest = image.manifest
    assert manifest.kernel == CLOUD
    deb = tmp_path / "scratch" / f"linux-image-{CLOUD}.deb"
    assert manifest.kernel_package == {
        "name": f"linux-image-{CLOUD}",
        "version": "2.0-1",
        "sha256": sha256(deb.read_bytes()),
    }
    assert manifest.packages[f"linux-image-{CLOUD}"] == "2.0-1"
    assert f"linux-image-{KERNEL}" not in manifest.packages  # the root's own kernel stays out
    netback = f"/usr/lib/modules/{CLOUD}/kernel/drivers/net/xen-netback/xen-netback.ko"
    assert {f.path: f.origin for f in manifest.files}[netback] == f"package:linux-image-{CLOUD}"
    assert netback in members(image)


@pytest.mark.parametrize("merged", [True, False], ids=["usr-lib", "bookworm-lib"])
def test_modules_read_from_modinfo_load_as_the_installed_roots_depmod_files_say(
    root: FakeRoot, tmp_path: Path, merged: bool
) -> None:
    """The same modules, indexed by depmod in the root and by their .modinfo in the package: the same
    boot list, modules.dep (r8169 after its realtek softdep) and aliases in the image."""
    request = BuildRequest(("network", "block"))
    installed = members(build(RootTree(root.path), request))
    source = FakeSource(merged, depends=f"linux-image-{KERNEL}")
    package = kernel_package.fetch(source, META, tmp_path / "scratch")
    unpacked = members(build(RootTree(root.path), request, package))
    base = f"/usr/lib/modules/{KERNEL}"
    for path in (f"{base}/modules.dep", f"{base}/modules.alias", "/etc/xenddd-dd/modules"):
        assert unpacked[path] == installed[path], path
    assert b"r8169.ko: kernel/drivers/net/phy/realtek.ko" in unpacked[f"{base}/modules.dep"][1]


def test_a_package_with_no_kernel_and_no_kernel_dependency_is_refused(root: FakeRoot, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no kernel and depends on no linux-image package"):
        kernel_package.fetch(FakeSource(depends="kmod, linux-base (>= 4.3~)"), META, tmp_path / "scratch")


def test_a_deb_file_that_is_not_there_is_refused_before_anything_is_downloaded(tmp_path: Path) -> None:
    source = FakeSource()
    with pytest.raises(InputError, match="is not a file"):
        kernel_package.fetch(source, str(tmp_path / "absent.deb"), tmp_path / "scratch")
    assert source.downloads == []


def test_a_module_depending_on_one_the_kernel_lacks_is_named(root: FakeRoot, tmp_path: Path) -> None:
    package = kernel_package.fetch(FakeSource(), META, tmp_path / "scratch")
    stp = package.root.path / f"usr/lib/modules/{CLOUD}/kernel/net/802/stp.ko"
    llc = package.root.path / f"usr/lib/modules/{CLOUD}/kernel/net/llc/llc.ko"
    llc.unlink()
    with pytest.raises(InputError, match=f"{stp.name} depends on llc, which this kernel lacks"):
        build(RootTree(root.path), BuildRequest(("network",)), package)


@pytest.mark.parametrize(
    ("depends", "expected"),
    [
        (
            "kmod, linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)",
            "linux-image-6.1.0-57-cloud-amd64=6.1.192-3",
        ),
        (
            "linux-image-6.12.1+deb13-amd64 | linux-image-6.12.1+deb13-amd64-unsigned",
            "linux-image-6.12.1+deb13-amd64",
        ),
        ("linux-image-6.1.0-1-amd64 (>= 6.1)", "linux-image-6.1.0-1-amd64"),
        ("kmod, linux-base (>= 4.3~), initramfs-tools | linux-initramfs-tool", None),
    ],
)
def test_the_kernel_dependency_of_a_metapackage(depends: str, expected: str | None) -> None:
    assert kernel_package.kernel_dependency(depends) == expected


def test_control_fields_join_continuation_lines() -> None:
    text = "Package: linux-image-x\nVersion: 1\nDescription: Linux\n more text\nDepends: kmod\n"
    assert control_fields(text) == {
        "Package": "linux-image-x",
        "Version": "1",
        "Description": "Linux\nmore text",
        "Depends": "kmod",
    }


def _deb(tmp_path: Path, version: str, merged: bool) -> Path:
    """A real .deb of the fake kernel package, built by dpkg-deb."""
    tree = tmp_path / "pkg"
    kernel_package_tree(tree, version, merged)
    (tree / "DEBIAN").mkdir()
    control = f"Package: linux-image-{version}\nVersion: 2.0-1\nArchitecture: amd64\nMaintainer: t <t@t>\n"
    (tree / "DEBIAN/control").write_text(control + "Description: a test kernel\n")
    deb = tmp_path / f"linux-image-{version}_2.0-1_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


needs_dpkg_deb = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")


@needs_dpkg_deb
def test_dpkg_deb_unpacks_a_real_package_and_reads_its_control(tmp_path: Path) -> None:
    deb = _deb(tmp_path, CLOUD, merged=False)
    fields = AptPackages(Path("/")).unpack(deb, tmp_path / "out")
    assert fields["Package"] == f"linux-image-{CLOUD}" and fields["Version"] == "2.0-1"
    assert (tmp_path / f"out/lib/modules/{CLOUD}/modules.builtin").is_file()


@needs_dpkg_deb
def test_image_build_from_a_deb_file_names_the_package_in_image_list(root: FakeRoot, tmp_path: Path) -> None:
    deb = _deb(tmp_path, CLOUD, merged=False)
    out = tmp_path / "image"
    args = ["image", "build", "--kind", "network", "--from-root", str(root.path), "--output", str(out)]
    result = CliRunner().invoke(cli, [*args, "--kernel-from", str(deb)])
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(cli, ["image", "list", str(out)])
    assert f"kernel {CLOUD}, Xen 4.17 (from linux-image-{CLOUD} 2.0-1, not installed)" in listed.stdout
    record = json.loads(CliRunner().invoke(cli, ["--json", "image", "list", str(out)]).stdout)
    assert record["items"][0]["kernel_package"]["sha256"] == sha256(deb.read_bytes())


def test_kernel_and_kernel_from_together_are_refused_with_one_line(root: FakeRoot, tmp_path: Path) -> None:
    args = [
        "image",
        "build",
        "--kind",
        "network",
        "--from-root",
        str(root.path),
        "--output",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(cli, [*args, "--kernel", KERNEL, "--kernel-from", META])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("--kernel and --kernel-from: choose one")
    assert not (tmp_path / "o").exists()
