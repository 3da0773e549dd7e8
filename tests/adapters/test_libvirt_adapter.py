"""The libvirt adapter on libvirt's own in-process test driver: define, start, destroy, events, reconnect."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt
import pytest

from xenddd.adapters.hypervisor import LibvirtHypervisor, parse_guest_devices, translate_lifecycle
from xenddd.adapters.hypervisor_api import DomainState, LifecycleEvent, LifecycleKind
from xenddd.adapters.libxl_devices import LibxlDevices
from xenddd.adapters.xl import Xl
from xenddd.config.spec import DriverDomainSpec, PciDeviceSpec
from xenddd.errors import XendddError
from xenddd.model import Bdf, DeviceKind, DriverDomainKind, VbdParams, VifParams

SPEC = DriverDomainSpec(
    "domnet", frozenset({DriverDomainKind.NETWORK}), kernel=Path("/boot/vmlinuz"), memory_mib=128
)


@pytest.fixture
def hypervisor() -> LibvirtHypervisor:
    adapter = LibvirtHypervisor("test:///default")
    yield adapter  # type: ignore[misc]
    adapter.close()


def events_of(adapter: LibvirtHypervisor) -> queue.Queue[LifecycleEvent | str]:
    received: queue.Queue[LifecycleEvent | str] = queue.Queue()
    adapter.watch_lifecycle(received.put, lambda: received.put("reconnected"))
    return received


def wait_for(
    received: queue.Queue[LifecycleEvent | str], name: str, kind: LifecycleKind, timeout: float = 10.0
) -> None:
    """Skip other events: test:///default is shared by the whole process, so an earlier test's `domnet`
    can still deliver its last event to this test's callback."""
    deadline = time.monotonic() + timeout
    while True:
        item = received.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, LifecycleEvent) and item.name == name and item.kind is kind:
            return


def test_define_start_and_destroy_a_driver_domain(hypervisor: LibvirtHypervisor) -> None:
    received = events_of(hypervisor)
    hypervisor.define(SPEC)
    wait_for(received, "domnet", LifecycleKind.DEFINED)
    info = hypervisor.start("domnet")
    assert info.state is DomainState.RUNNING and info.domid is not None and info.memory_kib == 128 * 1024
    wait_for(received, "domnet", LifecycleKind.STARTED)
    hypervisor.destroy("domnet")
    wait_for(received, "domnet", LifecycleKind.DESTROYED)
    hypervisor.destroy("domnet")  # not running: not an error
    assert hypervisor.domain("domnet").state is DomainState.SHUTOFF  # type: ignore[union-attr]
    assert hypervisor.domain("absent") is None


def test_a_destroy_by_domid_leaves_another_instance_of_the_name_alone(hypervisor: LibvirtHypervisor) -> None:
    hypervisor.define(SPEC)
    info = hypervisor.start("domnet")
    assert info.domid is not None
    hypervisor.destroy("domnet", info.domid + 1000)  # a dead instance's remains, gone already
    assert hypervisor.domain("domnet").state is DomainState.RUNNING  # type: ignore[union-attr]
    hypervisor.destroy("domnet", info.domid)
    assert hypervisor.domain("domnet").state is DomainState.SHUTOFF  # type: ignore[union-attr]


def test_a_crash_is_reported_as_crashed(hypervisor: LibvirtHypervisor) -> None:
    received = events_of(hypervisor)
    hypervisor.define(SPEC)
    hypervisor.start("domnet")
    wait_for(received, "domnet", LifecycleKind.STARTED)
    dom = hypervisor.connection().lookupByName("domnet")
    dom.coreDump("/dev/null", libvirt.VIR_DUMP_CRASH)
    wait_for(received, "domnet", LifecycleKind.CRASHED)


def test_a_closed_connection_is_reopened_and_reported(hypervisor: LibvirtHypervisor) -> None:
    received = events_of(hypervisor)
    hypervisor.connection().close()
    assert hypervisor.domains()  # reconnects under the caller
    assert received.get(timeout=10) == "reconnected"


