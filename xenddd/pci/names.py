"""Vendor and device names from the pci.ids database (Debian: /usr/share/misc/pci.ids), when present."""

from __future__ import annotations

from pathlib import Path

PCI_IDS_PATHS = (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids"))


class PciNames:
    def __init__(self, vendors: dict[int, str], devices: dict[tuple[int, int], str]) -> None:
        self._vendors = vendors
        self._devices = devices

    @classmethod
    def load(cls, paths: tuple[Path, ...] = PCI_IDS_PATHS) -> PciNames:
        for path in paths:
            try:
                return cls.parse(path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
        return cls({}, {})

    @classmethod
    def parse(cls, text: str) -> PciNames:
        vendors: dict[int, str] = {}
        devices: dict[tuple[int, int], str] = {}
        vendor: int | None = None
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            if line.startswith("C "):
                break  # device classes follow the vendor list
            if not line.startswith("\t"):
                vendor = _id(line)
                if vendor is not None:
                    vendors[vendor] = line[4:].strip()
            elif not line.startswith("\t\t") and vendor is not None:
                device = _id(line[1:])
                if device is not None:
                    devices[(vendor, device)] = line[5:].strip()
        return cls(vendors, devices)

    def describe(self, vendor: int | None, device: int | None) -> str | None:
        if vendor is None:
            return None
        vendor_name = self._vendors.get(vendor, f"vendor {vendor:04x}")
        device_name = self._devices.get((vendor, device or 0), f"device {device or 0:04x}")
        return f"{vendor_name} {device_name}"


def _id(text: str) -> int | None:
    try:
        return int(text[:4], 16)
    except ValueError:
        return None
