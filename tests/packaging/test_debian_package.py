"""The Debian package as scripts/build-deb builds it (debhelper, pybuild): what it installs, its conffile,
what it depends on, and lintian's verdict. That it installs, runs and purges on Debian 12 and 13 is proven
by the real-Xen suite, whose dom0s install it with apt (integration/scenarios/test_z_package.py)."""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import tarfile
from pathlib import Path

import click
import pytest

from xenddd import __version__
from xenddd.cli.main import cli
from xenddd.config.loader import EXAMPLE_CONFIG_PATH, INSTALLED_CONFIG_PATH

TOP = Path(__file__).resolve().parents[2]
DOM0_BLOCK = "/usr/libexec/xenddd/block"
# the first build installs the build dependencies with apt
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def deb() -> Path:
    result = subprocess.run(
        [str(TOP / "scripts/build-deb")], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, (
        f"scripts/build-deb failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.name == f"xenddd_{__version__}_all.deb"
    return path


def modes(deb: Path) -> dict[str, str]:
    """Every path the package installs, with its mode as `dpkg-deb -c` shows it (`-rwxr-xr-x`)."""
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].removeprefix("."): line.split()[0] for line in listing.splitlines()}


def contents(deb: Path) -> set[str]:
    return {path for path, mode in modes(deb).items() if not mode.startswith("d")}


def control_field(deb: Path, field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True
    ).stdout.strip()


def member(deb: Path, path: str, part: str = "--fsys-tarfile") -> bytes:
    """One file of the package's data (or, with part="--ctrl-tarfile", of its control area)."""
    tar = subprocess.run(["dpkg-deb", part, str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        extracted = archive.extractfile(f".{path}")
        assert extracted is not None, path
        return extracted.read()


def command_paths(command: click.Command, prefix: str = "xenddd") -> list[str]:
    paths = [prefix]
    if isinstance(command, click.Group):
        for name, subcommand in command.commands.items():
            paths += command_paths(subcommand, f"{prefix}-{name}")
    return paths


def test_the_package_installs_the_command_the_unit_the_config_and_the_example(deb: Path) -> None:
    files = contents(deb)
    assert "/usr/bin/xenddd" in files
    assert {"/lib/systemd/system/xenddd.service", "/usr/lib/systemd/system/xenddd.service"} & files
    assert "/usr/lib/python3/dist-packages/xenddd/cli/main.py" in files
    assert "/usr/lib/python3/dist-packages/xenddd/config/default.toml" in files
    assert "/usr/share/bash-completion/completions/xenddd" in files
    assert "/usr/share/doc/xenddd/README.md" in files
    assert member(deb, "/usr/share/doc/xenddd/examples/xenddd.toml") == EXAMPLE_CONFIG_PATH.read_bytes()
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]  # compiled on the host


def test_every_script_the_image_builder_reads_is_in_the_package(deb: Path) -> None:
    """`xenddd image build` reads the image's scripts from the installed package (builder.py): one left
    out of the package data builds nowhere but in a clone."""
    shipped = {Path(f).name for f in contents(deb) if "/dist-packages/xenddd/image/" in f}
    scripts = {path.name for path in (TOP / "xenddd/image").glob("*.sh")}
    assert scripts and scripts <= shipped, sorted(scripts - shipped)


def test_dom0_gets_the_image_block_script_for_a_driver_domains_own_disks(deb: Path) -> None:
    mode = modes(deb).get(DOM0_BLOCK)
    assert mode == "-rwxr-xr-x", mode
    script = member(deb, DOM0_BLOCK).decode()
    assert script.startswith("#!/bin/bash\nxen_block=/etc/xen/scripts/block\n")
    assert script.endswith((TOP / "xenddd/image/block.sh").read_text())


def test_the_do_nothing_config_is_the_only_conffile(deb: Path) -> None:
    assert member(deb, "/conffiles", "--ctrl-tarfile").decode().split() == ["/etc/xenddd/xenddd.toml"]
    assert member(deb, "/etc/xenddd/xenddd.toml") == INSTALLED_CONFIG_PATH.read_bytes()


def test_every_command_has_its_manual_page_generated_from_its_help(deb: Path) -> None:
    files = contents(deb)
    pages = {f.removeprefix("/usr/share/man/man1/").removesuffix(".1.gz") for f in files if "/man1/" in f}
    assert pages == set(command_paths(cli))
    page = gzip.decompress(member(deb, "/usr/share/man/man1/xenddd-pci-assignable-add.1.gz")).decode()
    assert "pci-assignable-add" in page and __version__ in page


def test_the_bash_completion_completes_the_xenddd_command(deb: Path) -> None:
    script = member(deb, "/usr/share/bash-completion/completions/xenddd").decode()
    assert re.search(r"complete .*-F _xenddd_completion xenddd$", script, re.MULTILINE)


def test_it_depends_on_debians_python_libraries_and_recommends_no_qemu(deb: Path) -> None:
    depends = control_field(deb, "Depends")
    for package in ("python3-pyxs", "python3-libvirt", "python3-click", "python3-pyudev"):
        assert re.search(rf"\b{package}\b", depends), depends
    relations = f"{depends}, {control_field(deb, 'Recommends')}"
    # trixie's libvirt-daemon-system (and the QEMU driver) would pull QEMU onto a Xen dom0
    assert "libvirt-daemon-system" not in relations and "qemu" not in relations
    assert "libvirt-daemon-driver-xen" in relations


def test_the_unit_is_enabled_only_where_it_was_before_and_the_state_directory_is_private(deb: Path) -> None:
    script = member(deb, "/postinst", "--ctrl-tarfile").decode()
    # dh_installsystemd --no-enable: symlinks are only renewed for an operator who had enabled the unit
    assert "if deb-systemd-helper debian-installed 'xenddd.service'" in script
    assert "install -d -m 0700 /var/lib/xenddd" in script


def test_lintian_finds_no_error_and_no_warning(deb: Path) -> None:
    result = subprocess.run(
        ["lintian", "--fail-on", "error,warning", str(deb)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
    assert not [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")], result.stdout