def test_errors_are_one_operator_line(hypervisor: LibvirtHypervisor) -> None:
    with pytest.raises(XendddError, match=r"^nothere: not defined in libvirt$"):
        hypervisor.start("nothere")
    bad = LibvirtHypervisor.__new__(LibvirtHypervisor)
    with pytest.raises(XendddError, match="cannot connect to libvirt at test:///nonexistent"):
        LibvirtHypervisor.__init__(bad, "test:///nonexistent")


def test_lifecycle_translation_tells_crash_from_destroy_and_shutdown() -> None:
    stopped = libvirt.VIR_DOMAIN_EVENT_STOPPED
    assert translate_lifecycle(stopped, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED) is LifecycleKind.CRASHED
    assert translate_lifecycle(stopped, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED) is LifecycleKind.DESTROYED
    assert translate_lifecycle(stopped, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN) is LifecycleKind.SHUTDOWN


def test_guest_devices_are_read_from_live_xml_with_their_backend_domain() -> None:
    xml = """<interface type='bridge'><mac address='00:16:3E:00:00:02'/><source bridge='br0'/>
      <script path='vif-route'/><ip address='10.0.0.2'/><ip address='fd00::2'/><target dev='web-eth0'/>
      <model type='netfront'/><backenddomain name='domnet'/></interface>"""
    (device,) = parse_guest_devices(f"<domain><devices>{xml}</devices></domain>")
    assert device.kind is DeviceKind.VIF and device.backend_name == "domnet"
    assert device.params == VifParams(
        mac="00:16:3e:00:00:02",
        bridge="br0",
        script="vif-route",
        ip="10.0.0.2 fd00::2",
        vifname="web-eth0",
        model="netfront",
    )


def test_defining_again_updates_the_existing_definition(hypervisor: LibvirtHypervisor) -> None:
    from dataclasses import replace

    hypervisor.define(SPEC)
    uuid = hypervisor.domain("domnet").uuid  # type: ignore[union-attr]
    hypervisor.define(replace(SPEC, memory_mib=192))
    assert hypervisor.domain("domnet").uuid == uuid  # type: ignore[union-attr]
    xml = hypervisor.connection().lookupByName("domnet").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "196608" in xml  # 192 MiB in KiB


RELAXED = replace(SPEC, pci=(PciDeviceSpec(Bdf.parse("0000:00:10.0"), reset="relaxed", permissive=True),))


def recording_xl(tmp_path: Path, body: str) -> tuple[Xl, Path]:
    """An `xl` that appends its arguments to the returned file, then runs the shell `body`: libvirt's test
    driver has no libxl underneath."""
    calls = tmp_path / "xl-calls"
    script = tmp_path / "xl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{body}\n')
    script.chmod(0o755)
    return Xl(str(script)), calls


@contextmanager
def defined_with_fake_xl(tmp_path: Path, exit_code: int) -> Iterator[tuple[LibvirtHypervisor, Path]]:
    """domnet with a relaxed PCI device, defined with an `xl` that exits with `exit_code`."""
    xl, calls = recording_xl(tmp_path, f'echo "libxl: error: simulated" >&2; exit {exit_code}')
    adapter = LibvirtHypervisor("test:///default", xl=xl)
    adapter.destroy("domnet")  # test:///default is one state per process, shared with the other tests
    try:
        adapter.define(RELAXED)
        yield adapter, calls
    finally:
        adapter.destroy("domnet")
        adapter.close()


def test_relaxed_pci_devices_are_passed_through_by_libxl_after_the_start(tmp_path: Path) -> None:
    with defined_with_fake_xl(tmp_path, 0) as (adapter, calls):
        assert adapter.start("domnet").state is DomainState.RUNNING
        assert calls.read_text().splitlines() == ["pci-attach domnet 0000:00:10.0,permissive=1"]
        adapter.start("domnet")  # already running: nothing is passed through twice
        assert len(calls.read_text().splitlines()) == 1


def test_a_failed_libxl_passthrough_destroys_the_domain_again(tmp_path: Path) -> None:
    with defined_with_fake_xl(tmp_path, 1) as (adapter, calls):
        with pytest.raises(
            XendddError, match=r"domnet: destroyed again, passing 0000:00:10.0 through failed"
        ):
            adapter.start("domnet")
        assert adapter.domain("domnet").state is DomainState.SHUTOFF  # type: ignore[union-attr]
        assert calls.read_text().splitlines() == ["pci-attach domnet 0000:00:10.0,permissive=1"]


