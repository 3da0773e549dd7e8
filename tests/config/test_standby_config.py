"""`[driver_domain.standby]`: what a standby beside the active instance would share, or what only xl can
do to it, is refused in one line when the config is read, not found at the first crash."""

from __future__ import annotations

import pytest

from tests.config.parsing import domnet, parse, rejection
from xenddd.recovery.standby import standby_spec

DOMNET = domnet("[driver_domain.standby]\nenabled = true\n")


def test_a_standby_of_an_xl_driver_domain_is_accepted_and_named_after_it() -> None:
    spec = parse(DOMNET.format(extra='toolstack = "xl"')).driver_domain("domnet")
    assert spec.standby.enabled and spec.toolstack == "xl" and spec.standby_name == "domnet-standby"


def test_without_a_standby_table_there_is_none_and_libvirt_owns_the_domain() -> None:
    spec = parse('[[driver_domain]]\nname = "domnet"\nkind = "network"\nkernel = "/k"\n').driver_domain(
        "domnet"
    )
    assert not spec.standby.enabled and spec.toolstack == "libvirt"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", "driver_domain[0].standby: a standby is promoted by renaming it while it runs, which libvirt"),
        ('toolstack = "xl"\ntype = "hvm"\n[[driver_domain.disk]]\npath = "/d"\nreadonly = true', "must be"),
        ('toolstack = "xl"\n[[driver_domain.vif]]\nbridge = "br0"', "vif: a standby would put a second vif"),
        ('toolstack = "xl"\n[[driver_domain.disk]]\npath = "/dev/vg/dd"\nvdev = "hdb"', "hdb: a disk moved"),
        ('toolstack = "libxl"', "toolstack"),
    ],
)
def test_what_a_standby_cannot_be_is_refused_in_one_line(extra: str, expected: str) -> None:
    assert expected in rejection(DOMNET.format(extra=extra))


def test_a_standby_may_have_read_only_disks() -> None:
    text = DOMNET.format(
        extra='toolstack = "xl"\n[[driver_domain.disk]]\npath = "/dev/vg/root"\nreadonly = true'
    )
    assert parse(text).driver_domain("domnet").disks[0].readonly


def test_a_standby_takes_writable_disks_over_at_a_promotion_and_boots_without_them() -> None:
    text = DOMNET.format(extra='toolstack = "xl"\n[[driver_domain.disk]]\npath = "/dev/vdd"\nvdev = "xvdb"')
    spec = parse(text).driver_domain("domnet")
    assert not spec.disks[0].readonly
    assert standby_spec(spec).disks == ()


def test_a_standby_of_a_domain_whose_root_is_a_writable_disk_is_refused() -> None:
    disk = '[[driver_domain.disk]]\npath = "/dev/vg/dd"'
    text = DOMNET.format(extra=f'toolstack = "xl"\ncmdline = "console=hvc0 root=/dev/xvda1 ro"\n{disk}')
    assert "driver_domain[0].disk: a standby boots without xvda (writable disks move to it" in rejection(text)


def test_a_standby_whose_name_another_driver_domain_has_is_refused() -> None:
    text = DOMNET.format(extra='toolstack = "xl"') + (
        '[[driver_domain]]\nname = "domnet-standby"\nkind = "block"\nkernel = "/k"\n'
    )
    assert "driver_domain[0].standby: 'domnet-standby' names another driver domain" in rejection(text)
