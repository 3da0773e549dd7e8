"""Which PCI devices dom0 itself depends on, and so must not be handed to a driver domain.

A device is refused (unless --force) when it is, or shares an IOMMU group with, the controller under any
mounted block device (root filesystem included), a NIC with a route (the default route or any configured
address: dom0's management path), or the boot VGA device (the console). A device in the same IOMMU group
as one dom0 still uses cannot be isolated by the IOMMU, so Xen would have to give the whole group away.
"""

from __future__ import annotations

import os
from pathlib import Path

from xenddd.adapters.pci_sysfs import PCIBACK, PciSysfs
from xenddd.model import Bdf

_PCI_BRIDGE_CLASS = 0x0604


def dom0_dependencies(sysfs: PciSysfs, bdf: Bdf, proc_root: Path) -> list[str]:
    """Reasons (operator sentences) why dom0 needs `bdf`; empty if it can be hidden safely."""
    reasons = _own_uses(sysfs, bdf, proc_root)
    group = sysfs.iommu_group(bdf)
    if group is not None:
        for other in sysfs.iommu_group_members(group):
            if other == bdf:
                continue
            info = sysfs.info(other)
            if info.pci_class is not None and info.pci_class >> 8 == _PCI_BRIDGE_CLASS:
                continue  # bridges share groups with their devices and are not passed through
            uses = _own_uses(sysfs, other, proc_root)
            if uses or (info.driver is not None and info.driver != PCIBACK):
                why = "; ".join(uses) if uses else f"bound to {info.driver}"
                reasons.append(
                    f"it shares IOMMU group {group} with {other} which dom0 still uses ({why}); "
                    "hide every device of the group"
                )
    return reasons


def _own_uses(sysfs: PciSysfs, bdf: Bdf, proc_root: Path) -> list[str]:
    reasons = []
    device_path = sysfs.device_path(bdf)
    for source, mountpoint in _mounted_block_devices(proc_root):
        if any(_under(device_path, p) for p in _block_device_paths(sysfs, source)):
            reasons.append(f"it is the controller of {source}, mounted on {mountpoint}")
    for iface in _routed_interfaces(proc_root):
        if any(_under(device_path, p) for p in _net_device_paths(sysfs, iface)):
            reasons.append(f"it is the NIC of {iface}, which carries dom0's routes")
    if sysfs.info(bdf).boot_vga:
        reasons.append("it is the boot VGA device (dom0's console)")
    return reasons


def _under(device_path: Path, path: Path) -> bool:
    return path == device_path or device_path in path.parents


def _mounted_block_devices(proc_root: Path) -> list[tuple[str, str]]:
    try:
        lines = (proc_root / "mounts").read_text().splitlines()
    except OSError:
        return []
    mounted = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("/dev/"):
            mounted.append((fields[0], fields[1]))
    return mounted


def _block_device_paths(sysfs: PciSysfs, source: str) -> list[Path]:
    """The sysfs paths of a block device and, for device-mapper/md, of everything beneath it."""
    name = Path(os.path.realpath(source)).name if Path(source).is_symlink() else Path(source).name
    seen: list[Path] = []
    pending = [name]
    while pending:
        current = pending.pop()
        link = sysfs.root / "class/block" / current
        if not link.exists():
            continue
        resolved = link.resolve()
        seen.append(resolved)
        slaves = resolved / "slaves"
        if slaves.is_dir():
            pending.extend(entry.name for entry in slaves.iterdir())
    return seen


def _routed_interfaces(proc_root: Path) -> list[str]:
    """Interfaces with any IPv4 route: the default route's, and every one with an address (its subnet)."""
    try:
        lines = (proc_root / "net/route").read_text().splitlines()[1:]
    except OSError:
        return []
    return sorted({line.split()[0] for line in lines if line.split()})


def _net_device_paths(sysfs: PciSysfs, iface: str) -> list[Path]:
    """The device behind an interface, following bridges' ports and bonds' slaves."""
    paths: list[Path] = []
    pending = [iface]
    visited = set()
    while pending:
        current = pending.pop()
        if current in visited:
            continue
        visited.add(current)
        base = sysfs.root / "class/net" / current
        if (base / "device").exists():
            paths.append((base / "device").resolve())
        for lower in ("brif", "lower"):
            directory = base / lower
            if directory.is_dir():
                pending.extend(entry.name for entry in directory.iterdir())
        if base.is_dir():
            pending.extend(
                entry.name[len("lower_") :] for entry in base.iterdir() if entry.name.startswith("lower_")
            )
    return paths