@pytest.mark.parametrize(
    ("virt_caps", "available"),
    [
        ("pv pv_directio shadow iommu_hap_pt_share gnttab-v1 gnttab-v2", True),  # Xen under QEMU TCG + VT-d
        ("pv hvm hvm_directio pv_directio hap shadow", True),
        ("pv hvm hap shadow gnttab-v1", False),
        ("pv nodirectio_at_all", False),
    ],
)
def test_iommu_passthrough_is_read_from_xl_info_virt_caps(
    tmp_path: Path, virt_caps: str, available: bool
) -> None:
    xl, _ = recording_xl(
        tmp_path, f"echo 'nr_cpus                : 2'; echo 'virt_caps              : {virt_caps}'"
    )
    assert xl.iommu_available() is available


@pytest.mark.parametrize(("listed", "attached"), [("", True), ("00.0 0000:00:10.0", False)])
def test_an_adopted_driver_domain_gets_the_passthrough_it_is_missing(
    tmp_path: Path, listed: str, attached: bool
) -> None:
    """A daemon killed between the start and the passthrough: the next one passes through what is missing."""
    xl, calls = recording_xl(tmp_path, f'[ "$1" = pci-list ] && printf "Vdev Device\\n{listed}\\n"; exit 0')
    adapter = LibvirtHypervisor("test:///default", xl=xl)
    try:
        adapter.ensure_passthrough(RELAXED)
        adapter.ensure_passthrough(SPEC)  # no relaxed devices: xl is not even asked
    finally:
        adapter.close()
    expected = ["pci-list domnet"] + (["pci-attach domnet 0000:00:10.0,permissive=1"] if attached else [])
    assert calls.read_text().splitlines() == expected


class DyingDomain:
    """What libvirt's libxl driver hands back from a crash until its cleanup is done (libxl's destroy,
    seconds): still active with its old domid, listed as shut off with reason crashed."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.domid = 7

    def isActive(self) -> bool:
        return self.domid == 7 and "destroy" not in self.calls

    def info(self) -> list[int]:
        return [self.state()[0], 131072, 131072, 1, 0]

    def state(self) -> list[int]:
        if self.isActive():
            return [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED]
        return [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED]

    def ID(self) -> int:
        return self.domid

    def name(self) -> str:
        return "domnet"

    def UUIDString(self) -> str:
        return "00000000-0000-0000-0000-000000000001"

    def destroy(self) -> None:
        self.calls.append("destroy")

    def create(self) -> None:
        self.calls.append("create")
        self.domid = 8


def test_starting_a_domain_libvirt_has_not_cleaned_up_after_its_crash_starts_a_new_instance(
    hypervisor: LibvirtHypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    dying = DyingDomain()
    monkeypatch.setattr(hypervisor, "_lookup", lambda name: dying)
    info = hypervisor.start("domnet")
    assert dying.calls == ["destroy", "create"] and info.domid == 8 and info.state is DomainState.RUNNING


@pytest.mark.parametrize(
    ("reason", "stopped"),
    [
        (libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, LifecycleKind.CRASHED),
        (libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, LifecycleKind.DESTROYED),
        (libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, LifecycleKind.SHUTDOWN),
        (libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN, None),
    ],
)
def test_a_shut_off_domain_says_how_it_stopped(reason: int, stopped: LifecycleKind | None) -> None:
    from xenddd.adapters.hypervisor import _info

    class ShutOff(DyingDomain):
        def info(self) -> list[int]:
            return [libvirt.VIR_DOMAIN_SHUTOFF, 131072, 0, 1, 0]

        def ID(self) -> int:
            return -1

        def state(self) -> list[int]:
            return [libvirt.VIR_DOMAIN_SHUTOFF, reason]

    assert _info(ShutOff()).stopped is stopped


class RecordingDevices(LibxlDevices):
    """What the adapter hands to libxl, recorded instead: libvirt's test driver has no libxl underneath."""

    def __init__(self) -> None:
        super().__init__()
        self.attached: list[tuple[str, int, VifParams | VbdParams, str]] = []
        self.detached: list[tuple[str, DeviceKind, int]] = []

    def detach(self, guest: str, kind: DeviceKind, devid: int) -> None:
        self.detached.append((guest, kind, devid))

    def attach(
        self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams, backend: str
    ) -> None:
        self.attached.append((guest, devid, params, backend))


