"""PCI devices and the xen-pciback driver through sysfs (root configurable: `sysfs_root`, XENDDD_SYSFS_ROOT).

Every write is one small function, checked: the kernel answers a bad sysfs write with an errno, which
becomes a XendddError naming the file. Reading is tolerant (a missing attribute is None), writing is not.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xenddd.errors import XendddError
from xenddd.model import Bdf

PCIBACK = "pciback"


@dataclass(frozen=True)
class PciDeviceInfo:
    bdf: Bdf
    vendor: int | None
    device: int | None
    pci_class: int | None
    driver: str | None
    iommu_group: int | None
    reset_methods: tuple[str, ...]
    boot_vga: bool


def _write_file(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


class PciSysfs:
    """`writer` is how attribute writes reach the kernel: the file itself, or a test's emulated kernel."""

    def __init__(self, root: Path, writer: Callable[[Path, str], None] = _write_file) -> None:
        self.root = root
        self._writer = writer
        self.devices = root / "bus/pci/devices"
        self.drivers = root / "bus/pci/drivers"

    # -- reading ---------------------------------------------------------------------------------------

    def exists(self, bdf: Bdf) -> bool:
        return (self.devices / str(bdf)).is_dir()

    def pciback_loaded(self) -> bool:
        return (self.drivers / PCIBACK).is_dir()

    def driver(self, bdf: Bdf) -> str | None:
        link = self.devices / str(bdf) / "driver"
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return None

    def has_driver_override(self, bdf: Bdf) -> bool:
        return (self.devices / str(bdf) / "driver_override").exists()

    def pciback_slots(self) -> set[Bdf]:
        """The BDFs pciback will claim; `slots` lines look like `0000:00:10.0`."""
        text = self._read(self.drivers / PCIBACK / "slots") or ""
        slots = set()
        for line in text.split():
            try:
                slots.add(Bdf.parse(line))
            except XendddError:
                continue
        return slots

    def pciback_devices(self) -> list[Bdf]:
        """Devices currently bound to pciback (the links in its driver directory)."""
        found = []
        directory = self.drivers / PCIBACK
        if directory.is_dir():
            for entry in directory.iterdir():
                try:
                    found.append(Bdf.parse(entry.name))
                except XendddError:
                    continue
        return sorted(found)

    def info(self, bdf: Bdf) -> PciDeviceInfo:
        base = self.devices / str(bdf)
        reset = self._read(base / "reset_method")
        if reset is not None:
            methods = tuple(reset.split())
        else:
            methods = ("reset",) if (base / "reset").exists() else ()
        return PciDeviceInfo(
            bdf=bdf,
            vendor=_hex(self._read(base / "vendor")),
            device=_hex(self._read(base / "device")),
            pci_class=_hex(self._read(base / "class")),
            driver=self.driver(bdf),
            iommu_group=self.iommu_group(bdf),
            reset_methods=methods,
            boot_vga=(self._read(base / "boot_vga") or "").strip() == "1",
        )

    def iommu_group(self, bdf: Bdf) -> int | None:
        try:
            return int(Path(os.readlink(self.devices / str(bdf) / "iommu_group")).name)
        except (OSError, ValueError):
            return None

    def iommu_group_members(self, group: int) -> list[Bdf]:
        directory = self.root / "kernel/iommu_groups" / str(group) / "devices"
        members = []
        if directory.is_dir():
            for entry in directory.iterdir():
                try:
                    members.append(Bdf.parse(entry.name))
                except XendddError:
                    continue
        return sorted(members)

    def device_path(self, bdf: Bdf) -> Path:
        """The real sysfs path (through /sys/devices), which block and net devices' links resolve into."""
        return (self.devices / str(bdf)).resolve()

    # -- writing (each step checked) -------------------------------------------------------------------

    def unbind(self, bdf: Bdf, driver: str) -> None:
        self._write(self.drivers / driver / "unbind", str(bdf))

    def bind(self, bdf: Bdf, driver: str) -> None:
        self._write(self.drivers / driver / "bind", str(bdf))

    def set_driver_override(self, bdf: Bdf, driver: str | None) -> None:
        # an empty write (a lone newline) clears the override
        self._write(self.devices / str(bdf) / "driver_override", driver or "\n")

    def new_slot(self, bdf: Bdf) -> None:
        self._write(self.drivers / PCIBACK / "new_slot", str(bdf))

    def remove_slot(self, bdf: Bdf) -> None:
        self._write(self.drivers / PCIBACK / "remove_slot", str(bdf))

    def set_permissive(self, bdf: Bdf) -> None:
        self._write(self.drivers / PCIBACK / "permissive", str(bdf))

    def _write(self, path: Path, value: str) -> None:
        try:
            self._writer(path, value)
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise XendddError(
                f"writing {value.strip() or 'an empty line'!r} to {path} failed: {reason}"
            ) from None

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except OSError:
            return None


def _hex(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None
