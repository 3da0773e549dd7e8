"""The client of libxl's device helpers: what a vif and a disk are given as (every parameter libxl recorded),
and how the helper processes are kept, replaced and given up on — against a helper program that answers as
the real one does (libxl itself needs Xen)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from xenddd.adapters.libxl_devices import LibxlDevices, block_attach_spec, nic_fields
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, VbdParams, VifParams

MAC = "00:16:3e:00:00:02"

HELPER = """
import json, os, sys, time
log = open(sys.argv[1], "a")
open(sys.argv[1] + ".started", "a").write(f"{os.getpid()}\\n")
broken = {"ok": False, "error": "libxl: cannot open a libxl context (not root, or no Xen?)"}
print(json.dumps({"ok": True, "ready": True} if sys.argv[2] == "ready" else broken), flush=True)
if sys.argv[2] != "ready":
    sys.exit(1)
for line in sys.stdin:
    request = json.loads(line)
    log.write(json.dumps({"pid": os.getpid(), **request}) + "\\n"); log.flush()
    if request["op"] == "domains":
        listed = [{"name": "domnet", "domid": 3}] if "garbled" not in sys.argv[1] else {"domnet": 3}
        print(json.dumps({"ok": True, "domains": listed}), flush=True)
        continue
    guest = request["guest"]
    if guest == "dies":
        sys.exit(3)
    if guest == "hangs":
        time.sleep(30)
    if guest == "garbles":
        print("libxl: error: not json", flush=True)
        continue
    reply = {"ok": True}
    if guest == "gone":
        reply["gone"] = True
    if guest == "fails":
        reply = {"ok": False, "error": "libxl_device_nic_add failed"}
    print(json.dumps(reply), flush=True)
"""


@pytest.fixture
def helper(tmp_path: Path) -> tuple[Path, Path]:
    program = tmp_path / "helper.py"
    program.write_text(HELPER)
    return program, tmp_path / "requests"


def devices(
    helper: tuple[Path, Path], *, ready: bool = True, timeout: float = 10.0, warm: int = 0
) -> LibxlDevices:
    program, log = helper
    command = (sys.executable, str(program), str(log), "ready" if ready else "broken")
    return LibxlDevices(command, timeout=timeout, warm=warm)


def started(helper: tuple[Path, Path]) -> list[int]:
    path = helper[1].with_name(helper[1].name + ".started")
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def requests(helper: tuple[Path, Path]) -> list[dict[str, object]]:
    return [json.loads(line) for line in helper[1].read_text().splitlines()]


def test_a_bare_vif_keeps_its_devid_mac_and_backend() -> None:
    assert nic_fields(3, VifParams(mac=MAC), "domnet") == {
        "devid": 3,
        "mac": MAC,
        "backend_domname": "domnet",
    }


def test_every_recorded_vif_parameter_is_given_back_the_rate_exactly() -> None:
    params = VifParams(
        mac=MAC,
        bridge="br-dmz",
        script="/etc/xen/scripts/vif-route",
        type="vif",
        ip="10.0.0.2 fd00::2",
        rate="5000000000,1000000",  # 5 GB/s: more than xl's bytes/s syntax takes without a unit
        mtu=9000,
        vifname="web-eth0",
        model="e1000",
    )
    assert nic_fields(0, params, "domnet") == {
        "devid": 0,
        "mac": MAC,
        "backend_domname": "domnet",
        "bridge": "br-dmz",
        "script": "/etc/xen/scripts/vif-route",
        "ip": "10.0.0.2 fd00::2",
        "mtu": 9000,
        "ifname": "web-eth0",
        "model": "e1000",
        "rate_bytes_per_interval": 5000000000,
        "rate_interval_usecs": 1000000,
    }


@pytest.mark.parametrize("rate", ["12500", "12500,", "-1,50000", "12500,5000000000", "1e3,50"])
def test_a_rate_that_is_not_libxls_is_refused(rate: str) -> None:
    with pytest.raises(XendddError, match="not libxl's"):
        nic_fields(0, VifParams(mac=MAC, rate=rate), "domnet")


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


def test_calls_reuse_one_helper_and_say_what_libxl_is_asked(helper: tuple[Path, Path]) -> None:
    calls = devices(helper)
    try:
        calls.attach("fe", DeviceKind.VIF, 0, VifParams(mac=MAC, bridge="br0"), "domnet")
        calls.detach("fe", DeviceKind.VIF, 0)
        calls.attach("fe", DeviceKind.VBD, 51728, VbdParams(vdev="xvdb", target="/dev/xvdb"), "domstore")
        calls.detach("fe", DeviceKind.VBD, 51728)
    finally:
        calls.close()
    seen = requests(helper)
    assert len({r.pop("pid") for r in seen}) == 1
    assert seen == [
        {
            "op": "attach-nic",
            "nic": {"devid": 0, "mac": MAC, "backend_domname": "domnet", "bridge": "br0"},
            "guest": "fe",
        },
        {"op": "detach-nic", "devid": 0, "guest": "fe"},
        {
            "op": "attach-disk",
            "spec": "vdev=xvdb,access=rw,backend=domstore,devtype=disk,target=/dev/xvdb",
            "guest": "fe",
        },
        {"op": "detach-disk", "vdev": "51728", "guest": "fe"},
    ]


def test_detaching_a_device_libxl_no_longer_has_is_done_not_an_error(helper: tuple[Path, Path]) -> None:
    """On real Xen, `xl devd` removed a device whose hotplug script it killed, frontend and all; the
    recovery's detach before the next attach met "Unknown device 1." and retried it forever."""
    calls = devices(helper)
    try:
        calls.detach("gone", DeviceKind.VIF, 1)
    finally:
        calls.close()


