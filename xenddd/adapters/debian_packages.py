"""Debian packages fetched and unpacked without installing them: `apt-get download` and `dpkg-deb`, for
`image build --kernel-from`.

apt reads the sources and package lists of the root the image is built from (`-o Dir=ROOT`, the host's
own when it is `/`), so the package is of that root's release and from its mirror, and writes none of the
root's caches. Nothing is installed and no maintainer script runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from xenddd.errors import InputError


class AptPackages:
    """`image.kernel_package.PackageSource` through apt-get and dpkg-deb."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def download(self, spec: str, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        before = set(directory.glob("*.deb"))
        options = ["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
        if self.root.resolve() != Path("/"):
            options += ["-o", f"Dir={self.root}", "-o", f"Dir::State::status={self.root}/var/lib/dpkg/status"]
        if os.geteuid() == 0:
            # apt's download sandbox user cannot write to a root-owned scratch directory
            options += ["-o", "APT::Sandbox::User=root"]
        _run(["apt-get", "download", "-q", *options, spec], f"apt-get download {spec}", directory)
        new = sorted(set(directory.glob("*.deb")) - before)
        if len(new) != 1:
            raise InputError(f"apt-get download {spec}: expected one .deb, got {len(new)}")
        return new[0]

    def unpack(self, deb: Path, directory: Path) -> dict[str, str]:
        directory.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "--extract", str(deb), str(directory)], f"dpkg-deb --extract {deb.name}")
        return control_fields(_run(["dpkg-deb", "--field", str(deb)], f"dpkg-deb --field {deb.name}"))


def control_fields(text: str) -> dict[str, str]:
    """A control stanza's fields; continuation lines are joined to their field."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise InputError(f"{what}: {command[0]} is not installed") from None
    if done.returncode != 0:
        said = done.stderr.splitlines()
        lines = [line for line in said if line.startswith("E:")] or said
        raise InputError(f"{what} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    return done.stdout
