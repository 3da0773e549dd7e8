"""`[driver_domain.saved_instance]`: what a restore of the same saved memory, many times over, would
contradict, or what cannot be saved, is refused in one line when the config is read."""

from __future__ import annotations

import pytest

from tests.config.parsing import domnet, parse, rejection
from xenddd.recovery.standby import standby_spec

DOMNET = domnet("[driver_domain.saved_instance]\nenabled = true\n")


def test_a_saved_instance_is_off_unless_enabled_and_either_toolstack_may_have_one() -> None:
    plain = parse('[[driver_domain]]\nname = "domnet"\nkind = "network"\nkernel = "/k"\n')
    assert not plain.driver_domain("domnet").saved_instance.enabled
    for toolstack in ("libvirt", "xl"):
        spec = parse(DOMNET.format(extra=f'toolstack = "{toolstack}"')).driver_domain("domnet")
        assert spec.saved_instance.enabled


def test_a_standby_beside_it_is_booted_not_restored() -> None:
    spec = parse(
        DOMNET.format(extra='toolstack = "xl"\n[driver_domain.standby]\nenabled = true')
    ).driver_domain("domnet")
    assert spec.standby.enabled and not standby_spec(spec).saved_instance.enabled


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('type = "hvm"\n[[driver_domain.disk]]\npath = "/d"\nreadonly = true', 'must be type = "pv"'),
        ('[[driver_domain.pci]]\nbdf = "0000:03:00.0"', "Xen cannot save a domain with PCI devices"),
        ('[[driver_domain.disk]]\npath = "/dev/vdb"\nvdev = "xvda"', "disk: xvda is writable"),
        ('[driver_domain.readiness]\ncondition = "running"', 'condition = "xenstore-key"'),
        ('toolstack = "xl"\nreconnect = "in-place"', "a restored instance has a new one: choose one"),
    ],
)
def test_what_a_saved_instance_cannot_be_is_refused_in_one_line(extra: str, expected: str) -> None:
    message = rejection(DOMNET.format(extra=extra))
    assert expected in message and "\n" not in message


def test_a_read_only_disk_may_be_restored_with_it() -> None:
    spec = parse(
        DOMNET.format(extra='[[driver_domain.disk]]\npath = "/dev/vdb"\nreadonly = true')
    ).driver_domain("domnet")
    assert spec.disks[0].readonly and spec.saved_instance.enabled
