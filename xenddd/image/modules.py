"""Kernel modules for the image: the closure of what was asked over `depends` and soft pre-dependencies,
in load order, read from the kernel package's own `modules.dep`, `modules.softdep`, `modules.alias` and
`modules.builtin` (an installed root has them: depmod ran when the kernel was installed). A kernel
unpacked from its package (`--kernel-from`) has only `modules.builtin`: the same tables then come from
each module's own `.modinfo` (its `depends`, `softdep` and `alias` entries, which are what depmod indexes;
`depends` names only direct prerequisites, and the closure follows them).

Modules compressed with xz (trixie's kernels) are stored decompressed: the signature is inside the
compressed payload so it survives, the initramfs is compressed once as a whole (smaller), and busybox's
`modprobe` loads them without an xz decoder.
"""

from __future__ import annotations

import lzma
import posixpath
from dataclasses import dataclass, field

from xenddd.errors import InputError
from xenddd.image.elf import ElfError, modinfo
from xenddd.image.root_tree import RootTree

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


@dataclass(frozen=True)
class Module:
    name: str  # normalized: dashes as underscores, as the kernel names it
    path: str  # in the image, relative to /lib/modules/<version>, decompressed (`kernel/.../x.ko`)
    source: str  # in the root, absolute


@dataclass
class ModuleSet:
    """The chosen modules in load order (dependencies first) and what the image's modprobe needs."""

    version: str
    ordered: list[Module] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # asked for but absent from this kernel (defaults)
    requires: dict[str, set[str]] = field(default_factory=dict)  # name -> every module loaded before it

    def names(self) -> list[str]:
        return [m.name for m in self.ordered]

    def dep_lines(self) -> str:
        """modules.dep for busybox's modprobe, which loads a line's list from its end and reads no
        softdep: each line holds every prerequisite, soft ones (r8169's PHY driver) included, in the
        reverse of this set's load order."""
        lines = []
        for module in self.ordered:
            wanted = [m.path for m in reversed(self.ordered) if m.name in self.requires[module.name]]
            lines.append(f"{module.path}: {' '.join(wanted)}".rstrip())
        return "\n".join(lines) + "\n"


def normalize(name: str) -> str:
    return name.replace("-", "_")


