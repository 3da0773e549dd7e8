"""(h) chained driver domains: domfw, a filtering driver domain with no hardware whose uplink vif domnet
serves (Qubes' sys-firewall behind sys-net), and a guest behind it pinging a guest of domnet through both.
A crash of domnet leaves domfw running and gives its uplink back; a crash of domfw brings it back with
its uplink and then its guest's vif. domfw joins xenddd's config for this scenario only (a reload)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    Console,
    busybox_guest,
    create_guest,
    domid,
    recovery_phases,
    recovery_state,
    report_mttr,
    run,
    wait_until,
    xenddd_json,
    xs_read,
)
from dd_image import IMAGE, boot_from_image

# Three more driver-domain boots and three crashes, which CI has no room for:
# XENDDD_IT_SELECT='smoke or chained' XENDDD_IT_RELEASES=trixie scripts/integration -k pc
ON_DEMAND = True

CONFIG = Path("/etc/xenddd/xenddd.toml")
DOMFW = """
[[driver_domain]]
name = "domfw"
kind = ["network"]
type = "pv"
kernel = "/boot/vmlinuz"
initrd = "/boot/dd-initrd.gz"
cmdline = "root=/dev/xvda console=hvc0 init=/usr/local/sbin/xenddd-it-dd"
memory = 192
vcpus = 1

[[driver_domain.disk]]
path = "/dev/vdg"
vdev = "xvda"

# the uplink: served by domnet, on its bridge; inside domfw it joins domfw's own br0
[[driver_domain.vif]]
backend = "domnet"
bridge = "br0"

[driver_domain.restart]
max_restarts = 8
window = 3600
backoff_base = 1
backoff_cap = 10

[driver_domain.readiness]
condition = "xenstore-key"
key = "data/ready"
value = "1"
timeout = 300
"""
BEHIND_FW_IP, NET_PEER_IP = "10.99.0.5", "10.99.0.6"
GUESTS = {  # name → (serving driver domain, MAC, its address, the address it pings)
    "fwfe": ("domfw", "00:16:3e:00:00:05", BEHIND_FW_IP, NET_PEER_IP),
    "netpeer": ("domnet", "00:16:3e:00:00:06", NET_PEER_IP, BEHIND_FW_IP),
}


def vif_xml(backend: str, mac: str) -> str:
    return f"""<interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='br0'/>
      <backenddomain name='{backend}'/>
    </interface>"""


def connected(guest: str, backend: str) -> bool:
    g, b = domid(guest), domid(backend)
    return (
        g is not None
        and b is not None
        and xs_read(f"/local/domain/{g}/device/vif/0/state") == "4"
        and xs_read(f"/local/domain/{g}/device/vif/0/backend-id") == str(b)
        and xs_read(f"/local/domain/{b}/backend/vif/{g}/0/state") == "4"
    )


def uplink_macs() -> list[str]:
    """domfw's vifs as xl lists them (devid, MAC); one line per vif after the header."""
    lines = run("xl", "network-list", "domfw").stdout.strip().splitlines()[1:]
    return [f"{line.split()[0]} {line.split()[2]}" for line in lines]


@pytest.fixture(scope="module", autouse=True)
def chain() -> Iterator[None]:
    original = CONFIG.read_text()
    # the same image as the other driver domains (XENDDD_IT_DD_IMAGE=product: see dd_image.py)
    CONFIG.write_text(original + (boot_from_image(DOMFW) if IMAGE in original else DOMFW))
    run("systemctl", "reload", "xenddd")
    try:
        yield
    finally:
        for guest in GUESTS:
            run("virsh", "-c", "xen:///system", "destroy", guest, check=False)
        run("xenddd", "destroy", "--force", "domfw", check=False)
        CONFIG.write_text(original)
        run("systemctl", "reload", "xenddd")
        run("virsh", "-c", "xen:///system", "undefine", "domfw", check=False)


def test_domfw_starts_behind_domnet_and_its_guest_reaches_domnets_guest() -> None:
    wait_until(
        lambda: (d := domid("domfw")) and xs_read(f"/local/domain/{d}/data/ready") == "1", 400, "domfw ready"
    )
    wait_until(lambda: connected("domfw", "domnet"), 300, "domfw's uplink Connected through domnet")
    for guest, (backend, mac, address, peer) in GUESTS.items():
        xml = busybox_guest(guest, f"xenddd.ip={address} xenddd.peer={peer}", vif_xml(backend, mac))
        create_guest(guest, "virsh", "-c", "xen:///system", "create", str(xml))
        wait_until(lambda g=guest, b=backend: connected(g, b), 300, f"{guest}'s vif Connected via {backend}")
    wait_until(lambda: Console("fwfe").find(f"FE: ping {NET_PEER_IP} up"), 180, "fwfe pinging netpeer")
    (row,) = xenddd_json("list", "domfw")["items"]
    assert row["upstreams"] == ["domnet"]
    served = {item["guest"] for item in xenddd_json("network-list", "--backend", "domnet")["items"]}
    assert {"domfw", "netpeer"} <= served


