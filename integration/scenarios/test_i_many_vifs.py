"""(i) many vifs through one driver domain: 5 small guests with 2 vifs each (10 frontends) served by domnet,
all back after a kernel crash of domnet with the same devid and MAC — the real-Xen half of issue [scale]
(the simulated host measures 1 to 1,000 frontends in bench/recovery_mttr.py).

Under emulation the test bed's CPU, not its memory, is the limit: each running busybox guest costs
domnet's `vif-bridge` scripts time, and its `xl devd` kills one at libxl's 40 s. On 2026-12-02, with 4
vifs per guest the fourth guest's vifs were killed so, with 2 per guest the seventh's; 6 x 2 was created
once on a quiet machine and failed twice more at the sixth guest: 5 x 2 is what the test bed holds."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import (
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

# Five more guest boots and 10 reattaches, which CI has no room for:
# XENDDD_IT_SELECT='smoke or many_vifs' XENDDD_IT_RELEASES=trixie scripts/integration -k pc
ON_DEMAND = True

GUESTS = [f"many{g}" for g in range(5)]
VIFS = 2


def mac(guest: int, vif: int) -> str:
    return f"00:16:3e:00:1{guest}:{vif:02x}"


def interfaces(guest: int) -> str:
    return "\n    ".join(
        f"""<interface type='bridge'>
      <mac address='{mac(guest, vif)}'/>
      <source bridge='br0'/>
      <backenddomain name='domnet'/>
    </interface>"""
        for vif in range(VIFS)
    )


def vifs_of(name: str) -> dict[int, tuple[str | None, str | None, str | None, str | None]]:
    """devid → (MAC, backend-id, frontend state, backend state), as the guest's nodes show them."""
    guest = domid(name)
    assert guest is not None
    listed = run("xenstore-list", f"/local/domain/{guest}/device/vif", check=False).stdout.split()
    found = {}
    for devid in sorted(int(d) for d in listed):
        front = f"/local/domain/{guest}/device/vif/{devid}"
        backend = xs_read(f"{front}/backend")
        found[devid] = (
            xs_read(f"{front}/mac"),
            xs_read(f"{front}/backend-id"),
            xs_read(f"{front}/state"),
            xs_read(f"{backend}/state") if backend else None,
        )
    return found


def connected_to(dd: int | None, names: list[str]) -> bool:
    """Each guest of `names` has its VIFS vifs, all Connected through instance `dd` of domnet."""
    return dd is not None and all(
        len(vifs) == VIFS and all(v[1:] == (str(dd), "4", "4") for v in vifs.values())
        for vifs in (vifs_of(name) for name in names)
    )


@pytest.fixture(scope="module", autouse=True)
def guests() -> Iterator[None]:
    dd = domid("domnet")
    assert dd is not None, "domnet is not running (scenario a starts it)"
    wait_until(lambda: xs_read(f"/local/domain/{dd}/data/ready") == "1", 400, "domnet ready")
    try:
        for index, name in enumerate(GUESTS):
            xml = busybox_guest(name, "", interfaces(index))  # 96 MiB: 64 cannot hold kernel and initrd
            create_guest(name, "virsh", "-c", "xen:///system", "create", str(xml))
            # one guest at a time: domnet's `xl devd` gives each hotplug script 40 s
            wait_until(lambda n=name: connected_to(dd, [n]), 300, f"{name}'s {VIFS} vifs Connected")
        yield
    finally:
        for name in GUESTS:
            run("virsh", "-c", "xen:///system", "destroy", name, check=False)


def test_every_vif_comes_back_with_its_devid_and_mac_after_a_crash_of_domnet() -> None:
    before = {name: {devid: v[0] for devid, v in vifs_of(name).items()} for name in GUESTS}
    assert before == {name: {v: mac(g, v) for v in range(VIFS)} for g, name in enumerate(GUESTS)}
    served = xenddd_json("network-list", "--backend", "domnet")["items"]
    assert len([item for item in served if item["guest"] in GUESTS]) == len(GUESTS) * VIFS
    old = domid("domnet")
    seen = len(xenddd_json("events")["items"])
    started = time.monotonic()
    run("xenstore-write", f"/local/domain/{old}/data/crash", "1")
    wait_until(
        lambda: (d := domid("domnet")) not in (None, old) and connected_to(d, GUESTS),
        900,
        f"all {len(GUESTS) * VIFS} vifs Connected through the new domnet",
        every=3,
        explain=lambda: recovery_state(seen, {name: f"vif/{VIFS - 1}" for name in GUESTS}),
    )
    elapsed = time.monotonic() - started
    after = {name: {devid: v[0] for devid, v in vifs_of(name).items()} for name in GUESTS}
    assert after == before
    report_mttr(
        "domnet",
        f"kernel crash, {len(GUESTS)} guests x {VIFS} vifs",
        recovery_phases("domnet", seen),
        elapsed,
    )
