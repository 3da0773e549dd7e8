"""(l, after network_dd) In-place reconnect (`reconnect = "in-place"`, docs/research/inplace-reconnect.md):
xenddd restarts a crashed domnet with the **same domid** and writes its guests' backend directories again
from dom0's records, so that netback takes the guests' rings over as they are — no detach, no attach. The
guests must notice nothing but a pause: the same interfaces with the same ifindex, and a TCP stream between
two guests going on over the same connection with no gap.

Two new guests, fl (libvirt, listening) and fl2 (xl, sending a counted line ten times a second), join fe
and fe2 on domnet, which becomes xl's (`toolstack = "xl"`: only libxl's own create can choose a domid). Each
round's MTTR (crash → every vif Connected again through the same domid) goes to mttr.jsonl with
path=inplace, with the driver domain's own restart-to-ready. Afterwards domnet goes back to libvirt.
Then the same for domstore (two crashes): flb (xl), whose disk it serves, writes a counted record to it and
reads it back every second; the I/O must go on with no error and no change of the guest's disks.
XENDDD_IT_SELECT='smoke or network_dd or inplace' XENDDD_IT_RELEASES=trixie scripts/integration -k pc
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from conftest import (
    HEALTHY,
    Console,
    busybox_guest,
    domid,
    recovery_phases,
    recovery_state,
    report_mttr,
    run,
    say,
    wait_until,
    xenddd_json,
    xs_read,
)
from test_c_network_dd import vif_connected_to
from test_c_vs_peers import wait_for_both_vifs
from test_k_standby import CONFIG, VIRSH

ON_DEMAND = True

ROUNDS = 3
FL_IP, FL2_IP, PORT = "10.99.0.12", "10.99.0.13", "5000"
FL_MAC, FL2_MAC = "00:16:3e:00:00:12", "00:16:3e:00:00:13"
GUESTS = ("fe", "fe2", "fl", "fl2")
XVDB = 202 * 256 + 16  # flb's disk from domstore (domstore's own xvdb, the disk scenario (d) serves)


def in_place(toml: str, name: str = "domnet") -> str:
    """The driver domain's block (the first, `name = "..."`) gets toolstack = "xl" and reconnect =
    "in-place"."""
    blocks = toml.split("\n\n")
    index = next(i for i, block in enumerate(blocks) if f'name = "{name}"' in block.split("\n"))
    blocks[index] += '\ntoolstack = "xl"\nreconnect = "in-place"'
    return "\n\n".join(blocks)


def start_stream_guests(dd: int) -> None:
    vif = f"""<interface type='bridge'>
      <mac address='{FL_MAC}'/>
      <source bridge='br0'/>
      <backenddomain name='domnet'/>
    </interface>"""
    xml = busybox_guest("fl", f"xenddd.ip={FL_IP} xenddd.peer={FL2_IP} xenddd.listen={PORT}", vif)
    run(*VIRSH, "create", str(xml))
    cfg = Path("/tmp/fl2.cfg")
    cfg.write_text(f"""name = "fl2"