def test_a_libvirt_guests_vif_is_reattached_with_the_model_only_libvirt_knows() -> None:
    devices = RecordingDevices()
    adapter = LibvirtHypervisor("test:///default", devices=devices)
    guest = adapter.connection().defineXML(
        """<domain type='test'><name>web</name><memory>65536</memory><os><type>hvm</type></os><devices>
        <interface type='bridge'><mac address='00:16:3e:00:00:09'/><source bridge='br0'/>
        <model type='e1000'/></interface></devices></domain>"""
    )
    try:
        adapter.attach("web", DeviceKind.VIF, 0, VifParams(mac="00:16:3E:00:00:09", bridge="br0"), "domnet")
        adapter.attach("web", DeviceKind.VIF, 1, VifParams(mac="00:16:3e:00:00:0a"), "domnet")
    finally:
        guest.undefine()
        adapter.close()
    (_, first_devid, first, _), (_, _, second, _) = devices.attached
    assert first_devid == 0 and isinstance(first, VifParams) and first.model == "e1000"
    # no model in libvirt's definition: libxl's default
    assert isinstance(second, VifParams) and second.model is None


def test_a_vif_is_detached_by_libxl_without_asking_libvirt_about_its_guest() -> None:
    """libvirt has nothing to say about a vif's detach (libxl makes it, whoever owns the guest): no
    lookup, a libvirtd round trip on a promotion's path, is made for it."""
    devices = RecordingDevices()
    adapter = LibvirtHypervisor("test:///default", devices=devices)
    lookups: list[str] = []
    lookup = adapter._lookup

    def counted(name: str) -> Any:
        lookups.append(name)
        return lookup(name)

    adapter._lookup = counted  # type: ignore[method-assign]
    try:
        adapter.detach("web", DeviceKind.VIF, 0, VifParams(mac="00:16:3e:00:00:09"))
        adapter.detach("absent", DeviceKind.VBD, 51712, VbdParams(vdev="xvda", target="/dev/vg/web"))
    finally:
        adapter.close()
    assert devices.detached == [("web", DeviceKind.VIF, 0), ("absent", DeviceKind.VBD, 51712)]
    assert lookups == ["absent"]  # a disk libvirt can express: its guest is looked up


def test_a_saved_domain_is_gone_and_restored_under_its_name_with_a_new_domid(
    hypervisor: LibvirtHypervisor, tmp_path: Path
) -> None:
    hypervisor.define(SPEC)
    before = hypervisor.start("domnet")
    hypervisor.save("domnet", tmp_path / "domnet.save")
    assert hypervisor.domain("domnet").state is DomainState.SHUTOFF  # type: ignore[union-attr]
    restored = hypervisor.restore("domnet", tmp_path / "domnet.save")
    assert restored.state is DomainState.RUNNING and restored.name == "domnet"
    assert restored.domid is not None and restored.domid != before.domid
    assert restored.uuid == before.uuid
    assert hypervisor.restore("domnet", tmp_path / "domnet.save").domid == restored.domid  # runs already
    hypervisor.destroy("domnet")  # test:///default is one host for every test of the process


def test_a_save_or_restore_that_libvirt_refuses_says_why(
    hypervisor: LibvirtHypervisor, tmp_path: Path
) -> None:
    hypervisor.define(SPEC)
    hypervisor.destroy("domnet")
    with pytest.raises(XendddError, match="domnet: saving it failed"):
        hypervisor.save("domnet", tmp_path / "domnet.save")  # not running
    (tmp_path / "junk.save").write_text("not a saved domain\n")
    with pytest.raises(XendddError, match=r"domnet: restoring .*junk\.save failed"):
        hypervisor.restore("domnet", tmp_path / "junk.save")
