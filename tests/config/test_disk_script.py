"""A driver domain's own disk may name its hotplug script (`script`, xl's `script=`): the package's lean
`block` for dom0 (/usr/libexec/xenddd/block) is the case it exists for. Only xl can pass it."""

from __future__ import annotations

import pytest

from tests.config.parsing import parse, rejection
from xenddd.adapters.xl_config import disk_spec, xl_config
from xenddd.recovery.standby import standby_spec

DOMSTORE = """
[[driver_domain]]
name = "domstore"
kind = "block"
kernel = "/k"
{toolstack}
[[driver_domain.disk]]
path = "/dev/vdd"
vdev = "xvdb"
{script}
"""
LEAN = 'script = "/usr/libexec/xenddd/block"'


def test_an_xl_driver_domains_disk_names_its_script_in_the_xl_config_and_at_a_promotion() -> None:
    spec = parse(DOMSTORE.format(toolstack='toolstack = "xl"', script=LEAN)).driver_domain("domstore")
    assert spec.disks[0].script == "/usr/libexec/xenddd/block"
    spec_line = "format=raw,vdev=xvdb,access=rw,backendtype=phy,script=/usr/libexec/xenddd/block"
    spec_line += ",target=/dev/vdd"
    assert disk_spec(spec.disks[0], hvm=False) == spec_line
    assert f'    "{spec_line}",' in xl_config(spec).splitlines()


def test_without_a_script_the_toolstacks_own_runs() -> None:
    spec = parse(DOMSTORE.format(toolstack='toolstack = "xl"', script="")).driver_domain("domstore")
    assert spec.disks[0].script is None and "script=" not in disk_spec(spec.disks[0], hvm=False)


def test_a_standby_keeps_no_writable_disk_and_so_no_script_until_its_promotion() -> None:
    text = DOMSTORE.format(toolstack='toolstack = "xl"', script=LEAN)
    text += "[driver_domain.standby]\nenabled = true\n"
    assert standby_spec(parse(text).driver_domain("domstore")).disks == ()


@pytest.mark.parametrize(
    ("toolstack", "script", "expected"),
    [
        ("", LEAN, "libvirt's libxl driver cannot give a disk a hotplug script"),
        ('toolstack = "xl"', 'script = "block,x"', "its absolute path"),
        ('toolstack = "xl"', 'script = "../block"', "its absolute path"),
        ('toolstack = "xl"', "script = 1", "its absolute path"),
    ],
)
def test_a_script_libvirt_cannot_pass_or_xl_cannot_read_is_refused_in_one_line(
    toolstack: str, script: str, expected: str
) -> None:
    assert expected in rejection(DOMSTORE.format(toolstack=toolstack, script=script))