type = "pv"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/fe-initrd.gz"
extra = "console=hvc0 xenddd.ip={FL2_IP} xenddd.peer={FL_IP} xenddd.send={FL_IP}:{PORT}"
memory = 96
vcpus = 1
vif = [ "mac={FL2_MAC},bridge=br0,backend=domnet" ]
""")
    run("xl", "create", str(cfg))
    for guest in ("fl", "fl2"):
        wait_until(lambda g=guest: vif_connected_to(dd, g), 300, f"{guest}'s vif Connected through domnet")
    wait_until(lambda: Console("fl").find("FE: tcp seq 50"), 180, "fl receiving fl2's stream")


def guest_reports(console: Console) -> list[str]:
    """What a guest said that an in-place reconnect must not make it say: its interfaces changed, the
    stream broke or skipped."""
    markers = ("FE: ifaces", "FE: ifindex", "FE: tcp closed", "FE: tcp gap", "FE: tcp sender ended")
    return [line for line in console.lines() if any(m in line for m in markers)]


def last_ping(console: Console) -> str:
    lines = [ln for ln in console.lines() if "FE: ping " in ln]
    return lines[-1].rsplit(" ", 1)[1] if lines else ""


def last_seq(console: Console) -> int:
    lines = [ln for ln in console.lines() if "FE: tcp seq " in ln]
    return int(lines[-1].rsplit(" ", 1)[1]) if lines else -1


def test_a_crashed_domnet_comes_back_with_its_domid_and_its_guests_notice_nothing_but_a_pause() -> None:
    base = CONFIG.read_text()
    run("systemctl", "stop", "xenddd")
    run(*VIRSH, "destroy", "domnet")
    run(*VIRSH, "undefine", "domnet")
    CONFIG.write_text(in_place(base))
    results: list[dict[str, object]] = []
    try:
        run("systemctl", "start", "xenddd")
        wait_until(lambda: domid("domnet") is not None, 300, "domnet started by xl")
        dd = domid("domnet")
        assert dd is not None
        for guest in ("fe", "fe2"):
            wait_until(lambda g=guest: vif_connected_to(dd, g), 300, f"{guest}'s vif on xl's domnet")
        start_stream_guests(dd)
        for round_no in range(1, ROUNDS + 1):
            results.append(one_round(dd, round_no))
        say(f"in place: {json.dumps(results)}")
        failures = [r for r in results if r["reports"] or r["events"]]
        assert not failures, failures
    finally:
        run("systemctl", "stop", "xenddd")
        for guest in ("fl", "fl2"):
            run("xl", "destroy", guest, check=False)
        now = domid("domnet")
        run("xl", "destroy", "domnet", check=False)
        CONFIG.write_text(base)
        run("systemctl", "start", "xenddd")
        wait_for_both_vifs(now, "back on libvirt's domnet")


def crash_in_place(
    name: str, dd: int, round_no: int, connected: Callable[[], bool], devices: dict[str, str], what: str
) -> tuple[int, float, float, dict[str, float]]:
    """Crash `name` (domid `dd`), wait until `connected` holds and xenddd recorded the recovery (a device
    that falls back to detach/attach after the in-place bound belongs to this round, not to the next),
    check the domid came back, report the MTTR. Returns the events seen before, the MTTR, the driver
    domain's uptime at ready and xenddd's phases."""
    dd_console = Console(name).mark()
    seen = len(xenddd_json("events")["items"])
    started = time.monotonic()
    run("xenstore-write", f"/local/domain/{dd}/data/crash", "1")
    wait_until(lambda: xs_read(f"/local/domain/{dd}/data/ready") is None, 60, f"{name}'s crash", every=0.2)

    def recovered() -> bool:
        if not connected():
            return False
        events = xenddd_json("events")["items"][seen:]
        return any(e["event"] == "recovered" and e.get("driver_domain") == name for e in events)

    wait_until(
        recovered,
        420,
        f"{what} through domid {dd} (round {round_no}) Connected again and the recovery recorded",
        every=0.5,
        explain=lambda: recovery_state(seen, devices),
    )
    observed = time.monotonic() - started
    assert domid(name) == dd, f"{name} did not come back with its domid"
    line = wait_until(lambda: dd_console.find(f"ready domid={dd} "), 60, f"{name}'s readiness line")
    ready_uptime = float(line.rsplit("uptime=", 1)[1].split()[0])
    phases = recovery_phases(name, seen, devices)
    report_mttr(
        name, f"kernel crash, round {round_no}", phases, observed, dd_ready=ready_uptime, path="inplace"
    )
    return seen, observed, ready_uptime, phases


def round_entry(
    name: str,
    label: str,
    round_no: int,
    crash: tuple[int, float, float, dict[str, float]],
    reports: object,
) -> dict[str, object]:
    """The round's verdict: `reports` (what the guests said that they must not) and xenddd's fallback
    events must be empty, and its one restart must have been in place."""
    seen, observed, ready_uptime, phases = crash
    items = xenddd_json("events")["items"][seen:]
    events = [e for e in items if e["event"] in ("in-place-failed", "reattach-failed")]
    restarted = [e for e in items if e["event"] == "restarted" and e.get("driver_domain") == name]
    assert [e.get("in_place") for e in restarted] == [True], restarted
    entry: dict[str, object] = {
        "round": round_no,
        "mttr": round(observed, 1),
        "dd_ready": ready_uptime,
        "phases": {k: round(v, 1) for k, v in phases.items()},
        "reports": reports,
        "events": events,
    }
    say(f"{label} round {round_no}: MTTR {observed:.1f}s (DD ready after {ready_uptime:.1f}s), {entry}")
    return entry


def one_round(dd: int, round_no: int) -> dict[str, object]:
    time.sleep(HEALTHY)  # domnet has run healthy: no crash-loop backoff
    consoles = {g: Console(g).mark() for g in GUESTS}
    seq_before = last_seq(Console("fl"))
    crash = crash_in_place(
        "domnet",
        dd,
        round_no,
        lambda: all(vif_connected_to(dd, g) for g in GUESTS),
        {g: "vif/0" for g in GUESTS},
        "every vif",
    )
    wait_until(lambda: last_seq(Console("fl")) >= seq_before + 100, 120, "fl's stream going on")
    for guest in ("fe", "fe2"):
        wait_until(
            lambda g=guest: last_ping(consoles[g]) in ("", "up"), 60, f"{guest} pinging its peer again"
        )
    reports = {g: guest_reports(c) for g, c in consoles.items() if guest_reports(c)}
    return round_entry("domnet", "in place", round_no, crash, reports)


def flb_vbd_connected(dd: int) -> bool:
    guest = domid("flb")
    return (
        guest is not None
        and xs_read(f"/local/domain/{guest}/device/vbd/{XVDB}/state") == "4"
        and xs_read(f"/local/domain/{guest}/device/vbd/{XVDB}/backend-id") == str(dd)
        and xs_read(f"/local/domain/{dd}/backend/vbd/{guest}/{XVDB}/state") == "4"
    )


def last_blkio(console: Console) -> int:
    lines = [ln for ln in console.lines() if "FE: blkio seq " in ln]
    return int(lines[-1].rsplit(" ", 1)[1]) if lines else -1


def test_a_crashed_domstore_comes_back_with_its_domid_and_the_guests_disk_io_goes_on() -> None:
    base = CONFIG.read_text()
    run("systemctl", "stop", "xenddd")
    run("xl", "destroy", "feblk", check=False)  # scenario (d)'s guest, if it ran: the disk is flb's now
    run(*VIRSH, "destroy", "domstore")
    run(*VIRSH, "undefine", "domstore")
    CONFIG.write_text(in_place(base, "domstore"))
    results: list[dict[str, object]] = []
    try:
        run("systemctl", "start", "xenddd")
        wait_until(lambda: domid("domstore") is not None, 300, "domstore started by xl")
        dd = domid("domstore")
        assert dd is not None
        wait_until(lambda: xs_read(f"/local/domain/{dd}/data/ready") == "1", 300, "domstore ready")
        cfg = Path("/tmp/flb.cfg")
        cfg.write_text("""name = "flb"
