"""A faithful little sysfs for PCI tests: a real directory tree shaped like /sys, whose writable attributes
behave like the kernel's (bind/unbind move the `driver` link and emit uevents; pciback claims only devices in
its slots or with driver_override; new_slot is not idempotent; a failing write raises the kernel's errno)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from xenddd.adapters.pci_sysfs import PCIBACK, PciSysfs
from xenddd.adapters.udev import QueueUevents, Uevent


class FakeKernel:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uevents = QueueUevents()
        self.fail_writes: dict[str, int] = {}  # attribute name → errno to fail with
        self.silent_bind: set[str] = set()  # drivers whose probe "succeeds" without binding (no uevent)
        self.slot_writes: list[str] = []
        (root / "bus/pci/devices").mkdir(parents=True)
        (root / "bus/pci/drivers").mkdir(parents=True)
        (root / "class/block").mkdir(parents=True)
        (root / "class/net").mkdir(parents=True)

    # -- building the machine --------------------------------------------------------------------------

    def add_driver(self, name: str) -> None:
        directory = self.root / "bus/pci/drivers" / name
        directory.mkdir()
        for attribute in ("bind", "unbind", "new_id"):
            (directory / attribute).write_text("")
        if name == PCIBACK:
            for attribute in ("new_slot", "remove_slot", "permissive", "slots"):
                (directory / attribute).write_text("")

    def add_device(
        self,
        bdf: str,
        *,
        driver: str | None = None,
        vendor: str = "0x8086",
        device: str = "0x100e",
        pci_class: str = "0x020000",
        iommu_group: int | None = None,
        reset_method: str | None = "flr bus",
        boot_vga: bool = False,
        driver_override: bool = True,
    ) -> Path:
        real = self.root / "devices/pci0000:00" / bdf
        real.mkdir(parents=True)
        for name, value in (("vendor", vendor), ("device", device), ("class", pci_class)):
            (real / name).write_text(value + "\n")
        if reset_method is not None:
            (real / "reset_method").write_text(reset_method + "\n")
        if boot_vga:
            (real / "boot_vga").write_text("1\n")
        if driver_override:
            (real / "driver_override").write_text("(null)\n")
        if iommu_group is not None:
            group = self.root / "kernel/iommu_groups" / str(iommu_group) / "devices"
            group.mkdir(parents=True, exist_ok=True)
            os.symlink(real, group / bdf)
            os.symlink(group.parent, real / "iommu_group")
        os.symlink(real, self.root / "bus/pci/devices" / bdf)
        if driver is not None:
            self._link(bdf, driver)
        return real

    def add_block_device(self, name: str, bdf: str, partitions: int = 1) -> None:
        """A disk behind controller `bdf`, with partitions (class/block lists both, as the kernel does)."""
        target = self.root / "devices/pci0000:00" / bdf / "ata1/host0/block" / name
        target.mkdir(parents=True)
        os.symlink(target, self.root / "class/block" / name)
        for number in range(1, partitions + 1):
            (target / f"{name}{number}").mkdir()
            os.symlink(target / f"{name}{number}", self.root / "class/block" / f"{name}{number}")

    def add_net_device(self, name: str, bdf: str) -> None:
        iface = self.root / "devices/pci0000:00" / bdf / "net" / name
        iface.mkdir(parents=True)
        os.symlink(self.root / "devices/pci0000:00" / bdf, iface / "device")
        os.symlink(iface, self.root / "class/net" / name)

    # -- what the code under test sees -----------------------------------------------------------------

    def sysfs(self) -> PciSysfs:
        """The adapter under test, its writes reaching this kernel's handlers (errno and all)."""
        return PciSysfs(self.root, writer=self.write)

    def driver_of(self, bdf: str) -> str | None:
        link = self.root / "bus/pci/devices" / bdf / "driver"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def slots(self) -> list[str]:
        return (self.root / "bus/pci/drivers" / PCIBACK / "slots").read_text().split()

    def override_of(self, bdf: str) -> str:
        """The device's driver_override; kernels without the attribute behave as "(null)"."""
        path = self.root / "devices/pci0000:00" / bdf / "driver_override"
        return path.read_text().strip() if path.exists() else "(null)"

    # -- the kernel's write handlers -------------------------------------------------------------------

    def write(self, path: Path, value: str) -> None:
        name = path.name
        if name in self.fail_writes:
            raise OSError(self.fail_writes[name], os.strerror(self.fail_writes[name]))
        relative = path.relative_to(self.root).parts
        text = value.strip()
        if relative[:3] == ("bus", "pci", "drivers"):
            driver = relative[3]
            if name == "bind":
                self._bind(text, driver)
            elif name == "unbind":
                if self.driver_of(text) != driver:
                    raise OSError(errno.ENODEV, "not bound")
                os.unlink(self.root / "devices/pci0000:00" / text / "driver")
                os.unlink(self.root / "bus/pci/drivers" / driver / text)
                self.uevents.emit(Uevent("unbind", text, None))
            elif name == "new_slot":
                self.slot_writes.append(text)
                slots = self.root / "bus/pci/drivers" / PCIBACK / "slots"
                slots.write_text(slots.read_text() + text + "\n")  # not idempotent, like the kernel
            elif name == "remove_slot":
                slots = self.root / "bus/pci/drivers" / PCIBACK / "slots"
                lines = slots.read_text().split()
                if text not in lines:
                    raise OSError(errno.ENOENT, "no such slot")
                slots.write_text("".join(f"{s}\n" for s in lines if s != text))
            elif name == "permissive":
                pass
            return
        if name == "driver_override":
            path.resolve().write_text((text or "(null)") + "\n")
            return
        raise OSError(errno.EACCES, "not writable")

    def _bind(self, bdf: str, driver: str) -> None:
        if not (self.root / "bus/pci/devices" / bdf).exists():
            raise OSError(errno.ENODEV, "no such device")
        if self.driver_of(bdf) is not None:
            raise OSError(errno.EBUSY, "already bound")
        override = self.override_of(bdf)
        if override != "(null)" and override != driver:
            raise OSError(errno.ENODEV, "driver_override forbids it")
        if driver == PCIBACK and override != PCIBACK and bdf not in self.slots():
            raise OSError(errno.ENODEV, "pciback does not claim it")
        if driver in self.silent_bind:
            return
        self._link(bdf, driver)
        self.uevents.emit(Uevent("bind", bdf, driver))

    def _link(self, bdf: str, driver: str) -> None:
        real = self.root / "devices/pci0000:00" / bdf
        os.symlink(self.root / "bus/pci/drivers" / driver, real / "driver")
        os.symlink(real, self.root / "bus/pci/drivers" / driver / bdf)
