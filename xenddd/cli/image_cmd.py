"""`xenddd image build | list | check`: driver-domain images made from Debian's packages (`xenddd.image`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from xenddd.adapters.debian_packages import AptPackages
from xenddd.adapters.pci_sysfs import PciSysfs
from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import Column, echo_findings, emit_list, emit_record
from xenddd.config.loader import load_config
from xenddd.config.spec import Config
from xenddd.errors import InputError
from xenddd.image import kernel_package, recipe
from xenddd.image.builder import BuildRequest, build, write
from xenddd.image.check import check as check_image
from xenddd.image.cpio import COMPRESSIONS
from xenddd.image.manifest import INITRD, NAME, Manifest
from xenddd.image.root_tree import RootTree
from xenddd.model import Bdf

IMAGES = Path("/var/lib/xenddd/images")


@click.group("image")
def image_group() -> None:
    """Build and inspect driver-domain images: a kernel and one initramfs, no root disk."""


@image_group.command("build")
@click.option("--kind", "kinds", required=True, help="network, block, or network,block.")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), help=f"[default: {IMAGES}/KINDS]")
@click.option(
    "--from-root",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="The installed Debian root whose packages go in (the host's own, or a debootstrapped tree).",
)
@click.option("--kernel", help="A kernel version under /lib/modules [default: the root's only one].")
@click.option(
    "--kernel-from",
    metavar="PKG",
    help="Take the kernel and its modules from this Debian package (name, name=version or a .deb file), "
    "downloaded by apt from the root's sources and unpacked, not installed.",
)
@click.option(
    "--nic", "nics", multiple=True, help=f"A NIC module (repeat) [default: {' '.join(recipe.DEFAULT_NICS)}]."
)
@click.option("--compress", type=click.Choice(COMPRESSIONS), default="gzip", show_default=True)
@click.option(
    "--unpack-kernel",
    is_flag=True,
    help="Write the kernel as its uncompressed ELF, vmlinux (about 58 MB for Debian's): Xen's domain builder "
    "then does not decompress it in dom0 at every start of the driver domain. A zstd kernel (trixie's) "
    "needs python3-zstandard, an lz4 one python3-lz4.",
)
@click.option(
    "--include", "includes", multiple=True, metavar="SRC=DEST", help="Add a file of this host (repeat)."
)
@pass_cli
def build_cmd(
    cli: CliContext,
    kinds: str,
    output: Path | None,
    root: Path,
    kernel: str | None,
    kernel_from: str | None,
    nics: tuple[str, ...],
    compress: str,
    unpack_kernel: bool,
    includes: tuple[str, ...],
) -> None:
    """Build a driver-domain image from the packages installed in a Debian root: the root's kernel, and one
    initramfs with the backends, pcifront and NIC modules, `xl devd`, Xen's hotplug scripts with the
    Debian tools they run, and an init that writes the readiness key xenddd waits for (data/ready=1).
    Same root, same options: same bytes. The driver domain's bridges, ports and addresses come from
    `xenddd.*` words on its kernel command line (see the README); `image check` validates them.
    `--kernel-from linux-image-cloud-amd64` takes another kernel (a metapackage is followed to the
    versioned package) without installing it; the manifest records the package and its .deb's hash.

    \b
    Exit status: 0 built, 2 bad options or the root lacks something (named), nothing written.
    """
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    pairs = tuple(_include(text) for text in includes)
    if kernel and kernel_from:
        raise InputError("--kernel and --kernel-from: choose one")
    request = BuildRequest(chosen, nics or None, kernel, compress, pairs, unpack_kernel)
    tree = RootTree(root)
    if kernel_from is None:
        image = build(tree, request)
    else:
        with tempfile.TemporaryDirectory(prefix="xenddd-kernel-") as scratch:
            package = kernel_package.fetch(AptPackages(root), kernel_from, Path(scratch))
            image = build(tree, request, package)
    directory = output or IMAGES / "-".join(image.manifest.kinds)
    write(image, directory)
    manifest = image.manifest
    record = {"directory": str(directory), **_summary(manifest)}
    text = (
        f"{directory}: kernel {manifest.kernel} ({manifest.kernel_file} "
        f"{manifest.sizes[manifest.kernel_file] / 1e6:.1f} MB), initrd {manifest.sizes[INITRD] / 1e6:.1f} MB "
        f"({manifest.compression}), {len(manifest.modules)} modules, {len(manifest.packages)} packages "
        f"of {manifest.release or 'an unknown release'}"
    )
    emit_record(cli.as_json, "image-build", record, text)


@image_group.command("list")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_cli
def list_cmd(cli: CliContext, directory: Path | None) -> None:
    """The images under /var/lib/xenddd/images, or what one DIRECTORY holds: kernel, kinds, modules,
    packages, NIC drivers and sizes."""
    if directory is not None:
        manifest = Manifest.load(directory)
        record = {
            "directory": str(directory),
            **_summary(manifest),
            "packages": manifest.packages,
            "kernel_package": manifest.kernel_package,
        }
        taken = manifest.kernel_package
        lines = [
            f"{directory}: {', '.join(manifest.kinds)} image of {manifest.release}, "
            f"kernel {manifest.kernel}, Xen {manifest.xen}"
            + (f" (from {taken['name']} {taken['version']}, not installed)" if taken else ""),
            f"modules: {' '.join(manifest.modules)}",
            f"NIC drivers: {' '.join(manifest.nics) or 'none'}",
            f"packages: {' '.join(f'{n}={v}' for n, v in manifest.packages.items())}",
            f"files: {len(manifest.files)}, {manifest.kernel_file} {manifest.sizes[manifest.kernel_file]} B, "
            f"{INITRD} {manifest.sizes[INITRD]} B ({manifest.compression})",
        ]
        emit_record(cli.as_json, "image", record, "\n".join(lines))
        return
    rows = []
    found = sorted(IMAGES.glob(f"*/{NAME}")) if IMAGES.is_dir() else []
    for path in found:
        manifest = Manifest.load(path.parent)
        rows.append({"directory": str(path.parent), **_summary(manifest)})
    columns = [
        Column("Directory", "directory"),
        Column("Kinds", "kinds_text"),
        Column("Release", "release"),
        Column("Kernel", "kernel"),
        Column("MB", "megabytes", right_align=True),
    ]
    emit_list(cli.as_json, "images", columns, rows)


@image_group.command("check")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_cli
def check_cmd(cli: CliContext, directory: Path | None) -> None:
    """Check an image against its manifest and against the config's driver domains that boot it (their
    kinds, type, `xenddd.*` command-line words, readiness, memory, and a driver in the image for each of
    their PCI devices as this host has them). DIRECTORY defaults to the directory of the config's first
    initrd that has a manifest.

    \b
    Exit status: 0 fine (warnings allowed), 2 an error found.
    """
    config = load_config(cli.config_path) if cli.config_path.is_file() else None
    if directory is None:
        directory = _first_image(config)
    manifest = Manifest.load(directory)
    sysfs = PciSysfs(config.settings.sysfs_root if config else Path("/sys"))
    findings = check_image(manifest, directory, config, lambda bdf: _modalias(sysfs, bdf))
    errors = [f for f in findings if f.severity == "error"]
    if not cli.as_json:
        text = cli.config_path.read_text(encoding="utf-8") if config else ""
        echo_findings(findings, cli.config_path if config else None, text)
    record = {
        "directory": str(directory),
        "valid": not errors,
        "findings": [{"severity": f.severity, "key": f.key_path, "message": f.message} for f in findings],
    }
    if cli.as_json or not errors:
        emit_record(cli.as_json, "image-check", record, f"{directory}: ok")
    if errors:
        click.get_current_context().exit(2)


def _summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "kinds": manifest.kinds,
        "kinds_text": ",".join(manifest.kinds),
        "release": manifest.release,
        "kernel": manifest.kernel,
        "xen": manifest.xen,
        "modules": len(manifest.modules),
        "megabytes": round(sum(manifest.sizes.values()) / 1e6, 1),
    }


def _include(text: str) -> tuple[Path, str]:
    source, sep, inside = text.partition("=")
    if not sep or not source or not inside:
        raise InputError(f"--include {text!r}: write it as SRC=DEST")
    return Path(source), inside


def _first_image(config: Config | None) -> Path:
    for spec in config.driver_domains if config else ():
        if spec.initrd is not None and (spec.initrd.parent / NAME).is_file():
            return Path(spec.initrd.parent)
    raise InputError("no image given, and no driver domain of the config boots one with a manifest")


def _modalias(sysfs: PciSysfs, bdf: Bdf) -> str | None:
    path = sysfs.device_path(bdf) / "modalias"
    return path.read_text(encoding="ascii", errors="replace").strip() if path.is_file() else None
