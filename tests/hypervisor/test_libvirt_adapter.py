"""The libvirt adapter on libvirt's own in-process test driver: define, start, destroy, events, reconnect."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import libvirt
import pytest

from xenddd.adapters.hypervisor import LibvirtHypervisor, parse_guest_devices, translate_lifecycle
from xenddd.adapters.hypervisor_api import DomainState, LifecycleEvent, LifecycleKind
from xenddd.config import DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, DriverDomainKind, VifParams

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


def next_kind(received: queue.Queue[LifecycleEvent | str], name: str, timeout: float = 10.0) -> LifecycleKind:
    deadline = time.monotonic() + timeout
    while True:
        item = received.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, LifecycleEvent) and item.name == name:
            return item.kind


def test_define_start_and_destroy_a_driver_domain(hypervisor: LibvirtHypervisor) -> None:
    received = events_of(hypervisor)
    hypervisor.define(SPEC)
    assert next_kind(received, "domnet") is LifecycleKind.DEFINED
    info = hypervisor.start("domnet")
    assert info.state is DomainState.RUNNING and info.domid is not None and info.memory_kib == 128 * 1024
    assert next_kind(received, "domnet") is LifecycleKind.STARTED
    hypervisor.destroy("domnet")
    assert next_kind(received, "domnet") is LifecycleKind.DESTROYED
    hypervisor.destroy("domnet")  # not running: not an error
    assert hypervisor.domain("domnet").state is DomainState.SHUTOFF  # type: ignore[union-attr]
    assert hypervisor.domain("absent") is None


def test_a_crash_is_reported_as_crashed(hypervisor: LibvirtHypervisor) -> None:
    received = events_of(hypervisor)
    hypervisor.define(SPEC)
    hypervisor.start("domnet")
    assert next_kind(received, "domnet") in (LifecycleKind.DEFINED, LifecycleKind.STARTED)
    dom = hypervisor.connection().lookupByName("domnet")
    dom.coreDump("/dev/null", libvirt.VIR_DUMP_CRASH)
    kinds = [next_kind(received, "domnet") for _ in range(1)]
    while kinds[-1] is not LifecycleKind.CRASHED:
        kinds.append(next_kind(received, "domnet"))
    assert kinds[-1] is LifecycleKind.CRASHED


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
    xml = (Path(__file__).with_name("golden") / "vif_with_backenddomain.xml").read_text()
    (device,) = parse_guest_devices(f"<domain><devices>{xml}</devices></domain>")
    assert device.kind is DeviceKind.VIF and device.backend_name == "domnet"
    assert device.params == VifParams(mac="00:16:3e:00:00:02", bridge="br0")


def test_defining_again_updates_the_existing_definition(hypervisor: LibvirtHypervisor) -> None:
    from dataclasses import replace

    hypervisor.define(SPEC)
    uuid = hypervisor.domain("domnet").uuid  # type: ignore[union-attr]
    hypervisor.define(replace(SPEC, memory_mib=192))
    assert hypervisor.domain("domnet").uuid == uuid  # type: ignore[union-attr]
    xml = hypervisor.connection().lookupByName("domnet").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "196608" in xml  # 192 MiB in KiB
