"""libvirt domain and device XML for driver domains and their guests' frontends, built with ElementTree.

Decisions recorded here because the XML is where they show:
- PCI devices are `<hostdev managed='no'>`: xenddd's own PCI module hides them through xen-pciback first
  (recording the original driver, refusing devices dom0 needs, rolling back on failure). With
  managed='yes' libvirt would detach them from their dom0 driver itself and rebind them on every stop,
  undoing that work and racing xenddd's records.
- `permissive` maps to `<source writeFiltering='no'>`, libvirt's name for pciback's permissive mode.
  libvirt exposes no per-device rdm_policy; libxl's default applies (`rdm_policy` is kept in the config
  for xl-created domains and documented as such).
- Only devices with the strict reset policy are `<hostdev>`s: libvirt resets every hostdev itself and
  refuses one it cannot reset ("no FLR, PM reset or bus reset available"), which is exactly the strict
  policy. Devices with the relaxed policy are passed through by libxl after the domain starts (see
  adapters/hypervisor.py), which resets through pciback when it can and proceeds when it cannot, as
  `xl create` does; the domain is created with `<passthrough state='on'/>` so that Xen sets up its
  IOMMU context for them.
- A driver domain's own vifs and disks may be served by another driver domain (`<backenddomain>`, which
  libxl resolves by name at each start): a filtering domain's uplink from the NIC's domain. A vif's rate is
  `<bandwidth><outbound average>` in KiB/s, the only rate libvirt's libxl driver passes on (at libxl's
  50 ms interval); a vif without a bridge is `type='ethernet'`, left to its script.
- `<on_crash>` is `destroy` (or `preserve` to keep a crashed domain for debugging): xenddd, not libvirt,
  owns restarts, because only xenddd knows the guests' frontends must be reattached afterwards.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xenddd.config.spec import DOM0_BACKEND, DiskSpec, DriverDomainSpec, PciDeviceSpec, VifSpec
from xenddd.model import VbdParams


def driver_domain_xml(spec: DriverDomainSpec, uuid: str | None = None) -> str:
    """`uuid` keeps an existing definition's identity, so that defining again updates it."""
    domain = ET.Element("domain", type="xen")
    ET.SubElement(domain, "name").text = spec.name
    if uuid is not None:
        ET.SubElement(domain, "uuid").text = uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
    os_element = ET.SubElement(domain, "os")
    if spec.virt == "pv":
        ET.SubElement(os_element, "type", arch="x86_64", machine="xenpv").text = "linux"
        if spec.kernel is not None:
            ET.SubElement(os_element, "kernel").text = str(spec.kernel)
        if spec.initrd is not None:
            ET.SubElement(os_element, "initrd").text = str(spec.initrd)
        if spec.cmdline:
            ET.SubElement(os_element, "cmdline").text = spec.cmdline
    else:
        ET.SubElement(os_element, "type", arch="x86_64", machine="xenfv").text = "hvm"
        ET.SubElement(os_element, "boot", dev="hd")
    by_libxl = libxl_pci(spec)
    if spec.virt == "hvm" or by_libxl:
        features = ET.SubElement(domain, "features")
        if spec.virt == "hvm":
            for feature in ("acpi", "apic", "pae"):
                ET.SubElement(features, feature)
        if by_libxl:
            ET.SubElement(ET.SubElement(features, "xen"), "passthrough", state="on")
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = spec.on_crash
    devices = ET.SubElement(domain, "devices")
    for disk in spec.disks:
        devices.append(_disk(disk, hvm=spec.virt == "hvm"))
    for vif in spec.vifs:
        devices.append(_interface(vif))
    for pci in spec.pci:
        if pci not in by_libxl:
            devices.append(_hostdev(pci))
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="xen" if spec.virt == "pv" else "serial", port="0")
    return _text(domain)


def libxl_pci(spec: DriverDomainSpec) -> tuple[PciDeviceSpec, ...]:
    """The devices libxl, not libvirt, passes through: those whose reset policy is relaxed."""
    return tuple(pci for pci in spec.pci if pci.reset == "relaxed")


