"""(l, after network_dd) In-place reconnect (`reconnect = "in-place"`, docs/research/inplace-reconnect.md):
xenddd restarts a crashed domnet with the **same domid** and writes its guests' backend directories again
from dom0's records, so that netback takes the guests' rings over as they are — no detach, no attach. The
guests must notice nothing but a pause: the same interfaces with the same ifindex, and a TCP stream between
two guests going on over the same connection with no gap.

Two new guests, fl (libvirt, listening) and fl2 (xl, sending a counted line ten times a second), join fe
and fe2 on domnet, which becomes xl's (`toolstack = "xl"`: only libxl's own create can choose a domid).
fe2 is in its `reattach_guests`: its vif must come back by detach and attach (a `reattached` event with
in_place false) while the others' come back in place. Each
round's MTTR (crash → every vif Connected again through the same domid) goes to mttr.jsonl with
path=inplace, with the driver domain's own restart-to-ready. Afterwards domnet goes back to libvirt.
Then the same for domstore (two crashes): flb (xl) and flv (libvirt) each mount an ext4 from it (a
partition of its data disk each) and append a checksummed record twice a second; their I/O must go on with
no error in their kernels' logs and no change of their disks, and afterwards (remounted read-only, the
guests destroyed) dom0's `e2fsck -fn` finds each filesystem clean and every record intact. Each round's
row in mttr.jsonl carries the longest pause the guests' own I/O saw (`paused`: the TCP stream's, the
filesystems' writers').
XENDDD_IT_SELECT='smoke or network_dd or inplace' XENDDD_IT_RELEASES=trixie scripts/integration -k pc
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from conftest import (
    HEALTHY,
    Console,
    busybox_guest,
    busybox_xl_guest,
    create_guest,
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
REATTACHED = "fe2"  # in domnet's reattach_guests: its vif is detached and attached, a new device each time
XVDB = 202 * 256 + 16  # flb's disk from domstore (domstore's own xvdb, the disk scenario (d) serves)


def in_place(toml: str, name: str = "domnet", reattached: tuple[str, ...] = ()) -> str:
    """The driver domain's block (the first, `name = "..."`) gets toolstack = "xl", reconnect =
    "in-place" and `reattached` as its reattach_guests."""
    blocks = toml.split("\n\n")
    index = next(i for i, block in enumerate(blocks) if f'name = "{name}"' in block.split("\n"))
    blocks[index] += (
        f'\ntoolstack = "xl"\nreconnect = "in-place"\nreattach_guests = {json.dumps(list(reattached))}'
    )
    return "\n\n".join(blocks)


def start_stream_guests(dd: int) -> None:
    vif = f"""<interface type='bridge'>
      <mac address='{FL_MAC}'/>
      <source bridge='br0'/>
      <backenddomain name='domnet'/>
    </interface>"""
    xml = busybox_guest("fl", f"xenddd.ip={FL_IP} xenddd.peer={FL2_IP} xenddd.listen={PORT}", vif)
    create_guest("fl", *VIRSH, "create", str(xml))
    cmdline = f"xenddd.ip={FL2_IP} xenddd.peer={FL_IP} xenddd.send={FL_IP}:{PORT}"
    vifs = f'vif = [ "mac={FL2_MAC},bridge=br0,backend=domnet" ]'
    create_guest("fl2", "xl", "create", str(busybox_xl_guest("fl2", cmdline, vifs)))
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
    CONFIG.write_text(in_place(base, reattached=(REATTACHED,)))
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
    check the domid came back. Returns the events seen before, the MTTR, the driver domain's uptime at
    ready and xenddd's phases."""
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
    return seen, observed, ready_uptime, recovery_phases(name, seen, devices)


