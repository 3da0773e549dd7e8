"""`xenddd image build`: a Debian kernel and one initramfs holding everything a driver domain of the asked
kinds needs, taken from an installed Debian root (the host's own `/`, or a debootstrapped tree), with the
manifest that records where each file came from. The kernel and its modules come from the same root, or
from a kernel package unpacked beside it (`kernel_package`).

Nothing runs inside the root: binaries' libraries come from their ELF headers (`elf`), modules from the
kernel package's depmod files (`modules`), so a root of another release builds as well as the host's.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from xenddd import __version__
from xenddd.errors import InputError
from xenddd.image import bzimage, recipe
from xenddd.image.cpio import Entry, archive, compress
from xenddd.image.elf import ElfError, dynamic_info, is_elf
from xenddd.image.kernel_package import KernelPackage
from xenddd.image.manifest import INITRD, KERNEL_FILES, FileRecord, Manifest, sha256
from xenddd.image.modules import KernelModules, ModuleSet
from xenddd.image.root_tree import RootTree

LIBRARY_PATH = ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/lib/x86_64-linux-gnu", "/lib")
CONFIG_DIR = "/etc/xenddd-dd"
START_DIR = f"{CONFIG_DIR}/start.d"
# merged /usr, as both releases have it; the directories the init and the hotplug scripts expect
TOP_LINKS = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}
DIRECTORIES = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/log/xen", "/var/lib/xen", "/root", START_DIR)
VAR_LINKS = {"/var/run": "../run", "/var/lock": "../run/lock"}


@dataclass(frozen=True)
class BuildRequest:
    kinds: tuple[str, ...]
    nics: tuple[str, ...] | None = None  # None: the default set for a network image
    kernel: str | None = None  # a version under /lib/modules; None: the root's only one
    compression: str = "gzip"
    includes: tuple[tuple[Path, str], ...] = ()  # (file on the build host, path in the image)
    unpack_kernel: bool = False  # the kernel as its ELF (`vmlinux`), not the package's bzImage (bzimage)


@dataclass
class Image:
    kernel: bytes
    initrd: bytes
    manifest: Manifest


@dataclass
class _Staging:
    """The image's files being collected: each path once, with where it came from."""

    root: RootTree
    entries: dict[str, Entry] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)

    def put(self, entry: Entry, origin: str) -> None:
        self.entries.setdefault(entry.path, entry)
        self.origins.setdefault(entry.path, origin)

    def copy(self, inside: str, as_path: str | None = None) -> str:
        """The root's file at `inside` with the chain of symlinks that leads to it; its canonical path.
        `as_path`: the file alone, at that path instead."""
        canonical, links = self.root.resolve(inside)
        if as_path is not None:
            entry = Entry(as_path, self.root.mode(canonical), self.root.read(canonical))
            self.put(entry, self.origin(canonical))
            return as_path
        for where, target in links:
            if where not in TOP_LINKS:
                self.put(Entry(where, 0o777, target=target), f"link:{target}")
        entry = Entry(canonical, self.root.mode(canonical), self.root.read(canonical))
        self.put(entry, self.origin(canonical))
        return canonical

    def origin(self, canonical: str, tree: RootTree | None = None) -> str:
        """`package:<name>` for a file a package ships (its version joins the manifest), else `root`."""
        owner = (tree or self.root).owner(canonical)
        if owner is None:
            return "root"
        self.packages[owner.name] = owner.version
        return f"package:{owner.name}"


