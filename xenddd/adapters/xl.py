"""`xl` for what libvirt cannot do: PCI devices libvirt would refuse to pass through without resetting
them, and Xen's capabilities. (Guests' vifs and disks that libvirt cannot handle are libxl's, in a helper
process: adapters/libxl_devices.)
"""

from __future__ import annotations

import subprocess

from xenddd.config.spec import PciDeviceSpec
from xenddd.errors import InputError, XendddError
from xenddd.model import Bdf

XL_TIMEOUT = 120.0  # an xl call took up to 6.3 s under emulation; allow for a slow, loaded dom0


class Xl:
    def __init__(self, command: str = "xl") -> None:
        self.command = command

    def iommu_available(self) -> bool:
        """`xl info` lists `pv_directio` and/or `hvm_directio` in virt_caps when Xen can pass PCI devices
        through (a host without VMX/SVM, like an emulated one, has only the PV one)."""
        try:
            output = self._run("info")
        except XendddError:
            return False
        for line in output.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "virt_caps":
                return bool({"pv_directio", "hvm_directio"} & set(value.split()))
        return False

    def pci_attach(self, domain: str, pci: PciDeviceSpec) -> None:
        """libxl resets the device through pciback (do_flr) when it has a way to, and proceeds when not."""
        options = (["permissive=1"] if pci.permissive else []) + (
            ["rdm_policy=relaxed"] if pci.rdm_policy == "relaxed" else []  # libxl's default is strict
        )
        self._run("pci-attach", domain, ",".join([str(pci.bdf), *options]))

    def pci_list(self, domain: str) -> list[Bdf]:
        """The host devices passed through to `domain` (`xl pci-list`: a header, then "vslot BDF")."""
        devices = []
        for line in self._run("pci-list", domain).splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2:
                try:
                    devices.append(Bdf.parse(fields[1]))
                except InputError:
                    raise XendddError(f"xl pci-list {domain}: unexpected line {line!r}") from None
        return devices

    def _run(self, *args: str) -> str:
        try:
            result = subprocess.run(
                [self.command, *args], capture_output=True, text=True, timeout=XL_TIMEOUT, check=False
            )
        except FileNotFoundError:
            raise XendddError(f"'{self.command}' is not installed (needed for {args[0]})") from None
        except subprocess.TimeoutExpired:
            raise XendddError(f"xl {' '.join(args)} did not finish within {XL_TIMEOUT:.0f} s") from None
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise XendddError(f"xl {' '.join(args)} failed: {detail}")
        return result.stdout
