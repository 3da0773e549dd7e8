"""The configured PCI devices as this host has them, for `xenddd config check`: read-only.

What the daemon would refuse when it hides a device (`assignment.PciAssigner.hide`) is an error here, so
the operator hears it before `systemctl enable --now` rather than from the journal afterwards.
"""

from __future__ import annotations

from pathlib import Path

from xenddd.adapters.pci_sysfs import PciSysfs
from xenddd.config.check import Finding
from xenddd.config.spec import Config
from xenddd.pci.safety import dom0_dependencies


def device_findings(config: Config, sysfs: PciSysfs, proc_root: Path) -> list[Finding]:
    """Per configured device: absent from this host, needed by dom0, or without a reset method."""
    devices = [
        (f"driver_domain[{i}].pci[{j}]", device)
        for i, spec in enumerate(config.driver_domains)
        for j, device in enumerate(spec.pci)
    ]
    if not devices:
        return []
    if not sysfs.devices.is_dir():
        return [Finding("warning", devices[0][0], f"no PCI sysfs under {sysfs.root}: devices not checked")]
    findings = []
    if not sysfs.pciback_loaded():
        findings.append(
            Finding("warning", devices[0][0], "the xen-pciback driver is not loaded (modprobe xen-pciback)")
        )
    for where, device in devices:
        key = f"{where}.bdf"
        if not sysfs.exists(device.bdf):
            findings.append(Finding("error", key, f"no PCI device {device.bdf} on this host"))
            continue
        for reason in dom0_dependencies(sysfs, device.bdf, proc_root):
            findings.append(Finding("error", key, f"dom0 needs {device.bdf}: {reason}"))
        if not sysfs.info(device.bdf).reset_methods:
            findings.append(_no_reset(where, device.reset, str(device.bdf)))
    return findings


def _no_reset(where: str, policy: str, bdf: str) -> Finding:
    if policy == "strict":
        return Finding(
            "error",
            f"{where}.reset",
            f'{bdf} has no reset method: refused under "strict"; "relaxed" allows it',
        )
    return Finding("warning", f"{where}.reset", f"{bdf} has no reset method: passed through without a reset")
