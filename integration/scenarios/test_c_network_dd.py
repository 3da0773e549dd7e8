"""(c) network driver domain: a guest's vif through domnet survives domnet's kernel crash, same MAC."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import domid, run, say, wait_until, xenddd_json, xs_read

MAC = "00:16:3e:00:00:02"
GUEST_XML = f"""<domain type='xen'>
  <name>fe</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='xenpv'>linux</type>
    <kernel>/boot/vmlinuz</kernel>
    <initrd>/boot/fe-initrd.gz</initrd>
    <cmdline>console=hvc0</cmdline>
  </os>
  <devices>
    <interface type='bridge'>
      <mac address='{MAC}'/>
      <source bridge='br0'/>
      <backenddomain name='domnet'/>
    </interface>
    <console type='pty'><target type='xen' port='0'/></console>
  </devices>
</domain>
"""


def vif_connected_to(dd: int) -> bool:
    guest = domid("fe")
    return (
        guest is not None
        and xs_read(f"/local/domain/{guest}/device/vif/0/state") == "4"
        and xs_read(f"/local/domain/{guest}/device/vif/0/backend-id") == str(dd)
        and xs_read(f"/local/domain/{dd}/backend/vif/{guest}/0/state") == "4"
    )


def test_a_guest_vif_served_by_domnet_connects() -> None:
    dd = domid("domnet")
    assert dd is not None, "domnet is not running (scenario a starts it)"
    wait_until(lambda: xs_read(f"/local/domain/{dd}/data/ready") == "1", 400, "domnet ready")
    xml = Path("/tmp/fe.xml")
    xml.write_text(GUEST_XML)
    run("virsh", "-c", "xen:///system", "create", str(xml))
    wait_until(lambda: vif_connected_to(dd), 300, "fe's vif Connected through domnet")
    listing = xenddd_json("network-list", "fe")
    (vif,) = listing["items"]
    assert vif["mac"] == MAC


def test_a_crashed_domnet_is_restarted_and_the_vif_reattached_with_the_same_mac() -> None:
    old = domid("domnet")
    assert old is not None
    started = time.monotonic()
    run("xenstore-write", f"/local/domain/{old}/data/crash", "1")  # the DD panics (sysrq c)
    new = wait_until(lambda: (d := domid("domnet")) not in (None, old) and d, 300, "a new domnet")
    wait_until(lambda: vif_connected_to(new), 600, "fe's vif Connected through the new domnet", every=2)
    elapsed = time.monotonic() - started
    guest = domid("fe")
    assert xs_read(f"/local/domain/{guest}/device/vif/0/mac") == MAC
    xml = run("virsh", "-c", "xen:///system", "dumpxml", "fe").stdout
    assert xml.count("<interface") == 1 and MAC in xml
    events = xenddd_json("events")["items"]
    phases = {e["event"]: e["ts"] for e in events if e.get("driver_domain") == "domnet"}
    assert "recovered" in phases
    detected = phases["detected"]
    say(
        "MTTR domnet crash: "
        + " ".join(
            f"{p}=+{phases[p] - detected:.1f}s"
            for p in ("detached", "restarted", "ready", "recovered")
            if p in phases
        )
        + f" (observed {elapsed:.1f}s)"
    )