def build(root: RootTree, request: BuildRequest, kernel_package: KernelPackage | None = None) -> Image:
    """The image, in memory; `write` puts it on disk. Raises InputError naming what the root lacks."""
    unknown = [k for k in request.kinds if k not in recipe.KINDS]
    if unknown or not request.kinds:
        raise InputError(f"--kind: {', '.join(unknown) or 'nothing'}; choose from {', '.join(recipe.KINDS)}")
    needs = recipe.needs(request.kinds, request.nics)
    kernel_root = kernel_package.root if kernel_package else root
    version = request.kernel or _only_kernel(kernel_root)
    kernel_path = f"/boot/vmlinuz-{version}"
    if not kernel_root.exists(kernel_path):
        raise InputError(f"{kernel_root.path}: no {kernel_path}")
    xen = _xen_version(root)
    modules = KernelModules(kernel_root, version, unpacked=kernel_package is not None)
    boot = modules.closure(needs.modules)
    # NICs the operator named must exist; the default set takes what this kernel has
    named, defaults = (needs.nics, ()) if request.nics is not None else ((), needs.nics)
    every = modules.closure(needs.modules + named, defaults)
    staging = _Staging(root)
    _skeleton(staging)
    _commands(staging, needs, xen)
    for script in needs.scripts:
        path = posixpath.join(recipe.SCRIPT_DIR, script)
        if not root.exists(path):
            raise InputError(f"{root.path}: no {path} (is xen-utils-common installed?)")
        kept = recipe.XEN_KEPT_AS.get(script)
        staging.copy(path, posixpath.join(recipe.SCRIPT_DIR, kept) if kept else None)
    for path in needs.files:
        staging.copy(path)
    _modules(staging, modules, boot, every)
    _facts(staging, needs, xen, version)
    for source, inside in request.includes:
        if not source.is_file():
            raise InputError(f"--include: {source} is not a file")
        mode = source.stat().st_mode & 0o777
        staging.put(Entry(_absolute(inside), mode, source.read_bytes()), f"include:{source}")
    initrd = compress(archive(list(staging.entries.values())), request.compression)
    kernel = kernel_root.read(kernel_path)
    kernel_file = KERNEL_FILES[0]
    if request.unpack_kernel:
        kernel, kernel_file = bzimage.unpack(kernel, f"{kernel_root.path}{kernel_path}"), KERNEL_FILES[1]
    manifest = Manifest(
        builder=__version__,
        release=_release(root),
        kinds=list(needs.kinds),
        kernel=version,
        xen=xen,
        compression=request.compression,
        nics=[n for n in needs.nics if n not in every.skipped],
        modules=[m.name for m in every.ordered],
        packages=dict(sorted(staging.packages.items())),
        files=[_record(staging, path) for path in sorted(staging.entries, key=str.encode)],
        pci_aliases=[[p, m] for p, m in modules.aliases_of(every) if p.startswith("pci:")],
        outputs={kernel_file: sha256(kernel), INITRD: sha256(initrd)},
        sizes={kernel_file: len(kernel), INITRD: len(initrd)},
        kernel_package=kernel_package.record() if kernel_package else {},
        kernel_file=kernel_file,
    )
    return Image(kernel, initrd, manifest)


