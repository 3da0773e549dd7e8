"""The peers' method, as a competent operator would write it instead of running xenddd.

libvirt restarts the crashed driver domain itself (`<on_crash>restart</on_crash>`); this poller, once a
second, notices the new domid, waits for the driver domain's readiness key, then detaches and attaches
every guest's stale vif — all guests in parallel, libvirt guests with virsh, xl guests with xl — as Qubes'
and OpenXT's glue does. No backoff, no intent log, no hostile-input checks: nothing that costs time.

Usage: peer_poller.py DRIVER_DOMAIN GUEST,TOOL,MAC,BRIDGE ...   (TOOL: virsh or xl)
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


def domid(name: str) -> int | None:
    out = sh("xl", "domid", name).stdout.strip()
    return int(out) if out.isdigit() else None


def retried(*args: str, attempts: int = 5) -> None:
    """What a careful operator's script does with a toolstack that refuses now and then: try again."""
    for _ in range(attempts):
        if sh(*args).returncode == 0:
            return
        time.sleep(1.0)


def reattach(guest: str, tool: str, mac: str, bridge: str, driver_domain: str) -> None:
    if tool == "xl":
        retried("xl", "network-detach", guest, mac, attempts=2)  # fails once gone
        retried("xl", "network-attach", guest, f"mac={mac}", f"bridge={bridge}", f"backend={driver_domain}")
        return
    retried("virsh", "-c", "xen:///system", "detach-interface", guest, "bridge", "--mac", mac, "--live")
    xml = (
        f"<interface type='bridge'><mac address='{mac}'/><source bridge='{bridge}'/>"
        f"<backenddomain name='{driver_domain}'/></interface>"
    )
    path = f"/tmp/peer-{guest}.xml"
    with open(path, "w") as out:
        out.write(xml)
    retried("virsh", "-c", "xen:///system", "attach-device", guest, path, "--live")


def ready(domid: int) -> bool:
    """Waits for the instance's readiness key; False if the instance is gone first (one that crashes as it
    boots: libvirt restarts it again, under another domid)."""
    home = f"/local/domain/{domid}"
    while True:
        read = sh("xenstore-read", f"{home}/data/ready")
        if read.stdout.strip() == "1":
            return True
        if read.returncode != 0 and sh("xenstore-exists", home).returncode != 0:
            return False
        time.sleep(0.2)


def main(driver_domain: str, guests: list[str]) -> None:
    last = domid(driver_domain)
    while True:
        time.sleep(1.0)
        now = domid(driver_domain)
        if now is None or now == last:
            continue
        if not ready(now):
            continue  # it died before it was ready: libvirt starts another, a new domid
        workers = [
            threading.Thread(target=reattach, args=(*spec.split(",", 3), driver_domain)) for spec in guests
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        print(f"peer-poller: {driver_domain} domid {last} -> {now}: reattached {len(guests)}", flush=True)
        last = now


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