def round_entry(
    name: str,
    label: str,
    round_no: int,
    crash: tuple[int, float, float, dict[str, float]],
    reports: object,
    paused: dict[str, float],
) -> dict[str, object]:
    """The round's verdict: `reports` (what the guests said that they must not) and xenddd's fallback
    events must be empty, and its one restart must have been in place; its MTTR reported with the
    longest pause each guest's own I/O saw (`paused`)."""
    seen, observed, ready_uptime, phases = crash
    report_mttr(
        name,
        f"kernel crash, round {round_no}",
        phases,
        observed,
        dd_ready=ready_uptime,
        path="inplace",
        paused=paused,
    )
    items = xenddd_json("events")["items"][seen:]
    events = [e for e in items if e["event"] in ("in-place-failed", "reattach-failed")]
    restarted = [e for e in items if e["event"] == "restarted" and e.get("driver_domain") == name]
    assert [e.get("in_place") for e in restarted] == [True], restarted
    entry: dict[str, object] = {
        "round": round_no,
        "mttr": round(observed, 1),
        "dd_ready": ready_uptime,
        "phases": {k: round(v, 1) for k, v in phases.items()},
        "paused": paused,
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
    reports = {g: guest_reports(c) for g, c in consoles.items() if g != REATTACHED and guest_reports(c)}
    paused = {"fl2->fl": max(pauses(consoles["fl"], "tcp"), default=0.0)}  # the stream's longest pause
    # each device came back the way the config says: in place, but fe2's reattached
    ways = {
        e["guest"]: e.get("in_place")
        for e in xenddd_json("events")["items"][crash[0] :]
        if e["event"] == "reattached"
    }
    assert ways == {g: g != REATTACHED for g in GUESTS}, ways
    return round_entry("domnet", "in place", round_no, crash, reports, paused)


STORE_DISK = "/dev/vdd"  # dom0's; domstore's xvdb
SECTOR = 512
# two partitions of domstore's xvdb, one ext4 for each guest: flb's (xl) and flv's (libvirt)
PARTITIONS = {"flb": (1, 2048, 63488), "flv": (2, 65536, 63488)}  # guest: number, first sector, sectors
FS_GUESTS = tuple(PARTITIONS)
KERNEL_ERRORS = ("I/O error", "EXT4-fs error", "EXT4-fs warning", "Aborting journal", "Remounting filesystem")


def partition_store_disk() -> None:
    """An MBR with one partition per guest on domstore's data disk (dom0's view, while domstore is down)
    and an ext4 on each: what flb and flv mount."""
    mbr = bytearray(SECTOR)
    for number, first, sectors in PARTITIONS.values():
        entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + first.to_bytes(4, "little")  # type 83: Linux
        mbr[446 + 16 * (number - 1) : 446 + 16 * number] = entry + sectors.to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    with open(STORE_DISK, "r+b") as disk:
        disk.write(mbr)
    run("blockdev", "--rereadpt", STORE_DISK)
    for number, _, _ in PARTITIONS.values():
        run("mkfs.ext4", "-q", "-F", f"{STORE_DISK}{number}")


def unpartition_store_disk() -> None:
    """Domstore's data disk whole again (scenarios write their tokens to its first sector)."""
    with open(STORE_DISK, "r+b") as disk:
        disk.write(bytes(1 << 20))
    run("blockdev", "--rereadpt", STORE_DISK)


def vbd_connected(guest: str, dd: int) -> bool:
    domain = domid(guest)
    return (
        domain is not None
        and xs_read(f"/local/domain/{domain}/device/vbd/{XVDB}/state") == "4"
        and xs_read(f"/local/domain/{domain}/device/vbd/{XVDB}/backend-id") == str(dd)
        and xs_read(f"/local/domain/{dd}/backend/vbd/{domain}/{XVDB}/state") == "4"
    )


def last_fsio(console: Console) -> int:
    lines = [ln for ln in console.lines() if "FE: fsio seq " in ln]
    return int(lines[-1].rsplit(" ", 1)[1]) if lines else -1


def pauses(console: Console, what: str) -> list[float]:
    """The pauses a guest reported (`FE: <what> pause S.CCs before N`), in seconds."""
    lines = [ln for ln in console.lines() if f"FE: {what} pause " in ln]
    return [float(ln.split(" pause ", 1)[1].split("s ", 1)[0]) for ln in lines]


def start_fs_guests(dd: int) -> None:
    disks = 'disk = [ "format=raw,vdev=xvdb,access=rw,backend=domstore,target=/dev/xvdb1" ]'
    flb = busybox_xl_guest("flb", "xenddd.fsio=/dev/xvdb", disks, memory_mib=128)
    create_guest("flb", "xl", "create", str(flb))
    vbd = """<disk type='block' device='disk'>
      <driver name='phy'/>
      <source dev='/dev/xvdb2'/>
      <backenddomain name='domstore'/>
      <target dev='xvdb' bus='xen'/>
    </disk>"""
    flv = busybox_guest("flv", "xenddd.fsio=/dev/xvdb", vbd, memory_mib=128)
    create_guest("flv", *VIRSH, "create", str(flv))
    for guest in FS_GUESTS:
        wait_until(lambda g=guest: vbd_connected(g, dd), 300, f"{guest}'s vbd Connected through domstore")
        wait_until(lambda g=guest: last_fsio(Console(g)) >= 20, 180, f"{guest}'s filesystem I/O going")


def check_filesystems(consoles: dict[str, Console]) -> dict[str, object]:
    """After the rounds: each guest's filesystem remounted read-only by the guest's kernel (sysrq u), the
    guest destroyed, then in dom0 `e2fsck -fn` on its partition and every record read back: numbered
    from 1 with no gap, each checksum right, none lost that the guest reported written."""
    found: dict[str, object] = {}
    for guest, console in consoles.items():
        written = last_fsio(console)
        errors = [ln for ln in console.lines() if any(e in ln for e in KERNEL_ERRORS)]
        run("xl", "sysrq", guest, "u")
        wait_until(lambda c=console: c.find("Emergency Remount complete"), 60, f"{guest}'s read-only remount")
        run(*(VIRSH if guest == "flv" else ("xl",)), "destroy", guest)
        run("sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches")  # dom0 reads what reached the disk
        partition = f"{STORE_DISK}{PARTITIONS[guest][0]}"
        fsck = run("e2fsck", "-fn", partition, check=False)
        records = run("debugfs", "-R", "cat /records", partition).stdout.splitlines()
        bad = [r for n, r in enumerate(records, 1) if not record_intact(r, n)]
        found[guest] = {
            "written": written,
            "records": len(records),
            "bad": bad[:5],
            "kernel_errors": errors,
            "fsck": fsck.returncode,
        }
        assert fsck.returncode == 0, f"{guest}: e2fsck -fn {partition}: {fsck.stdout}{fsck.stderr}"
        assert not errors and not bad and len(records) >= written > 0, found[guest]
    return found


def record_intact(record: str, number: int) -> bool:
    """`N UPTIME MD5`: the record numbered `number`, its checksum that of "N UPTIME\\n"."""
    fields = record.split()
    if len(fields) != 3 or fields[0] != str(number):
        return False
    return hashlib.md5(f"{fields[0]} {fields[1]}\n".encode()).hexdigest() == fields[2]


def test_a_crashed_domstore_comes_back_with_its_domid_and_mounted_filesystems_go_on() -> None:
    base = CONFIG.read_text()
    run("systemctl", "stop", "xenddd")
    run("xl", "destroy", "feblk", check=False)  # scenario (d)'s guest, if it ran: the disk is flb's now
    run(*VIRSH, "destroy", "domstore")
    run(*VIRSH, "undefine", "domstore")
    CONFIG.write_text(in_place(base, "domstore"))
    results: list[dict[str, object]] = []
    try:
        partition_store_disk()
        run("systemctl", "start", "xenddd")
        wait_until(lambda: domid("domstore") is not None, 300, "domstore started by xl")
        dd = domid("domstore")
        assert dd is not None
        wait_until(lambda: xs_read(f"/local/domain/{dd}/data/ready") == "1", 300, "domstore ready")
        start_fs_guests(dd)
        consoles = {g: Console(g) for g in FS_GUESTS}
        for round_no in (1, 2):
            results.append(one_storage_round(dd, round_no))
        say(f"in place, storage: {json.dumps(results)}")
        checked = check_filesystems(consoles)
        say(f"in place, storage, filesystems afterwards: {json.dumps(checked)}")
        failures = [r for r in results if r["reports"] or r["events"]]
        assert not failures, failures
    finally:
        run("systemctl", "stop", "xenddd")
        run("xl", "destroy", "flb", check=False)
        run(*VIRSH, "destroy", "flv", check=False)
        run("xl", "destroy", "domstore", check=False)
        unpartition_store_disk()
        CONFIG.write_text(base)
        run("systemctl", "start", "xenddd")
        wait_until(lambda: domid("domstore") is not None, 300, "domstore back on libvirt")
        back = domid("domstore")
        wait_until(lambda: xs_read(f"/local/domain/{back}/data/ready") == "1", 300, "domstore ready again")


def one_storage_round(dd: int, round_no: int) -> dict[str, object]:
    time.sleep(HEALTHY)  # domstore has run healthy: no crash-loop backoff
    consoles = {g: Console(g).mark() for g in FS_GUESTS}
    before = {g: last_fsio(Console(g)) for g in FS_GUESTS}
    crash = crash_in_place(
        "domstore",
        dd,
        round_no,
        lambda: all(vbd_connected(g, dd) for g in FS_GUESTS),
        {g: f"vbd/{XVDB}" for g in FS_GUESTS},
        "flb's and flv's vbds",
    )
    for guest in FS_GUESTS:
        wait_until(
            lambda g=guest: last_fsio(Console(g)) >= before[g] + 40, 180, f"{guest}'s filesystem I/O going on"
        )
    markers = ("FE: vbd gone", "FE: disks", "FE: fsio error", *KERNEL_ERRORS)
    reports = {g: [ln for ln in c.lines() if any(m in ln for m in markers)] for g, c in consoles.items()}
    paused = {g: max(pauses(c, "fsio"), default=0.0) for g, c in consoles.items()}
    return round_entry(
        "domstore", "in place, storage", round_no, crash, {g: r for g, r in reports.items() if r}, paused
    )