def frontend_disk_xml(params: VbdParams, backend: str) -> str:
    """A vbd (`<disk>`) served by driver domain `backend` (`<backenddomain>`), with libxl's recorded
    backend type: `phy` is `<disk type='block'>` whatever the target looks like, `qdisk` is QEMU's file
    disk with its format, `tap` is blktap (libvirt's libxlMakeDisk maps them back one for one). Only a
    record from before xenddd kept the backend type falls back to judging by the target's /dev prefix.

    libvirt's `<interface>` is not built here: libvirt cannot keep a vif's devid, so vifs are attached
    with xl (adapters/hypervisor.py, docs/design.md); nor are disks with a hotplug script, which
    libxlMakeDisk has no field for.
    """
    backend_type = params.backend_type or ("phy" if params.target.startswith("/dev/") else "qdisk")
    block = backend_type == "phy"
    disk = ET.Element(
        "disk", type="block" if block else "file", device="cdrom" if params.device_type == "cdrom" else "disk"
    )
    driver = {"name": "phy"} if block else {"name": backend_type if backend_type == "tap" else "qemu"}
    if not block:
        driver["type"] = params.format or "raw"
    ET.SubElement(disk, "driver", driver)
    ET.SubElement(disk, "source", {"dev": params.target} if block else {"file": params.target})
    ET.SubElement(disk, "backenddomain", name=backend)
    ET.SubElement(disk, "target", dev=params.vdev, bus="xen")
    if params.mode == "r":
        ET.SubElement(disk, "readonly")
    return _text(disk)


def _disk(disk: DiskSpec, hvm: bool) -> ET.Element:
    block = str(disk.path).startswith("/dev/")
    element = ET.Element("disk", type="block" if block else "file", device="disk")
    if block:
        ET.SubElement(element, "driver", name="phy")
        ET.SubElement(element, "source", dev=str(disk.path))
    else:
        ET.SubElement(element, "driver", name="qemu", type=disk.format)
        ET.SubElement(element, "source", file=str(disk.path))
    if disk.backend != DOM0_BACKEND:
        ET.SubElement(element, "backenddomain", name=disk.backend)
    target = disk.vdev if not hvm or not disk.vdev.startswith("xvd") else disk.vdev.replace("xvd", "hd", 1)
    ET.SubElement(element, "target", dev=target, bus="xen" if not hvm else "ide")
    if disk.readonly:
        ET.SubElement(element, "readonly")
    return element


def _interface(vif: VifSpec) -> ET.Element:
    element = ET.Element("interface", type="bridge" if vif.bridge else "ethernet")
    ET.SubElement(element, "mac", address=vif.mac)
    if vif.bridge:
        ET.SubElement(element, "source", bridge=vif.bridge)
    if vif.script:
        ET.SubElement(element, "script", path=vif.script)
    if vif.ip:
        ET.SubElement(element, "ip", address=vif.ip)
    if vif.backend != DOM0_BACKEND:
        ET.SubElement(element, "backenddomain", name=vif.backend)
    if vif.rate_kib is not None:
        ET.SubElement(ET.SubElement(element, "bandwidth"), "outbound", average=str(vif.rate_kib))
    return element


def _hostdev(pci: PciDeviceSpec) -> ET.Element:
    hostdev = ET.Element("hostdev", mode="subsystem", type="pci", managed="no")
    ET.SubElement(hostdev, "driver", name="xen")
    source = ET.SubElement(hostdev, "source", {"writeFiltering": "no"} if pci.permissive else {})
    bdf = pci.bdf
    ET.SubElement(
        source,
        "address",
        domain=f"0x{bdf.domain:04x}",
        bus=f"0x{bdf.bus:02x}",
        slot=f"0x{bdf.device:02x}",
        function=f"0x{bdf.function:x}",
    )
    return hostdev


def _text(element: ET.Element) -> str:
    ET.indent(element)
    return ET.tostring(element, encoding="unicode") + "\n"
