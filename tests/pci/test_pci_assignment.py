"""Hiding PCI devices from dom0 and giving them back, on an emulated kernel's sysfs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.pci.fake_kernel import FakeKernel
from xenddd.adapters.pci_sysfs import PCIBACK
from xenddd.config.spec import PciDeviceSpec
from xenddd.errors import InputError, XendddError
from xenddd.model import Bdf
from xenddd.pci.assignment import PciAssigner
from xenddd.pci.names import PciNames

NIC = "0000:00:10.0"
DISK_CONTROLLER = "0000:00:1f.2"


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    kernel = FakeKernel(tmp_path / "sys")
    for driver in ("e1000", "ahci", PCIBACK):
        kernel.add_driver(driver)
    kernel.add_device(NIC, driver="e1000", iommu_group=5)
    kernel.add_device(DISK_CONTROLLER, driver="ahci", pci_class="0x010601", iommu_group=6)
    kernel.add_block_device("sda", DISK_CONTROLLER)
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "mounts").write_text("/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n")
    (proc / "net/route").write_text("Iface\tDestination\tGateway\n")
    return kernel


def assigner(kernel: FakeKernel, tmp_path: Path, **kwargs: object) -> PciAssigner:
    return PciAssigner(
        kernel.sysfs(),
        kernel.uevents,
        tmp_path / "state",
        proc_root=tmp_path / "proc",
        bind_timeout=2.0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_hiding_binds_to_pciback_and_records_the_original_driver(kernel: FakeKernel, tmp_path: Path) -> None:
    pci = assigner(kernel, tmp_path)
    assert pci.hide(Bdf.parse(NIC), name="domnet") is True
    assert kernel.driver_of(NIC) == PCIBACK
    assert kernel.override_of(NIC) == PCIBACK
    assert kernel.slot_writes == []  # driver_override needs no slot
    (row,) = pci.list(PciNames({0x8086: "Intel Corporation"}, {(0x8086, 0x100E): "82540EM Gigabit Ethernet"}))
    assert row["original_driver"] == "e1000" and row["for"] == "domnet"
    assert row["name"] == "Intel Corporation 82540EM Gigabit Ethernet"
    assert row["iommu_group"] == 5 and row["reset_methods"] == ["flr", "bus"]


def test_hiding_twice_changes_nothing(kernel: FakeKernel, tmp_path: Path) -> None:
    pci = assigner(kernel, tmp_path)
    pci.hide(Bdf.parse(NIC))
    assert pci.hide(Bdf.parse(NIC)) is False
    assert kernel.driver_of(NIC) == PCIBACK


def test_without_driver_override_a_slot_is_added_only_once(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.add_driver("igb")
    kernel.add_device("0000:00:11.0", driver="igb", driver_override=False)
    (kernel.root / "bus/pci/drivers/pciback/slots").write_text("0000:00:11.0\n")
    pci = assigner(kernel, tmp_path)
    pci.hide(Bdf.parse("00:11.0"))
    assert kernel.driver_of("0000:00:11.0") == PCIBACK
    assert kernel.slot_writes == []  # already in slots: new_slot is not idempotent, so never rewritten
    pci.give_back(Bdf.parse("00:11.0"), rebind=True)
    assert kernel.driver_of("0000:00:11.0") == "igb"
    assert kernel.slots() == []


def test_no_pciback_is_a_clear_error(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "sys")
    kernel.add_driver("e1000")
    kernel.add_device(NIC, driver="e1000")
    with pytest.raises(XendddError, match="modprobe xen-pciback"):
        assigner(kernel, tmp_path).hide(Bdf.parse(NIC))


def test_the_root_disk_controller_is_refused_and_untouched(kernel: FakeKernel, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="controller of /dev/sda1, mounted on /"):
        assigner(kernel, tmp_path).hide(Bdf.parse(DISK_CONTROLLER))
    assert kernel.driver_of(DISK_CONTROLLER) == "ahci"
    assert not (tmp_path / "state/pci").exists() or not list((tmp_path / "state/pci").iterdir())


def test_the_management_nic_and_boot_vga_are_refused(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.add_net_device("eth0", NIC)
    (tmp_path / "proc/net/route").write_text("Iface\tDestination\tGateway\neth0\t00000000\t0102A8C0\n")
    with pytest.raises(InputError, match="NIC of eth0"):
        assigner(kernel, tmp_path).hide(Bdf.parse(NIC))
    kernel.add_driver("bochs")
    kernel.add_device("0000:00:02.0", driver="bochs", pci_class="0x030000", boot_vga=True)
    with pytest.raises(InputError, match="boot VGA"):
        assigner(kernel, tmp_path).hide(Bdf.parse("00:02.0"))
    assigner(kernel, tmp_path).hide(Bdf.parse(NIC), force=True)
    assert kernel.driver_of(NIC) == PCIBACK


def test_a_device_sharing_an_iommu_group_with_a_dom0_device_is_refused(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    kernel.add_device("0000:00:1f.3", driver="ahci", iommu_group=6)
    with pytest.raises(InputError, match=r"shares IOMMU group 6 with 0000:00:1f\.2"):
        assigner(kernel, tmp_path).hide(Bdf.parse("00:1f.3"))


def test_a_bind_that_never_happens_is_rolled_back_completely(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.silent_bind.add(PCIBACK)
    with pytest.raises(XendddError, match="rolled back"):
        assigner(kernel, tmp_path).hide(Bdf.parse(NIC))
    assert kernel.driver_of(NIC) == "e1000"
    assert kernel.override_of(NIC) == "(null)"
    assert list((tmp_path / "state/pci").iterdir()) == []


def test_a_failing_bind_write_is_rolled_back_with_the_slot_removed(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    kernel.add_driver("igb")
    kernel.add_device("0000:00:11.0", driver="igb", driver_override=False)
    kernel.fail_writes["bind"] = 19  # ENODEV
    with pytest.raises(XendddError, match="ENODEV"):
        assigner(kernel, tmp_path).hide(Bdf.parse("00:11.0"))
    del kernel.fail_writes["bind"]
    assert kernel.slots() == []
    assert kernel.driver_of("0000:00:11.0") is None or kernel.driver_of("0000:00:11.0") == "igb"


def test_a_daemon_killed_between_unbind_and_bind_rolls_back_on_the_next_start(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    pci = assigner(kernel, tmp_path)
    # simulate the SIGKILL: the record was written and the device unbound, then nothing more
    from xenddd import state

    state.write_json(
        tmp_path / "state/pci" / f"{NIC}.json",
        {"bdf": NIC, "original_driver": "e1000", "step": "hiding", "override": True},
    )
    kernel.write(kernel.root / "devices/pci0000:00" / NIC / "driver_override", PCIBACK)
    kernel.write(kernel.root / "bus/pci/drivers/e1000/unbind", NIC)
    assert kernel.driver_of(NIC) is None
    assert pci.finish_interrupted() == [f"{NIC}: interrupted hide rolled back to e1000"]
    assert kernel.driver_of(NIC) == "e1000" and kernel.override_of(NIC) == "(null)"


def test_a_damaged_device_record_is_moved_aside_and_the_start_goes_on(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    pci = assigner(kernel, tmp_path)
    pci.hide(Bdf.parse(NIC))
    record = tmp_path / "state/pci" / f"{NIC}.json"
    record.write_bytes(b'{"original_driver": 7, "step": "hid')

    assert pci.finish_interrupted() == []
    assert pci.hide(Bdf.parse(NIC)) is False  # still hidden; a fresh record says it was already
    assert kernel.driver_of(NIC) == PCIBACK
    assert len(list(record.parent.glob(f"{NIC}.json.corrupt-*"))) == 1


def test_give_back_refuses_a_device_in_use_and_rebinds_the_original_driver(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    users = {NIC: ["domnet"]}
    pci = assigner(kernel, tmp_path, users_of=lambda bdf: users.get(str(bdf), []))
    pci.hide(Bdf.parse(NIC))
    with pytest.raises(InputError, match="assigned to running domain"):
        pci.give_back(Bdf.parse(NIC))
    users.clear()
    pci.give_back(Bdf.parse(NIC), rebind=True)
    assert kernel.driver_of(NIC) == "e1000"
    assert pci.list() == []


def test_give_back_without_rebind_leaves_the_device_unbound(kernel: FakeKernel, tmp_path: Path) -> None:
    pci = assigner(kernel, tmp_path)
    pci.hide(Bdf.parse(NIC))
    pci.give_back(Bdf.parse(NIC))
    assert kernel.driver_of(NIC) is None


def test_strict_reset_policy_refuses_a_device_without_reset(kernel: FakeKernel, tmp_path: Path) -> None:
    kernel.add_device("0000:00:12.0", driver="e1000", reset_method=None)
    bdf = Bdf.parse("00:12.0")
    with pytest.raises(InputError, match="no reset method"):
        assigner(kernel, tmp_path).hide(bdf, spec=PciDeviceSpec(bdf, reset="strict"))
    assert kernel.driver_of("0000:00:12.0") == "e1000"
    assigner(kernel, tmp_path).hide(bdf, spec=PciDeviceSpec(bdf, reset="relaxed"))
    assert kernel.driver_of("0000:00:12.0") == PCIBACK


def test_no_iommu_refuses_a_driver_domain_with_pci_devices(kernel: FakeKernel, tmp_path: Path) -> None:
    from xenddd.config.spec import DriverDomainSpec
    from xenddd.model import DriverDomainKind

    bdf = Bdf.parse(NIC)
    spec = DriverDomainSpec(
        "domnet", frozenset({DriverDomainKind.NETWORK}), kernel=Path("/k"), pci=(PciDeviceSpec(bdf),)
    )
    with pytest.raises(XendddError, match="no IOMMU passthrough"):
        assigner(kernel, tmp_path).prepare_domain(spec, lambda: False)
    assert kernel.driver_of(NIC) == "e1000"
    assigner(kernel, tmp_path).prepare_domain(spec, lambda: True)
    assert kernel.driver_of(NIC) == PCIBACK


@given(st.text(max_size=40))
def test_hostile_bdf_strings_never_reach_sysfs(text: str) -> None:
    try:
        bdf = Bdf.parse(text)
    except InputError:
        return
    assert "/" not in str(bdf) and ".." not in str(bdf)


def test_pci_ids_names_are_parsed() -> None:
    names = PciNames.parse(
        "# c\n8086  Intel Corporation\n\t100e  82540EM Gigabit Ethernet Controller\n"
        "\t\t1af4 1100  QEMU\nC 00  Unclassified\n"
    )
    assert names.describe(0x8086, 0x100E) == "Intel Corporation 82540EM Gigabit Ethernet Controller"
    assert names.describe(0x1234, 0x1111) == "vendor 1234 device 1111"
