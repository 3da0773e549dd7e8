"""Domain and device XML against golden files (regenerate with XENDDD_REGOLD=1 after a deliberate change)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.adapters.golden import golden_text
from xenddd.adapters.domain_xml import driver_domain_xml, frontend_disk_xml
from xenddd.config.spec import DiskSpec, DriverDomainSpec, PciDeviceSpec, VifSpec
from xenddd.model import Bdf, DriverDomainKind, VbdParams

NET = frozenset({DriverDomainKind.NETWORK})

CASES = {
    "pv_filtering_dd_chained_behind_domnet": driver_domain_xml(
        DriverDomainSpec(
            "domfw",
            NET,
            kernel=Path("/var/lib/xenddd/dd-vmlinuz"),
            disks=(DiskSpec(Path("/dev/vg/domfw-data"), vdev="xvdb", backend="domstore"),),
            vifs=(
                VifSpec("00:16:3e:12:34:56", backend="domnet", bridge="br0", ip="10.0.0.2", rate_kib=1221),
                VifSpec("00:16:3e:12:34:57", script="vif-route"),
            ),
        )
    ),
    "pv_network_dd_with_pci": driver_domain_xml(
        DriverDomainSpec(
            "domnet",
            NET,
            kernel=Path("/var/lib/xenddd/dd-vmlinuz"),
            initrd=Path("/var/lib/xenddd/dd-initrd"),
            cmdline="console=hvc0",
            memory_mib=256,
            vcpus=1,
            pci=(
                PciDeviceSpec(Bdf.parse("00:10.0"), permissive=True),
                PciDeviceSpec(Bdf.parse("0000:03:00.1")),
            ),
        )
    ),
    "pv_network_dd_with_relaxed_pci": driver_domain_xml(
        DriverDomainSpec(
            "domnet",
            NET,
            kernel=Path("/var/lib/xenddd/dd-vmlinuz"),
            memory_mib=256,
            pci=(
                PciDeviceSpec(Bdf.parse("00:10.0"), reset="relaxed"),
                PciDeviceSpec(Bdf.parse("0000:03:00.1")),
            ),
        )
    ),
    "hvm_block_dd_preserve_on_crash": driver_domain_xml(
        DriverDomainSpec(
            "domstore",
            frozenset({DriverDomainKind.BLOCK}),
            virt="hvm",
            memory_mib=512,
            vcpus=2,
            disks=(
                DiskSpec(Path("/var/lib/xenddd/domstore.img")),
                DiskSpec(Path("/dev/vg/data"), vdev="xvdb"),
            ),
            on_crash="preserve",
        )
    ),
    "vbd_file_readonly": frontend_disk_xml(
        VbdParams(vdev="xvdb", target="/srv/images/data.img", mode="r", format="raw"), "domstore"
    ),
    "vbd_block_device": frontend_disk_xml(VbdParams(vdev="xvda", target="/dev/vg/web"), "domstore"),
    "vbd_phy_outside_dev": frontend_disk_xml(
        VbdParams(vdev="xvdc", target="/srv/lun0.raw", backend_type="phy", script="/etc/xen/scripts/block"),
        "domstore",
    ),
    "vbd_qdisk_qcow2_cdrom": frontend_disk_xml(
        VbdParams(
            vdev="hdc",
            target="/srv/iso/inst.qcow2",
            mode="r",
            device_type="cdrom",
            format="qcow2",
            backend_type="qdisk",
        ),
        "domstore",
    ),
    "vbd_tap_vhd": frontend_disk_xml(
        VbdParams(vdev="xvdd", target="/srv/old.vhd", format="vhd", backend_type="tap"), "domstore"
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_xml_matches_its_golden_file(name: str) -> None:
    assert CASES[name] == golden_text(f"{name}.xml", CASES[name])
    ET.fromstring(CASES[name])  # well-formed


def test_pci_devices_are_unmanaged_and_permissive_maps_to_write_filtering() -> None:
    root = ET.fromstring(CASES["pv_network_dd_with_pci"])
    hostdevs = root.findall("./devices/hostdev")
    assert [h.get("managed") for h in hostdevs] == ["no", "no"]
    assert hostdevs[0].find("source").get("writeFiltering") == "no"  # type: ignore[union-attr]
    assert hostdevs[1].find("source").get("writeFiltering") is None  # type: ignore[union-attr]
    assert root.findtext("on_crash") == "destroy"


def test_relaxed_pci_devices_are_left_to_libxl_in_a_passthrough_enabled_domain() -> None:
    root = ET.fromstring(CASES["pv_network_dd_with_relaxed_pci"])
    addresses = [h.find("source/address").get("bus") for h in root.findall("./devices/hostdev")]  # type: ignore[union-attr]
    assert addresses == ["0x03"]  # only the strict device is libvirt's (which resets it, or refuses)
    assert root.find("./features/xen/passthrough").get("state") == "on"  # type: ignore[union-attr]
    assert ET.fromstring(CASES["pv_network_dd_with_pci"]).find("./features") is None


def test_a_phy_disk_stays_phy_whatever_its_target_looks_like() -> None:
    disk = ET.fromstring(CASES["vbd_phy_outside_dev"])
    assert (disk.get("type"), disk.find("driver").get("name")) == ("block", "phy")  # type: ignore[union-attr]


def test_names_cannot_inject_xml() -> None:
    xml = frontend_disk_xml(VbdParams(vdev="xvda", target="/dev/x'/><evil/>"), "dd'/><evil/>")
    assert ET.fromstring(xml).find("evil") is None
