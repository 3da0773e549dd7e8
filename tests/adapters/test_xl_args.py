"""What `xl network-attach` / `block-attach` are given: every parameter libxl recorded, in xl's syntax
(tools/xl/xl_parse.c parse_nic_config, tools/libs/util/libxlu_vif.c, xl-disk-configuration); and a
detach of a device xl no longer has is done, not an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenddd.adapters.xl import Xl, block_attach_spec, network_attach_args, xl_rate
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, VbdParams, VifParams

MAC = "00:16:3e:00:00:02"


def test_a_bare_vif_keeps_its_devid_mac_and_backend() -> None:
    assert network_attach_args(3, VifParams(mac=MAC), "domnet") == [
        "devid=3",
        f"mac={MAC}",
        "backend=domnet",
    ]


def test_every_recorded_vif_parameter_is_given_back() -> None:
    params = VifParams(
        mac=MAC,
        bridge="br-dmz",
        script="/etc/xen/scripts/vif-route",
        type="vif",
        ip="10.0.0.2 fd00::2",
        rate="12500,50000",
        mtu=9000,
        vifname="web-eth0",
        model="e1000",
    )
    assert network_attach_args(0, params, "domnet") == [
        "devid=0",
        f"mac={MAC}",
        "backend=domnet",
        "bridge=br-dmz",
        "script=/etc/xen/scripts/vif-route",
        "ip=10.0.0.2 fd00::2",
        "mtu=9000",
        "vifname=web-eth0",
        "model=e1000",
        "rate=250000B/s@50000us",
    ]


@pytest.mark.parametrize(
    ("recorded", "given"),
    [
        ("12500,50000", "250000B/s@50000us"),  # xl's `250KB/s`
        ("100000,50000", "2000000B/s@50000us"),  # check-xl-vif-parse: 2000000B/s@50ms
        ("3,7", "428572B/s@7us"),  # not a whole number of bytes per second: the ceiling rounds back
        ("20000,20000", "1000000B/s@20000us"),  # docs: "1MB/s@20ms" is 20,000 bytes every 20,000 us
    ],
)
def test_a_recorded_rate_is_given_in_a_form_xl_turns_back_into_the_same_rate(
    recorded: str, given: str
) -> None:
    assert xl_rate(recorded) == given
    per_second, usecs = int(given.split("B")[0]), int(given.split("@")[1][:-2])
    assert f"{per_second * usecs // 1_000_000},{usecs}" == recorded  # xlu_vif_parse_rate's arithmetic


def test_a_rate_xl_cannot_express_exactly_is_refused_not_changed() -> None:
    with pytest.raises(XendddError, match="exactly"):
        xl_rate("5000000000,1000000")  # 5 GB/s: above the 32-bit bytes/s xl accepts without a unit


def test_a_phy_disk_keeps_its_script_and_backend_type_with_the_target_last() -> None:
    params = VbdParams(
        vdev="xvdb",
        target="iqn.2024-01.com.example:lun0,portal=10.0.0.9",
        backend_type="phy",
        script="block-iscsi",
    )
    assert block_attach_spec(params, "domstore") == (
        "vdev=xvdb,access=rw,backend=domstore,backendtype=phy,script=block-iscsi,devtype=disk,"
        "target=iqn.2024-01.com.example:lun0,portal=10.0.0.9"
    )


def test_a_read_only_qdisk_cdrom_keeps_its_format() -> None:
    params = VbdParams(
        vdev="hdc", target="/srv/i.qcow2", mode="r", device_type="cdrom", format="qcow2", backend_type="qdisk"
    )
    assert block_attach_spec(params, "domstore") == (
        "vdev=hdc,access=ro,backend=domstore,format=qcow2,backendtype=qdisk,devtype=cdrom,target=/srv/i.qcow2"
    )


@pytest.mark.parametrize("message", ["Unknown device 1.", "Error: Device 1 not found.", "no such device"])
def test_detaching_a_device_xl_no_longer_has_is_done_not_an_error(tmp_path: Path, message: str) -> None:
    """On real Xen, `xl devd` removed a device whose hotplug script it killed, frontend and all; the
    recovery's detach before the next attach met "Unknown device 1." and retried it forever."""
    fake = tmp_path / "xl"
    fake.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    fake.chmod(0o755)
    Xl(str(fake)).detach("many0", DeviceKind.VIF, 1)


def test_a_detach_that_fails_otherwise_is_an_error(tmp_path: Path) -> None:
    fake = tmp_path / "xl"
    fake.write_text("#!/bin/sh\necho 'libxl: error: unable to remove device' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(XendddError, match="unable to remove device"):
        Xl(str(fake)).detach("many0", DeviceKind.VIF, 1)
