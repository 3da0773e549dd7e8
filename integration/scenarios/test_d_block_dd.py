"""(d) block driver domain: a guest's vbd served by domstore survives a kernel crash of domstore; the disk
comes back with the same vdev, and what the guest wrote to it before the crash reads back after."""

from __future__ import annotations

import re
import time

from conftest import (
    Console,
    busybox_guest,
    create_guest,
    domid,
    instance_phases,
    ready_instance,
    recovery_phases,
    recovery_state,
    report_mttr,
    run,
    through_a_new_backend,
    wait_until,
    xenddd_json,
    xs_read,
)

VDEV = "xvdb"
DEVID = 202 * 256 + 16  # xvdb
VBD_XML = f"""<disk type='block' device='disk'>
      <driver name='phy'/>
      <source dev='/dev/xvdb'/>
      <backenddomain name='domstore'/>
      <target dev='{VDEV}' bus='xen'/>
    </disk>"""


def vbd_connected_to(dd: int) -> bool:
    guest = domid("feblk")
    frontend = f"/local/domain/{guest}/device/vbd/{DEVID}"
    return (
        guest is not None
        and xs_read(f"{frontend}/state") == "4"
        and xs_read(f"{frontend}/backend-id") == str(dd)
        and xs_read(f"/local/domain/{dd}/backend/vbd/{guest}/{DEVID}/state") == "4"
    )


def written_token() -> str | None:
    line = Console("feblk").find("FE: vbd wrote ")
    return line.split("FE: vbd wrote ", 1)[1].strip() if line else None


def test_a_guest_vbd_served_by_domstore_connects_and_takes_data() -> None:
    assert domid("domstore") is not None, "domstore is not running (scenario a starts it)"
    dd = ready_instance("domstore")
    create_guest("feblk", "virsh", "-c", "xen:///system", "create", str(busybox_guest("feblk", "", VBD_XML)))
    wait_until(lambda: vbd_connected_to(dd), 300, "feblk's vbd Connected through domstore")
    token = wait_until(written_token, 120, "feblk writing its token to the vbd")
    wait_until(lambda: Console("feblk").find(f"FE: vbd read {token} attach=1"), 60, "feblk reading it back")
    (vbd,) = wait_until(lambda: xenddd_json("block-list", "feblk")["items"], 60, "feblk in xenddd's registry")
    assert vbd["vdev"] == VDEV and vbd["backend"] == "domstore"


def test_a_crashed_domstore_is_restarted_and_the_data_reads_back_through_the_reattached_vbd() -> None:
    old, guest = domid("domstore"), domid("feblk")
    token = written_token()
    assert old is not None and guest is not None and token, (
        "needs the guest and token of the previous scenario"
    )
    seen = len(xenddd_json("events")["items"])
    console = Console("feblk").mark()
    started = time.monotonic()
    run("xenstore-write", f"/local/domain/{old}/data/crash", "1")
    new = wait_until(
        lambda: through_a_new_backend(old, [guest], "vbd", DEVID),
        600,
        "feblk's vbd Connected through a new domstore",
        every=0.5,
        explain=lambda: recovery_state(seen, {"feblk": "vbd/51728"}),
    )
    elapsed = time.monotonic() - started
    assert domid("domstore") == new
    instance = instance_phases(old, new, kind="vbd")
    report_mttr("domstore", "kernel crash", recovery_phases("domstore", seen), elapsed, instance=instance)
    xml = run("virsh", "-c", "xen:///system", "dumpxml", "feblk").stdout
    assert xml.count("<disk") == 1 and f"dev='{VDEV}'" in xml
    read = wait_until(
        lambda: next((ln for ln in console.lines() if re.search(r"FE: vbd read .* attach=[2-9]", ln)), None),
        120,
        "feblk reading its disk again after the reattach",
    )
    assert f"FE: vbd read {token} attach=" in read, read