@pytest.mark.parametrize(
    ("guest", "said"),
    [
        ("fails", "detaching fails's vif 0: libxl_device_nic_add failed"),  # libxl's context not trusted
        ("dies", "exited"),
        ("garbles", "said 'libxl: error"),
    ],
)
def test_a_failed_call_is_an_error_saying_why_and_the_next_call_gets_a_new_helper(
    helper: tuple[Path, Path], guest: str, said: str
) -> None:
    calls = devices(helper)
    try:
        with pytest.raises(XendddError, match=said):
            calls.detach(guest, DeviceKind.VIF, 0)
        calls.detach("fe", DeviceKind.VIF, 0)
    finally:
        calls.close()
    first, second = requests(helper)
    assert first["pid"] != second["pid"]


def test_a_helper_that_hangs_is_killed_at_the_timeout(helper: tuple[Path, Path]) -> None:
    calls = devices(helper, timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(XendddError, match="no answer within 1 s"):
            calls.detach("hangs", DeviceKind.VIF, 0)
    finally:
        calls.close()
    assert time.monotonic() - started < 10


def test_a_helper_that_cannot_open_libxl_fails_the_call_with_its_reason(helper: tuple[Path, Path]) -> None:
    calls = devices(helper, ready=False)
    with pytest.raises(XendddError, match="cannot open a libxl context"):
        calls.detach("fe", DeviceKind.VIF, 0)
    assert helper[1].read_text() == ""  # nothing was asked of it


def test_warm_helpers_serve_calls_at_once_and_one_that_failed_is_replaced(helper: tuple[Path, Path]) -> None:
    """The daemon's: two helpers load in the background before any call; calls take them rather than
    starting their own, and a helper whose call failed is replaced in the background."""
    import threading

    def wait_for_started(count: int) -> int:
        deadline = time.monotonic() + 10
        while len(started(helper)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(started(helper))

    calls = devices(helper, warm=2)
    barrier = threading.Barrier(2)

    def detach(devid: int) -> None:
        barrier.wait()
        calls.detach("fe", DeviceKind.VIF, devid)

    threads = [threading.Thread(target=detach, args=(devid,)) for devid in (0, 1)]
    try:
        assert wait_for_started(2) == 2  # no call made yet
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(started(helper)) == 2
        with pytest.raises(XendddError):
            calls.detach("fails", DeviceKind.VIF, 2)
        assert wait_for_started(3) == 3  # before the next call
        calls.detach("fe", DeviceKind.VIF, 3)
        calls.detach("fe", DeviceKind.VIF, 4)
    finally:
        calls.close()
    assert len(started(helper)) == 3
    failed = next(r["pid"] for r in requests(helper) if r["guest"] == "fails")
    assert failed not in [r["pid"] for r in requests(helper)[-2:]]


def test_the_domains_are_listed_by_a_helper(helper: tuple[Path, Path]) -> None:
    client = devices(helper)
    try:
        assert client.domains() == [{"name": "domnet", "domid": 3}]
        assert requests(helper) == [{"pid": started(helper)[0], "op": "domains"}]
    finally:
        client.close()


def test_a_listing_that_is_not_a_list_of_domains_is_an_error(tmp_path: Path) -> None:
    program = tmp_path / "helper.py"
    program.write_text(HELPER)
    client = devices((program, tmp_path / "garbled-requests"))
    try:
        with pytest.raises(XendddError, match="listing the domains: libxl's helper answered"):
            client.domains()
    finally:
        client.close()