type = "pv"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/fe-initrd.gz"
extra = "console=hvc0 xenddd.blkio=1"
memory = 96
vcpus = 1
disk = [ "format=raw,vdev=xvdb,access=rw,backend=domstore,target=/dev/xvdb" ]
""")
        run("xl", "create", str(cfg))
        wait_until(lambda: flb_vbd_connected(dd), 300, "flb's vbd Connected through domstore")
        wait_until(lambda: last_blkio(Console("flb")) >= 20, 180, "flb's disk I/O going")
        for round_no in (1, 2):
            results.append(one_storage_round(dd, round_no))
        say(f"in place, storage: {json.dumps(results)}")
        failures = [r for r in results if r["reports"] or r["events"]]
        assert not failures, failures
    finally:
        run("systemctl", "stop", "xenddd")
        run("xl", "destroy", "flb", check=False)
        run("xl", "destroy", "domstore", check=False)
        CONFIG.write_text(base)
        run("systemctl", "start", "xenddd")
        wait_until(lambda: domid("domstore") is not None, 300, "domstore back on libvirt")
        back = domid("domstore")
        wait_until(lambda: xs_read(f"/local/domain/{back}/data/ready") == "1", 300, "domstore ready again")


def one_storage_round(dd: int, round_no: int) -> dict[str, object]:
    time.sleep(HEALTHY)  # domstore has run healthy: no crash-loop backoff
    console = Console("flb").mark()
    before = last_blkio(Console("flb"))
    crash = crash_in_place(
        "domstore", dd, round_no, lambda: flb_vbd_connected(dd), {"flb": f"vbd/{XVDB}"}, "flb's vbd"
    )
    wait_until(lambda: last_blkio(Console("flb")) >= before + 40, 180, "flb's disk I/O going on")
    markers = ("FE: vbd gone", "FE: disks", "FE: blkio error")
    reports = [ln for ln in console.lines() if any(m in ln for m in markers)]
    return round_entry("domstore", "in place, storage", round_no, crash, reports)