def recover(crashed: str, watch: list[tuple[str, str]], how: str) -> None:
    """Crash `crashed` (sysrq c through its test hook) and time it until fwfe pings netpeer again and
    every (guest, backend) in `watch` is Connected to the running instance of its backend."""
    old = domid(crashed)
    assert old is not None
    seen = len(xenddd_json("events")["items"])
    console = Console("fwfe").mark()
    started = time.monotonic()
    run("xenstore-write", f"/local/domain/{old}/data/crash", "1")
    wait_until(lambda: (d := domid(crashed)) not in (None, old) and d, 300, f"a new {crashed}")
    for guest, backend in watch:
        wait_until(
            lambda g=guest, b=backend: connected(g, b),
            600,
            f"{guest}'s vif Connected through {backend}",
            every=2,
            explain=lambda: recovery_state(seen, {g: "vif/0" for g, _b in watch}),
        )
    wait_until(
        lambda: console.find(f"FE: ping {NET_PEER_IP} up"), 180, "fwfe pinging netpeer again", every=0.5
    )
    elapsed = time.monotonic() - started
    report_mttr(crashed, how, recovery_phases(crashed, seen), elapsed)


def test_a_crashed_domnet_gives_the_running_domfw_its_uplink_back() -> None:
    fw, before = domid("domfw"), uplink_macs()
    recover(
        "domnet",
        [("domfw", "domnet"), ("netpeer", "domnet"), ("fwfe", "domfw")],
        "kernel crash, domfw chained",
    )
    assert domid("domfw") == fw  # a guest of domnet like any other: not restarted
    assert uplink_macs() == before


def test_a_crashed_domfw_comes_back_with_its_uplink_and_then_its_guest() -> None:
    net, before = domid("domnet"), uplink_macs()
    recover("domfw", [("domfw", "domnet"), ("fwfe", "domfw")], "kernel crash, behind domnet")
    assert domid("domnet") == net
    assert uplink_macs() == before
    uplinks = run("xenstore-list", f"/local/domain/{net}/backend/vif/{domid('domfw')}").stdout.split()
    assert uplinks == ["0"]


def test_a_filtering_domain_with_its_uplink_from_dom0_comes_back_with_it() -> None:
    """The seed's variant: the uplink served by dom0 (`backend = "dom0"`, on a bridge of dom0's)."""
    run("ip", "link", "add", "xenbr-it", "type", "bridge", check=False)
    run("ip", "link", "set", "xenbr-it", "up")
    CONFIG.write_text(
        CONFIG.read_text().replace(
            'backend = "domnet"\nbridge = "br0"', 'backend = "dom0"\nbridge = "xenbr-it"'
        )
    )
    run("systemctl", "reload", "xenddd")
    run("xenddd", "restart", "domfw")

    def uplink_from_dom0() -> bool:
        fw = domid("domfw")
        return (
            fw is not None
            and xs_read(f"/local/domain/{fw}/device/vif/0/backend-id") == "0"
            and xs_read(f"/local/domain/{fw}/device/vif/0/state") == "4"
            and xs_read(f"/local/domain/0/backend/vif/{fw}/0/state") == "4"
        )

    wait_until(uplink_from_dom0, 400, "domfw's uplink Connected through dom0")
    (row,) = xenddd_json("list", "domfw")["items"]
    assert row["upstreams"] == []
    old = domid("domfw")
    seen = len(xenddd_json("events")["items"])
    started = time.monotonic()
    run("xenstore-write", f"/local/domain/{old}/data/crash", "1")
    wait_until(
        lambda: domid("domfw") not in (None, old) and uplink_from_dom0(), 400, "domfw back with its uplink"
    )
    wait_until(lambda: connected("fwfe", "domfw"), 600, "fwfe's vif Connected through the new domfw", every=2)
    report_mttr(
        "domfw", "kernel crash, uplink from dom0", recovery_phases("domfw", seen), time.monotonic() - started
    )
