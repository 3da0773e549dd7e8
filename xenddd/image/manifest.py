"""The record of what went into an image: the lasting proof of "same inputs, same bytes" (mirrors drop
superseded package versions, so the inputs may not be had again), and what `image list` and `image check`
read. Written as JSON with sorted keys beside the kernel and the initramfs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xenddd.errors import InputError

FORMAT = 1
NAME = "manifest.json"
INITRD = "initrd.img"
# the kernel as its package has it, or unpacked into its ELF (`image build --unpack-kernel`, see bzimage)
KERNEL_FILES = ("vmlinuz", "vmlinux")


@dataclass(frozen=True)
class FileRecord:
    path: str
    mode: int
    size: int
    sha256: str
    origin: str  # package:<name>, generated:<what>, include:<source>, link:<target>


@dataclass
class Manifest:
    builder: str  # xenddd's version
    release: str  # the root's Debian release (VERSION_CODENAME)
    kinds: list[str]
    kernel: str  # its version, /lib/modules/<kernel>
    xen: str  # the major.minor of the xl in the image
    compression: str
    nics: list[str]
    modules: list[str]  # load order, the names the kernel uses
    packages: dict[str, str]  # name -> version, of every package a file came from
    files: list[FileRecord]
    pci_aliases: list[list[str]]  # [pattern, module]: which PCI devices a module in the image drives
    outputs: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    sizes: dict[str, int] = field(default_factory=dict)
    # with --kernel-from: the kernel package's name, version and .deb's sha256; empty for the root's kernel
    kernel_package: dict[str, str] = field(default_factory=dict)
    kernel_file: str = KERNEL_FILES[0]  # one of KERNEL_FILES; images built before unpacking have vmlinuz
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1) + "\n"

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / NAME
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable image manifest ({exc})") from exc
        if raw.get("format") != FORMAT:
            raise InputError(f"{path}: manifest format {raw.get('format')!r}, this xenddd reads {FORMAT}")
        try:
            raw["files"] = [FileRecord(**f) for f in raw["files"]]
            manifest = cls(**raw)
        except (TypeError, KeyError) as exc:
            raise InputError(f"{path}: damaged image manifest ({exc})") from exc
        if manifest.kernel_file not in KERNEL_FILES:
            raise InputError(f"{path}: damaged image manifest (kernel file {manifest.kernel_file!r})")
        return manifest

    def mismatches(self, directory: Path) -> list[str]:
        """The outputs whose bytes are not the ones recorded (missing, changed): empty when intact."""
        found = []
        for name in (self.kernel_file, INITRD):
            path = directory / name
            if not path.is_file():
                found.append(f"{name} is missing")
            elif sha256(path.read_bytes()) != self.outputs.get(name):
                found.append(f"{name} differs from the manifest")
        return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