def write(image: Image, directory: Path) -> None:
    """Kernel, initramfs and manifest, each written beside and then renamed, the manifest last: a
    directory with a manifest holds a whole image. A kernel of the other form left by an earlier build
    goes, so that no config boots it with this initramfs' modules."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").unlink(missing_ok=True)
    for other in KERNEL_FILES:
        if other != image.manifest.kernel_file:
            (directory / other).unlink(missing_ok=True)
    for name, data in ((image.manifest.kernel_file, image.kernel), (INITRD, image.initrd)):
        partial = directory / f".{name}.partial"
        partial.write_bytes(data)
        partial.replace(directory / name)
    partial = directory / ".manifest.json.partial"
    partial.write_text(image.manifest.to_json(), encoding="utf-8")
    partial.replace(directory / "manifest.json")


def _skeleton(staging: _Staging) -> None:
    for where, target in {**TOP_LINKS, **VAR_LINKS}.items():
        staging.put(Entry(where, 0o777, target=target), f"link:{target}")
    for directory in DIRECTORIES:
        staging.put(Entry(directory, 0o755), "generated:directory")


def _commands(staging: _Staging, needs: recipe.Needs, xen: str) -> None:
    binaries = []
    for command in needs.commands:
        found = staging.root.which(command, recipe.COMMAND_PATH)
        if found is None:
            raise InputError(f"{staging.root.path}: no command {command} on {':'.join(recipe.COMMAND_PATH)}")
        binaries.append(staging.copy(found))
    # the init and the image's own hotplug scripts are busybox shell scripts; the interpreter line names
    # the busybox just copied (a script with an unusual interpreter has no place among a package's files)
    busybox = binaries[recipe.BASE_COMMANDS.index("busybox")]
    staging.put(Entry("/init", 0o755, _busybox_script(busybox, "dd-init.sh")), "generated:init")
    for name, source in needs.own_scripts:
        path = posixpath.join(recipe.SCRIPT_DIR, name)
        staging.put(Entry(path, 0o755, _busybox_script(busybox, source)), f"generated:{name}")
    xl = f"/usr/lib/xen-{xen}/bin/xl"
    binaries.append(staging.copy(xl))
    # Debian's /usr/sbin/xl is a wrapper choosing the version from /sys/hypervisor: one version here
    staging.put(Entry("/usr/sbin/xl", 0o777, target=xl), f"link:{xl}")
    done: set[str] = set()
    for binary in binaries:
        _libraries(staging, binary, done)


def _busybox_script(busybox: str, source: str) -> bytes:
    return f"#!{busybox} sh\n".encode() + resources.files("xenddd.image").joinpath(source).read_bytes()


def _libraries(staging: _Staging, path: str, done: set[str]) -> None:
    if path in done:
        return
    done.add(path)
    data = staging.entries[path].data or b""
    if not is_elf(data):
        return
    try:
        info = dynamic_info(data)
    except ElfError as exc:
        raise InputError(f"{staging.root.path}: {path}: {exc}") from exc
    wanted = ([info.interpreter] if info.interpreter else []) + [
        _find_library(staging.root, soname, path) for soname in info.needed
    ]
    for library in wanted:
        _libraries(staging, staging.copy(library), done)


def _find_library(root: RootTree, soname: str, needed_by: str) -> str:
    for directory in LIBRARY_PATH:
        candidate = posixpath.join(directory, soname)
        if root.exists(candidate):
            return candidate
    raise InputError(f"{root.path}: {needed_by} needs {soname}, which no package in the root provides")


def _modules(staging: _Staging, modules: KernelModules, boot: ModuleSet, every: ModuleSet) -> None:
    base = f"/usr/lib/modules/{modules.version}"
    for module in every.ordered:
        data = modules.module_bytes(module)
        staging.put(Entry(f"{base}/{module.path}", 0o644, data), staging.origin(module.source, modules.root))
    staging.put(Entry(f"{base}/modules.dep", 0o644, every.dep_lines().encode()), "generated:depmod")
    aliases = "".join(f"alias {pattern} {name}\n" for pattern, name in modules.aliases_of(every))
    staging.put(Entry(f"{base}/modules.alias", 0o644, aliases.encode()), "generated:depmod")
    builtin = f"{base}/modules.builtin"
    staging.put(Entry(builtin, 0o644, modules.root.read(builtin)), "root")
    text = "".join(f"{base}/{m.path}\n" for m in boot.ordered)
    staging.put(Entry(f"{CONFIG_DIR}/modules", 0o644, text.encode()), "generated:boot modules")


def _facts(staging: _Staging, needs: recipe.Needs, xen: str, version: str) -> None:
    """What the init reads of its image (`. /etc/xenddd-dd/image`)."""
    facts = "".join(
        f"{key}={value}\n"
        for key, value in (
            ("kinds", ",".join(needs.kinds)),
            ("xen", xen),
            ("kernel", version),
            ("never_applets", " ".join(recipe.NEVER_APPLETS)),
        )
    )
    staging.put(Entry(f"{CONFIG_DIR}/image", 0o644, facts.encode()), "generated:image facts")


def _record(staging: _Staging, path: str) -> FileRecord:
    entry = staging.entries[path]
    body = entry.data if entry.data is not None else (entry.target or "").encode()
    return FileRecord(path, entry.mode, len(body), sha256(body), staging.origins[path])


def _only_kernel(root: RootTree) -> str:
    versions = [v for v in root.listdir("/usr/lib/modules") if root.exists(f"/boot/vmlinuz-{v}")]
    if len(versions) != 1:
        found = ", ".join(versions) or "none"
        raise InputError(f"{root.path}: choose the kernel with --kernel (installed: {found})")
    return versions[0]


def _xen_version(root: RootTree) -> str:
    versions = [
        d.removeprefix("xen-")
        for d in root.listdir("/usr/lib")
        if re.fullmatch(r"xen-\d+\.\d+", d) and root.exists(f"/usr/lib/{d}/bin/xl")
    ]
    if len(versions) != 1:
        raise InputError(
            f"{root.path}: needs exactly one xen-utils-X.Y (found: {', '.join(versions) or 'none'})"
        )
    return versions[0]


def _release(root: RootTree) -> str:
    if not root.exists("/etc/os-release"):
        return ""
    for line in root.read("/etc/os-release").decode(errors="replace").splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.partition("=")[2].strip().strip('"')
    return ""


def _absolute(inside: str) -> str:
    normalized = posixpath.normpath("/" + inside)
    if normalized == "/":
        raise InputError(f"--include: {inside!r} is not a path inside the image")
    return normalized