class KernelModules:
    """One kernel's modules in a root: `/lib/modules/<version>`."""

    def __init__(self, root: RootTree, version: str, *, unpacked: bool = False) -> None:
        """`unpacked`: the root is a kernel package unpacked without depmod; read the modules instead."""
        self.root = root
        self.version = version
        self.base = f"/usr/lib/modules/{version}"
        self.deps: dict[str, list[str]] = {}  # source -> prerequisites' sources, the last loaded first
        self.by_name: dict[str, str] = {}
        self.softdeps: dict[str, list[str]] = {}
        self.aliases: list[tuple[str, str]] = []
        if unpacked:
            self._index_modinfo()
        else:
            self._index_depmod()
        self.builtin = {_name_of(line) for line in self._text("modules.builtin").split()}

    def _index_depmod(self) -> None:
        if not self.root.exists(f"{self.base}/modules.dep"):
            raise InputError(
                f"{self.root.path}: no modules.dep for kernel {self.version} (is its package installed?)"
            )
        for line in self._text("modules.dep").splitlines():
            module, _, rest = line.partition(":")
            source = f"{self.base}/{module.strip()}"
            self.deps[source] = [f"{self.base}/{d}" for d in rest.split()]
            self.by_name[_name_of(module)] = source
        self.softdeps = _softdeps(self._text("modules.softdep", missing_ok=True))
        for line in self._text("modules.alias", missing_ok=True).splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "alias":
                self.aliases.append((words[1], normalize(words[2])))

    def _index_modinfo(self) -> None:
        sources = [p for p in self.root.files_under(self.base) if p.endswith(_SUFFIXES)]
        if not sources:
            raise InputError(f"{self.root.path}: no modules under {self.base}")
        self.by_name = {_name_of(source): source for source in sources}
        softdeps = []
        for source in sources:
            name = _name_of(source)
            try:
                entries = modinfo(self._bytes(source))
            except ElfError as exc:
                raise InputError(f"{source}: {exc}") from exc
            listed = ",".join(value for key, value in entries if key == "depends")
            needed = [normalize(d) for d in listed.split(",") if d]
            missing = [d for d in needed if d not in self.by_name]
            if missing:
                raise InputError(f"{source} depends on {', '.join(missing)}, which this kernel lacks")
            self.deps[source] = [self.by_name[d] for d in needed]
            softdeps += [f"softdep {name} {value}" for key, value in entries if key == "softdep"]
            self.aliases += [(value, name) for key, value in entries if key == "alias"]
        self.softdeps = _softdeps("\n".join(softdeps))

    def closure(self, wanted: tuple[str, ...], optional: tuple[str, ...] = ()) -> ModuleSet:
        """`wanted` must exist (built in counts); `optional` ones this kernel lacks are listed as skipped."""
        chosen = ModuleSet(self.version)
        seen: set[str] = set()
        for name in wanted + optional:
            key = normalize(name)
            if key in self.builtin:
                continue
            if key not in self.by_name:
                if name in optional:
                    chosen.skipped.append(name)
                    continue
                raise InputError(f"kernel {self.version} has no module {name}")
            self._add(key, chosen, seen)
        return chosen

    def module_bytes(self, module: Module) -> bytes:
        return self._bytes(module.source)

    def _bytes(self, source: str) -> bytes:
        data = self.root.read(source)
        if source.endswith(".xz"):
            return lzma.decompress(data)
        if source.endswith((".zst", ".gz")):
            raise InputError(f"{source}: only xz-compressed modules are supported")
        return data

    def aliases_of(self, chosen: ModuleSet) -> list[tuple[str, str]]:
        """(pattern, module) for the chosen modules: the image's modules.alias and the manifest's PCI ones."""
        names = set(chosen.names())
        return [(pattern, name) for pattern, name in self.aliases if name in names]

    def _add(self, key: str, chosen: ModuleSet, seen: set[str]) -> None:
        if key in seen or key in self.builtin:
            return
        seen.add(key)
        source = self.by_name[key]
        before = [t for t in map(self._softdep_target, self.softdeps.get(key, ())) if t]
        before += [_name_of(dep) for dep in reversed(self.deps[source])]  # modules.dep: last loads first
        requires: set[str] = set()
        for name in before:
            self._add(name, chosen, seen)
            if name in chosen.requires:
                requires |= {name} | chosen.requires[name]
        chosen.requires[key] = requires
        chosen.ordered.append(Module(key, _decompressed(source.removeprefix(self.base + "/")), source))

    def _softdep_target(self, name: str) -> str | None:
        """A soft dependency names a module or an alias (`crypto-crc32c`); one this kernel lacks is
        skipped, as modprobe does."""
        key = normalize(name)
        if key in self.by_name or key in self.builtin:
            return key
        return next((module for pattern, module in self.aliases if pattern == name), None)

    def _text(self, name: str, missing_ok: bool = False) -> str:
        path = f"{self.base}/{name}"
        if missing_ok and not self.root.exists(path):
            return ""
        return self.root.read(path).decode("utf-8", errors="replace")


def _name_of(path: str) -> str:
    base = posixpath.basename(path.strip())
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            return normalize(base.removesuffix(suffix))
    return normalize(base)


def _decompressed(path: str) -> str:
    for suffix in (".xz", ".zst", ".gz"):
        if path.endswith(".ko" + suffix):
            return path.removesuffix(suffix)
    return path


def _softdeps(text: str) -> dict[str, list[str]]:
    """`softdep MOD pre: A B post: C` → {MOD: [A, B]}: only the pre-dependencies change the load order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "softdep":
            continue
        pre, section = [], ""
        for word in words[2:]:
            if word.endswith(":"):
                section = word[:-1]
            elif section == "pre":
                pre.append(word)
        found.setdefault(normalize(words[1]), []).extend(pre)
    return found
