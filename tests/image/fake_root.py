"""A small installed Debian root for the image builder: merged /usr, a dpkg database, binaries that are
synthetic ELF files needing libc (and xl needing libxenlight), an alternatives chain for awk, Xen's
scripts, and one kernel with its depmod files, one module xz-compressed as trixie ships them."""

from __future__ import annotations

import lzma
import os
from pathlib import Path

from tests.image.elf_files import elf, module
from xenddd.image import recipe

KERNEL = "6.1.0-test-amd64"
XEN = "4.17"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LOADER_FILE = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
MODULES = {  # name -> (path under the kernel's tree, its modules.dep dependencies)
    "xen-evtchn": ("kernel/drivers/xen/xen-evtchn.ko", []),
    "xen-gntdev": ("kernel/drivers/xen/xen-gntdev.ko", []),
    "xen-gntalloc": ("kernel/drivers/xen/xen-gntalloc.ko", []),
    "xen-privcmd": ("kernel/drivers/xen/xen-privcmd.ko", []),
    "xenfs": ("kernel/drivers/xen/xenfs/xenfs.ko", ["xen-privcmd"]),
    "xen-netback": ("kernel/drivers/net/xen-netback/xen-netback.ko.xz", []),
    "llc": ("kernel/net/llc/llc.ko", []),
    "stp": ("kernel/net/802/stp.ko", ["llc"]),
    "bridge": ("kernel/net/bridge/bridge.ko", ["stp", "llc"]),
    "xen-pcifront": ("kernel/drivers/pci/xen-pcifront.ko", []),
    "xen-netfront": ("kernel/drivers/net/xen-netfront.ko", []),
    "xen-blkback": ("kernel/drivers/block/xen-blkback/xen-blkback.ko", []),
    "xen-blkfront": ("kernel/drivers/block/xen-blkfront.ko", []),
    "e1000": ("kernel/drivers/net/ethernet/intel/e1000/e1000.ko", []),
    "libphy": ("kernel/drivers/net/phy/libphy.ko", []),
    "realtek": ("kernel/drivers/net/phy/realtek.ko", ["libphy"]),
    "r8169": ("kernel/drivers/net/ethernet/realtek/r8169.ko", ["libphy"]),
}
BUILTIN = ("loop",)  # built into this kernel: nothing to load
SOFTDEPS = {"r8169": "pre: realtek", "e1000": "pre: crc-absent"}
ALIASES = {"e1000": "pci:v00008086d0000100Esv*sd*bc*sc*i*", "r8169": "pci:v000010ECd00008168sv*sd*bc*sc*i*"}


BUILTIN_LIST = "".join(f"kernel/drivers/block/{m}.ko\n" for m in BUILTIN)


def kernel_package_tree(directory: Path, version: str, merged: bool) -> None:
    """What a kernel package's data holds, unpacked: /boot/vmlinuz-VERSION and the modules of MODULES as
    real (synthetic) module files whose .modinfo says what the fake root's depmod files say, with no
    depmod files but modules.builtin, under /usr/lib (trixie) or /lib (bookworm, `merged` False)."""
    base = directory / ("usr/lib" if merged else "lib") / "modules" / version
    (directory / "boot").mkdir(parents=True)
    (directory / f"boot/vmlinuz-{version}").write_bytes(f"the kernel {version}".encode())
    for name, (path, deps) in MODULES.items():
        info = [("depends", ",".join(deps)), ("name", name.replace("-", "_"))]
        info += [("softdep", SOFTDEPS[name])] if name in SOFTDEPS else []
        info += [("alias", ALIASES[name])] if name in ALIASES else []
        body = module(info)
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_bytes(lzma.compress(body) if path.endswith(".xz") else body)
    (base / "modules.builtin").write_text(BUILTIN_LIST)
    (directory / "usr/share/doc/linux-image").mkdir(parents=True)
    (directory / "usr/share/doc/linux-image/copyright").write_text("GPL-2\n")


