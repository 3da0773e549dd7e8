"""(b) PCI: an emulated e1000 at 00:10.0 is hidden from dom0 and given back; dom0's root disk is refused."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import run

NIC = "0000:00:10.0"


def driver_of(bdf: str) -> str | None:
    link = Path("/sys/bus/pci/devices") / bdf / "driver"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def test_an_e1000_is_hidden_and_given_back() -> None:
    original = driver_of(NIC)
    assert original == "e1000", f"expected the test NIC on e1000, found {original}"
    run("xenddd", "pci-assignable-add", NIC)
    assert driver_of(NIC) == "pciback"
    assert NIC in run("xl", "pci-assignable-list").stdout
    assert NIC in run("xenddd", "pci-assignable-list").stdout
    run("xenddd", "pci-assignable-remove", "--rebind", NIC)
    assert driver_of(NIC) == "e1000"
    assert NIC not in run("xl", "pci-assignable-list").stdout


def test_the_root_disk_controller_is_refused() -> None:
    device = Path("/sys/class/block/vda").resolve()
    bdf = next(part for part in device.parts if part.count(":") == 2 and "." in part)
    result = run("xenddd", "pci-assignable-add", bdf, check=False)
    assert result.returncode == 2
    assert "refusing to hide" in result.stderr and "mounted on /" in result.stderr
    assert driver_of(bdf) != "pciback"
