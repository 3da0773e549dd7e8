"""What `xenddd image check` finds about an image and the driver domains of a config that boot it: pure,
from the manifest, the config and what the caller read of the host (each PCI device's modalias).

An image that no longer matches its manifest is an error on its own. A driver domain booting it (its
initramfs) is checked for what would make it fail without a clear message at its first start: another
kernel than the image's (vmlinuz, or vmlinux once unpacked: the modules are that kernel's), a kind the
image lacks, an HVM domain (pcifront is PV only), a command line the image's init refuses, a readiness
the init never writes, too little memory for the unpacked image, and a PCI device no module in the image
drives.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

from xenddd.config.check import Finding
from xenddd.config.spec import Config, DriverDomainSpec
from xenddd.errors import InputError
from xenddd.image.cmdline import parse
from xenddd.image.manifest import INITRD, Manifest
from xenddd.model import Bdf

# the kernel, the initramfs and its unpacked copy live together while the domain boots
MIN_MEMORY_MIB = 128
# a PV domain that may get PCI devices sets up xen-swiotlb's bounce buffer at boot (64 MiB by default):
# at 128 MiB the initramfs then no longer unpacks ("Initramfs unpacking failed: write error", seen on the
# test bed's vtd machine)
SWIOTLB_MIB = 64


def minimum_memory_mib(spec: DriverDomainSpec) -> int:
    return MIN_MEMORY_MIB + (
        SWIOTLB_MIB if spec.pci or spec.pci_hotplug or "iommu=soft" in spec.cmdline else 0
    )


def check(
    manifest: Manifest, directory: Path, config: Config | None, modalias: Callable[[Bdf], str | None]
) -> list[Finding]:
    findings = [Finding("error", "image", problem) for problem in manifest.mismatches(directory)]
    if config is None:
        return findings
    booting = [(i, spec) for i, spec in enumerate(config.driver_domains) if _boots(spec, directory)]
    if not booting:
        findings.append(Finding("warning", "image", f"no driver domain of {config.source} boots {directory}"))
    for i, spec in booting:
        kernel = directory / manifest.kernel_file
        if spec.kernel is None or spec.kernel.resolve() != kernel.resolve():
            message = (
                f"{spec.name} boots {spec.kernel}; the image's kernel is {kernel}, whose modules it holds"
            )
            findings.append(Finding("error", f"driver_domain[{i}].kernel", message))
        findings += _domain_findings(f"driver_domain[{i}]", spec, manifest, modalias)
    return findings


def drivers_for(manifest: Manifest, alias: str) -> list[str]:
    """The image's modules whose PCI aliases match a device's modalias, as modprobe would pick them."""
    return sorted({module for pattern, module in manifest.pci_aliases if fnmatch.fnmatchcase(alias, pattern)})


def _boots(spec: DriverDomainSpec, directory: Path) -> bool:
    return spec.initrd is not None and spec.initrd.resolve() == (directory / INITRD).resolve()


def _domain_findings(
    where: str, spec: DriverDomainSpec, manifest: Manifest, modalias: Callable[[Bdf], str | None]
) -> list[Finding]:
    findings = []
    lacking = sorted(kind.value for kind in spec.kinds if kind.value not in manifest.kinds)
    if lacking:
        found = ", ".join(manifest.kinds)
        findings.append(
            Finding("error", f"{where}.kind", f"{spec.name} is {', '.join(lacking)}; the image is {found}")
        )
    if spec.virt != "pv":
        findings.append(
            Finding("error", f"{where}.type", f"{spec.name}: the image boots PV driver domains only")
        )
    try:
        parse(spec.cmdline)
    except InputError as exc:
        findings.append(Finding("error", f"{where}.cmdline", f"{spec.name}: {exc}"))
    readiness = spec.readiness
    if readiness.condition == "xenstore-key" and (readiness.key, readiness.value) != ("data/ready", "1"):
        message = f"{spec.name} waits for {readiness.key}={readiness.value}; the image writes data/ready=1"
        findings.append(Finding("error", f"{where}.readiness", message))
    needed = minimum_memory_mib(spec)
    if spec.memory_mib < needed:
        why = " (with PCI devices: xen-swiotlb's 64 MiB)" if needed > MIN_MEMORY_MIB else ""
        message = f"{spec.name} has {spec.memory_mib} MiB; the image needs at least {needed}{why}"
        findings.append(Finding("error", f"{where}.memory", message))
    for j, device in enumerate(spec.pci):
        alias = modalias(device.bdf)
        if alias is None:
            continue  # `config check` reports a device that is not there
        drivers = drivers_for(manifest, alias)
        if not drivers:
            message = f"{device.bdf}: no module in the image drives it ({alias}): rebuild with --nic MODULE"
            findings.append(Finding("error", f"{where}.pci[{j}].bdf", message))
    return findings
