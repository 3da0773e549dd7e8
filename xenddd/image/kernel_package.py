"""A kernel taken from its Debian package without installing it (`image build --kernel-from PKG`), so an
image can carry a kernel the root does not run (Debian's cloud flavour in a dom0 that boots the generic
one) with nothing installed on the host.

The package comes from a `PackageSource` (the adapter runs apt and dpkg-deb: the root's own sources, its
release and mirror); a metapackage such as `linux-image-cloud-amd64` is followed to the versioned package
it depends on. The unpacked tree is then made to read as a one-package installed root (merged /usr, a
dpkg status and file list naming the package), so the builder takes the kernel and its modules from it as
from any root, and each module's origin and the package's version join the manifest. depmod never ran
there: `modules` reads the modules' own `.modinfo` instead.

Writes only below the scratch directory it is given.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from xenddd.errors import InputError
from xenddd.image.manifest import sha256
from xenddd.image.root_tree import RootTree

MERGED_TOPS = ("bin", "sbin", "lib", "lib64")
MAX_HOPS = 3  # metapackage -> versioned package is one; Debian has never needed more than two
_IMAGE_DEPENDENCY = re.compile(
    r"\s*(linux-image-[a-z0-9.+-]+)\s*(?:\(\s*(=|>=|<=|>>|<<)\s*([^)\s]+)\s*\))?\s*"
)


class PackageSource(Protocol):
    def download(self, spec: str, directory: Path) -> Path:
        """The .deb of `name` or `name=version`, downloaded into `directory`."""

    def unpack(self, deb: Path, directory: Path) -> dict[str, str]:
        """The package's files extracted into `directory`; its control fields."""


@dataclass(frozen=True)
class KernelPackage:
    root: RootTree  # the unpacked package, read as an installed root
    name: str
    version: str
    deb_sha256: str

    def record(self) -> dict[str, str]:
        """What the manifest keeps of it: mirrors drop old versions, the hash names the bytes."""
        return {"name": self.name, "version": self.version, "sha256": self.deb_sha256}


def fetch(source: PackageSource, spec: str, scratch: Path) -> KernelPackage:
    """The kernel package `spec` names (a package, `name=version`, or a .deb file), unpacked below
    `scratch`; a package without a kernel is followed to the linux-image package it depends on."""
    if spec.endswith(".deb"):
        deb = Path(spec)
        if not deb.is_file():
            raise InputError(f"--kernel-from: {spec} is not a file")
    else:
        deb = source.download(spec, scratch)
    for hop in range(MAX_HOPS):
        tree = scratch / f"unpacked-{hop}"
        control = source.unpack(deb, tree)
        name = control.get("Package", deb.name)
        if any((tree / "boot").glob("vmlinuz-*")):
            merge_usr(tree)
            _register(tree, control)
            return KernelPackage(RootTree(tree), name, control.get("Version", ""), sha256(deb.read_bytes()))
        dependency = kernel_dependency(control.get("Depends", ""))
        if dependency is None:
            raise InputError(f"--kernel-from: {name} holds no kernel and depends on no linux-image package")
        deb = source.download(dependency, scratch)
    raise InputError(f"--kernel-from: no kernel within {MAX_HOPS} packages of {spec}")


def kernel_dependency(depends: str) -> str | None:
    """`name=version` of the first linux-image package a Depends field names, or `name` when it asks
    for no exact version."""
    for clause in depends.split(","):
        for alternative in clause.split("|"):
            found = _IMAGE_DEPENDENCY.fullmatch(alternative)
            if found:
                name, relation, version = found.groups()
                return f"{name}={version}" if relation == "=" else name
    return None


def merge_usr(tree: Path) -> None:
    """Move what a package ships under /lib, /bin, ... (bookworm's kernels: /lib/modules) below /usr and
    leave the links a merged-/usr root has, so paths read the same as in an installed root."""
    for top in MERGED_TOPS:
        shipped = tree / top
        if shipped.is_dir() and not shipped.is_symlink():
            _merge_into(shipped, tree / "usr" / top)
            shipped.rmdir()
        if not shipped.is_symlink():
            shipped.symlink_to(f"usr/{top}")


def _merge_into(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        target = destination / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            _merge_into(entry, target)
            entry.rmdir()
        else:
            shutil.move(entry, target)


def _register(tree: Path, control: dict[str, str]) -> None:
    """A dpkg database holding this one package, installed, owning every file of the tree."""
    name = control.get("Package", "")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", name):
        raise InputError(f"--kernel-from: the package's control names no valid package ({name!r})")
    info = tree / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    listed = sorted(
        "/" + os.path.relpath(os.path.join(directory, entry), tree)
        for directory, directories, files in os.walk(tree)
        for entry in directories + files
        if not os.path.relpath(os.path.join(directory, entry), tree).startswith("var/lib/dpkg")
    )
    (info / f"{name}.list").write_text("/.\n" + "\n".join(listed) + "\n", encoding="utf-8")
    stanza = (
        f"Package: {name}\nStatus: install ok installed\n"
        f"Architecture: {control.get('Architecture', '')}\nVersion: {control.get('Version', '')}\n"
    )
    (tree / "var/lib/dpkg/status").write_text(stanza, encoding="utf-8")