class FakeRoot:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.owned: dict[str, list[str]] = {}
        self.versions: dict[str, str] = {}
        for top in ("bin", "sbin", "lib", "lib64"):
            self.link(f"/{top}", f"usr/{top}")
        self.file("libc6", LIBC, elf(interpreter=None, needed=(), soname="libc.so.6"))
        self.file("libc6", LOADER_FILE, elf(interpreter=None, needed=(), soname="ld-linux-x86-64.so.2"))
        self.link("/usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        lib = "/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17"
        self.file(
            "libxenmisc4.17", lib, elf(interpreter=None, needed=("libc.so.6",), soname="libxenlight.so.4.17")
        )
        program = elf(soname=None, needed=("libc.so.6",))
        commands = set(recipe.BASE_COMMANDS) | {c for group in recipe.KIND_COMMANDS.values() for c in group}
        for command in sorted(commands - {"awk"}):
            self.file(
                f"pkg-{command}",
                f"/usr/{'sbin' if command in ('ip', 'bridge', 'losetup') else 'bin'}/{command}",
                program,
            )
        self.file("mawk", "/usr/bin/mawk", program)
        self.link("/usr/bin/awk", "/etc/alternatives/awk")
        self.link("/etc/alternatives/awk", "/usr/bin/mawk")
        xl = elf(soname=None, needed=("libxenlight.so.4.17", "libc.so.6"))
        self.file(f"xen-utils-{XEN}", f"/usr/lib/xen-{XEN}/bin/xl", xl)
        scripts = set(recipe.BASE_SCRIPTS) | {s for group in recipe.KIND_SCRIPTS.values() for s in group}
        scripts |= {s for own in recipe.OWN_SCRIPTS.values() for s in own}  # Xen's, which the image replaces
        for script in sorted(scripts):
            self.file("xen-utils-common", f"/etc/xen/scripts/{script}", b"#!/bin/bash\n", mode=0o755)
        self.file("xen-utils-common", "/etc/xen/xl.conf", b'#autoballoon="auto"\n', mode=0o644)
        self.file(
            "base-files", "/etc/os-release", b'PRETTY_NAME="Debian 12"\nVERSION_CODENAME=bookworm\n', 0o644
        )
        self.kernel()

    def kernel(self) -> None:
        package = f"linux-image-{KERNEL}"
        self.file(package, f"/boot/vmlinuz-{KERNEL}", b"a kernel", mode=0o644)
        base = f"/usr/lib/modules/{KERNEL}"
        dep_lines = []
        for name, (path, deps) in MODULES.items():
            body = f"module {name}".encode()
            self.file(package, f"{base}/{path}", lzma.compress(body) if path.endswith(".xz") else body, 0o644)
            dep_lines.append(f"{path}: {' '.join(MODULES[d][0] for d in deps)}".rstrip())
        self.write(f"{base}/modules.dep", "\n".join(dep_lines) + "\n")
        softdeps = "".join(f"softdep {m} {rule}\n" for m, rule in SOFTDEPS.items())
        self.write(f"{base}/modules.softdep", "# soft\n" + softdeps)
        self.write(f"{base}/modules.alias", "".join(f"alias {p} {m}\n" for m, p in ALIASES.items()))
        self.write(f"{base}/modules.builtin", BUILTIN_LIST)

    def file(self, package: str, inside: str, data: bytes, mode: int = 0o755) -> None:
        self.write(inside, data, mode)
        self.owned.setdefault(package, []).append(inside)
        self.versions.setdefault(package, "1.0-1")
        self.dpkg()

    def write(self, inside: str, data: bytes | str, mode: int = 0o644) -> None:
        host = self.path / inside.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(data.encode() if isinstance(data, str) else data)
        host.chmod(mode)

    def link(self, inside: str, target: str) -> None:
        host = self.path / inside.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, host)

    def remove(self, inside: str) -> None:
        (self.path / inside.lstrip("/")).unlink()

    def dpkg(self) -> None:
        info = self.path / "var/lib/dpkg/info"
        info.mkdir(parents=True, exist_ok=True)
        stanzas = []
        for package, files in sorted(self.owned.items()):
            # bookworm's packages list /bin and /lib paths; the files live under merged /usr
            listed = [f.replace("/usr/bin/", "/bin/") if package == "pkg-bash" else f for f in files]
            (info / f"{package}.list").write_text("/.\n" + "\n".join(listed) + "\n")
            stanzas.append(
                f"Package: {package}\nStatus: install ok installed\nArchitecture: amd64\n"
                f"Version: {self.versions[package]}\n"
            )
        (self.path / "var/lib/dpkg/status").write_text("\n".join(stanzas))


def unpack(archive: bytes) -> dict[str, tuple[int, bytes]]:
    """A newc archive's members: path -> (mode with its type bits, body; a symlink's body is its target)."""
    members: dict[str, tuple[int, bytes]] = {}
    at = 0
    while True:
        fields = [int(archive[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name = archive[at + 110 : at + 110 + name_size - 1].decode()
        at += 110 + name_size
        at += -at % 4
        body = archive[at : at + size]
        at += size
        at += -at % 4
        if name == "TRAILER!!!":
            return members
        members["/" + name] = (mode, body)
