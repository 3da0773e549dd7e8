"""Helpers for the scenarios that run inside the test bed's dom0 (Debian's python3 and pytest).

Each boot runs the scenarios of one machine variant (XENDDD_IT_MACHINE): a scenario module names its
variant with `MACHINE = "..."`, default "pc"; the others are deselected.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pyxs.client import Client
from pyxs.exceptions import ConnectionError as PyXSConnectionError
from pyxs.exceptions import PyXSError

MACHINE_NOW = os.environ.get("XENDDD_IT_MACHINE", "pc")
RESULTS = Path(os.environ.get("XENDDD_IT_RESULTS", "/tmp"))
CONSOLE_LOGS = Path("/var/log/xen/console")
# xenstored's log of every write and watch, with millisecond timestamps (rotated into .1, .2, ...)
ACCESS_LOG = Path("/var/log/xen/xenstored-access.log")
ACCESS_WRITE = re.compile(r"^\[(\d{8}T\d\d:\d\d:\d\d\.\d+)Z\]\s+(\S+)\s+write\s+(\S+)\s+(.*)$")
# a domain died (xenstored tells every watcher of @releaseDomain; the first to hear dates it)
ACCESS_RELEASE = re.compile(r"^\[(\d{8}T\d\d:\d\d:\d\d\.\d+)Z\]\s+\S+\s+w event\s+@releaseDomain\b")
# a crash after this much uptime is not a crash loop (xenddd's healthy_uptime is 60 s): restarted at once
HEALTHY = 65.0
GUEST_BOOT = 120.0  # a busybox guest's kernel to its init, under emulation with a driver domain booting


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Another machine's scenarios, and on-demand ones (`ON_DEMAND = True`) unless XENDDD_IT_SELECT
    chose what runs (the host writes it to the results' `select`), are deselected."""
    selected = (RESULTS / "select").exists() and (RESULTS / "select").read_text().strip()
    other = [
        i
        for i in items
        if getattr(getattr(i, "module", None), "MACHINE", "pc") != MACHINE_NOW
        or (getattr(getattr(i, "module", None), "ON_DEMAND", False) and not selected)
    ]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [i for i in items if i not in other]


def run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def xs_read(path: str) -> str | None:
    values = xs_read_many([path])
    return values[0] if values is not None else None


def xs_read_many(paths: list[str]) -> list[str] | None:
    """Several nodes (None if any is missing or xenstored does not answer), read over the harness's one
    xenstore connection: what a recovery round polls, so its looks cost dom0 no process at all. With a
    `xenstore-read` process a look, the harness used 2.0 to 2.6 s of dom0's CPU in a 6-s standby round
    (cpu.jsonl, 2026-12-06): a third of an emulated processor taken from the recovery it measured."""
    try:
        client = _xenstore()
        return [client.read(path.encode()).decode().strip() for path in paths]
    except (PyXSConnectionError, OSError):
        _close_xenstore()  # the next look connects again
        return None
    except PyXSError:  # a node missing or not readable
        return None


_XENSTORE: list[Client] = []  # the harness's connection, opened by its first look (its thread a daemon)


def _xenstore() -> Client:
    if not _XENSTORE:
        client = Client()
        client.connect()
        _XENSTORE.append(client)
    return _XENSTORE[0]


def _close_xenstore() -> None:
    while _XENSTORE:
        _XENSTORE.pop().close()


def through_a_new_backend(old: int, guests: list[int], kind: str, devid: int) -> int | None:
    """The new driver domain's domid once each guest's device `kind`/`devid` is Connected through it,
    both ends, and it is not `old`: two reads a look at most, and no `xl`."""
    nodes = [f"/local/domain/{g}/device/{kind}/{devid}/{n}" for g in guests for n in ("state", "backend-id")]
    fronts = xs_read_many(nodes)
    if fronts is None or set(fronts[::2]) != {"4"} or len(set(fronts[1::2])) != 1:
        return None
    new = fronts[1]
    if new == str(old) or not new.isdigit():
        return None
    backs = xs_read_many([f"/local/domain/{new}/backend/{kind}/{g}/{devid}/state" for g in guests])
    return int(new) if backs is not None and set(backs) == {"4"} else None


def domid(name: str) -> int | None:
    result = run("xl", "domid", name, check=False, timeout=60)
    return int(result.stdout) if result.returncode == 0 and result.stdout.strip().isdigit() else None


def ready_instance(name: str, timeout: float = 300, old: int | None = None) -> int:
    """The running instance of driver domain `name` (other than `old`) once its readiness key is written,
    looked up anew each time: xenddd restarts an instance that dies while it boots (seen under emulation:
    a PV kernel's general protection fault in text_poke_early, 4 to 6 s into its boot), and a wait on
    the domid of the one that died would outlast the recovery."""

    def ready() -> int | None:
        dd = domid(name)
        return dd if dd not in (None, old) and xs_read(f"/local/domain/{dd}/data/ready") == "1" else None

    found: int = wait_until(ready, timeout, f"{name} ready" if old is None else f"a new {name} ready")
    return found


def xenddd_json(*args: str) -> Any:
    return json.loads(run("xenddd", "--json", *args).stdout)


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 1.0,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Deadline-based: under emulation one process spawn costs ~70 ms, so never count loop turns.
    `explain` adds what the state was at the deadline to the failure (CI shows only that message)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = ""
            if explain is not None:
                try:
                    detail = f"\n{explain()}"
                except (AssertionError, OSError, ValueError, subprocess.SubprocessError) as exc:
                    detail = f"\n(the state could not be read: {exc})"
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(every)


def recovery_state(seen: int, devices: dict[str, str]) -> str:
    """xenddd's events since the first `seen` and its status, and each guest device's xenstore view
    (`devices`: guest name → "vif/0") and the daemon's last log lines: what a recovery that did not
    finish was stuck on (CI shows only the failure's message)."""
    lines = [
        " ".join(f"{k}={v}" for k, v in event.items() if k not in ("seq", "incident"))
        for event in xenddd_json("events")["items"][seen:]
    ]
    lines.append(run("xenddd", "status", check=False).stdout.strip())
    lines.append("journal: " + run("journalctl", "-u", "xenddd", "-n", "25", "-o", "cat", check=False).stdout)
    lines.append("xl running: " + run("pgrep", "-a", "-x", "xl", check=False).stdout.strip())
    for guest, device in devices.items():
        gid = domid(guest)
        front = f"/local/domain/{gid}/device/{device}"
        backend = xs_read(f"{front}/backend")
        lines.append(
            f"{guest} (domid {gid}) {device}: state={xs_read(f'{front}/state')} "
            f"backend-id={xs_read(f'{front}/backend-id')} backend={backend} "
            f"backend state={xs_read(f'{backend}/state') if backend else None} "
            f"hotplug-status={xs_read(f'{backend}/hotplug-status') if backend else None}"
        )
    return "\n".join(lines)


def busybox_guest(name: str, cmdline: str, devices: str, memory_mib: int = 96) -> Path:
    """libvirt XML for one of the test bed's busybox guests (see integration/image/fe-init), written to a
    file for `virsh create`."""
    path = Path(f"/tmp/{name}.xml")
    path.write_text(f"""<domain type='xen'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='xenpv'>linux</type>
    <kernel>/boot/vmlinuz</kernel>
    <initrd>/boot/fe-initrd.gz</initrd>
    <cmdline>console=hvc0 {cmdline}</cmdline>
  </os>
  <devices>
    {devices.strip()}
    <console type='pty'><target type='xen' port='0'/></console>
  </devices>
</domain>
""")
    return path


def busybox_xl_guest(name: str, cmdline: str, devices: str = "", memory_mib: int = 96) -> Path:
    """The same guest for `xl create`: an xl.cfg whose `devices` are its own lines (`vif = [ ... ]`,
    `disk = [ ... ]`), written to a file."""
    path = Path(f"/tmp/{name}.cfg")
    path.write_text(f"""name = "{name}"
type = "pv"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/fe-initrd.gz"
extra = "console=hvc0 {cmdline}"
memory = {memory_mib}
vcpus = 1
{devices.strip()}
""")
    return path


def create_guest(name: str, *command: str) -> None:
    """Create one of the test bed's guests with `command` (`virsh create` or `xl create`) and wait for its
    init's first word on the console. A guest kernel that dies before it (a jump to address 0 in early
    boot under TCG was seen once in CI, like dom0's int3) is created once more, and its console log
    (guest-NAME.log, appended to) keeps both boots; a second such death fails the scenario."""
    for attempt in (1, 2):
        console = Console(name).mark()
        run(*command)

        def booted_or_dead(c: Console = console) -> str | None:
            if c.find("FE: up"):
                return "up"
            return "dead" if domid(name) is None else None

        if wait_until(booted_or_dead, GUEST_BOOT, f"{name}'s init to start") == "up":
            return
        say(f"{name}'s kernel died while booting (attempt {attempt}; see its console log)")
        run("xl", "destroy", name, check=False)  # gone already, unless its on_crash keeps it
    raise AssertionError(f"{name}'s kernel died while booting, twice")


class Console:
    """A guest's console as xenconsoled logs it in dom0 (the guests and driver domains of the test bed
    report on it what they see), read from a mark on: `mark()` now, `lines()` what came after it."""

    def __init__(self, guest: str) -> None:
        self.path = CONSOLE_LOGS / f"guest-{guest}.log"
        self.offset = 0

    def mark(self) -> Console:
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        return self

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace").splitlines()

    def find(self, needle: str) -> str | None:
        return next((line for line in self.lines() if needle in line), None)


def recovery_phases(driver_domain: str, seen: int, devices: dict[str, str] | None = None) -> dict[str, float]:
    """The phases of the recovery xenddd recorded after its first `seen` events, relative to detection;
    `recovered` is recorded on the reconcile pass after the one that saw every frontend Connected.
    `devices`: the guest devices to show if it is not recorded in time (see `recovery_state`)."""

    def phases() -> dict[str, float] | None:
        events = xenddd_json("events")["items"][seen:]
        found = {e["event"]: e["ts"] for e in events if e.get("driver_domain") == driver_domain}
        return found if "recovered" in found else None

    found = wait_until(
        phases,
        60,
        f"xenddd to record the recovery of {driver_domain}",
        explain=lambda: recovery_state(seen, devices or {}),
    )
    return {
        p: found[p] - found["detected"]
        for p in ("detached", "restarted", "promoted", "ready", "recovered")
        if p in found
    }


def instance_phases(old: int, new: int, *, booted: bool = True, kind: str = "vif") -> dict[str, float]:
    """One recovery of a driver domain in xenstored's access log (one clock, milliseconds). `mttr_log`:
    the guests' outage, from the old instance's death (the first @releaseDomain after dom0's write of its
    data/crash) to the last of the new instance's backends of `kind` (its guests' vifs, or vbds) going
    Connected; unlike the MTTR observed by polling, it carries neither the crash trigger's latency in the
    old instance (0.1 to 0.9 s) nor the poll's lag (its 0.5 s period and a few processes per look, 0.5 to
    1.5 s). `booted` (a cold recovery) adds the issues' three phases: `to_new_domid`, from the death to
    the new instance's creation (the toolstack writing its name); `dd_restart`, from there to its
    readiness key (its own write of data/ready): its restart-to-ready, its build in dom0 included (5 to 9
    s of a start call under emulation), which its uptime at ready leaves out; `ready_to_recovered`, from
    there to the last of its backends going Connected. Waited for a little (the log is written as it
    goes); empty where xenstored keeps no such log."""
    crash, name = f"/local/domain/{old}/data/crash", f"/local/domain/{new}/name"
    connected = re.compile(rf"^backend/{kind}/\d+/\d+/state$")

    def found() -> dict[str, float] | None:
        firsts: dict[str, float] = {}
        deaths: list[float] = []
        for line in _access_log_lines():
            died = ACCESS_RELEASE.match(line)
            if died is not None:
                deaths.append(_stamp(died.group(1)))
                continue
            if crash not in line and name not in line and f"D{new}" not in line:
                continue
            match = ACCESS_WRITE.match(line)
            if match is None:
                continue
            stamp, conn, node, value = match.groups()
            mine, value = conn.split(".")[0] == f"D{new}", value.strip()
            if node == crash and value == "1":
                what = "crash"
            elif node == name:
                what = "created"
            elif mine and node == "data/ready" and value == "1":
                what = "ready"
            elif mine and connected.match(node) and value == "4":
                what = node
            else:
                continue
            when = _stamp(stamp)
            firsts[what] = min(firsts.get(what, when), when)
        backends = [when for what, when in firsts.items() if what.startswith("backend/")]
        death = min((when for when in deaths if when >= firsts.get("crash", float("inf"))), default=None)
        if death is None or not backends or (booted and not {"created", "ready"} <= firsts.keys()):
            return None
        phases = {"mttr_log": max(backends) - death}
        if booted:
            phases["to_new_domid"] = firsts["created"] - death
            phases["dd_restart"] = firsts["ready"] - firsts["created"]
            phases["ready_to_recovered"] = max(backends) - firsts["ready"]
        return phases

    if not ACCESS_LOG.exists():
        return {}
    phases: dict[str, float] = wait_until(found, 30, f"domid {new}'s recovery in {ACCESS_LOG}")
    return phases


def created_to_ready(domid: int) -> float | None:
    """A domain's restart-to-ready in xenstored's log, for a start no crash preceded (instance_phases has it
    for a recovery): the toolstack's first write of its name until its own write of data/ready; None where
    xenstored keeps no such log."""
    if not ACCESS_LOG.exists():
        return None
    name = f"/local/domain/{domid}/name"

    def found() -> float | None:
        created = ready = None
        for line in _access_log_lines():
            match = ACCESS_WRITE.match(line)
            if match is None:
                continue
            stamp, conn, node, value = match.groups()
            if node == name and created is None:
                created = _stamp(stamp)
            elif conn.split(".")[0] == f"D{domid}" and node == "data/ready" and value.strip() == "1":
                ready = _stamp(stamp) if ready is None else min(ready, _stamp(stamp))
        return ready - created if created is not None and ready is not None else None

    elapsed: float = wait_until(found, 30, f"domid {domid}'s start in {ACCESS_LOG}")
    return elapsed


def _access_log_lines() -> Iterator[str]:
    """Every line of xenstored's access log and its rotated files, in their files' name order."""
    for log in sorted(ACCESS_LOG.parent.glob(ACCESS_LOG.name + "*")):
        yield from log.read_text(errors="replace").splitlines()


def _stamp(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y%m%dT%H:%M:%S.%f").timestamp()


def report_mttr(
    driver_domain: str,
    how: str,
    phases: dict[str, float],
    observed: float,
    *,
    method: str = "xenddd",
    dd_ready: float | None = None,
    instance: dict[str, float] | None = None,
    path: str = "cold",
    paused: dict[str, float] | None = None,
) -> None:
    """On the console for the log, and in results/<machine>/mttr.jsonl for the host's MTTR table.
    `method`: who recovered (xenddd, or the peers' method); `dd_ready`: the new driver-domain instance's
    uptime when it wrote its readiness key, and `instance`: its phases in xenstored's log
    (instance_phases), where the scenario measured them; `path`: cold (a new instance booted), standby
    (a warm standby promoted) or inplace (the same domid, the guests' devices kept); `paused`: the
    longest pause each guest's own I/O saw (in place)."""
    shown = " ".join(f"{p}=+{t:.1f}s" for p, t in phases.items())
    say(f"MTTR {method} ({path}) {driver_domain} {how}: {shown} (observed {observed:.1f}s)")
    entry = {"method": method, "path": path, "driver_domain": driver_domain, "how": how, **phases}
    entry["observed"] = observed
    if dd_ready is not None:
        entry["dd_ready"] = dd_ready
    entry.update(instance or {})
    if paused is not None:
        entry["paused"] = " ".join(f"{guest}={seconds:.1f}" for guest, seconds in paused.items())
    with open(RESULTS / "mttr.jsonl", "a") as out:
        out.write(json.dumps(entry) + "\n")


CpuSnapshot = tuple[dict[int, tuple[str, float]], dict[int, tuple[str, float]]]


def cpu_seconds() -> CpuSnapshot:
    """Each domain's name and the CPU time it has used (`xl list`, 0.1 s steps), by domid; and each of
    dom0's processes' name and the CPU time it and its reaped children have used, by pid (/proc)."""
    domains: dict[int, tuple[str, float]] = {}
    for line in run("xl", "list", timeout=60).stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[1].isdigit():
            domains[int(fields[1])] = (fields[0], float(fields[-1]))
    tick = os.sysconf("SC_CLK_TCK")
    processes: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        processes[int(stat.parent.name)] = (name, sum(int(t) for t in rest[11:15]) / tick)
    return domains, processes


def daemon_load(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What xenddd's own work cost between two of its `status` answers (the daemon's passes, their
    time, its CPU and each thread's, a pool's workers summed under their pool's name): the first
    answer's own pass is among those counted, the second's is not."""
    threads: dict[str, float] = {}
    for name, seconds in after["threads_cpu_seconds"].items():
        pool = re.sub(r"_\d+$", "", name)
        used = seconds - before["threads_cpu_seconds"].get(name, 0.0)
        threads[pool] = round(threads.get(pool, 0.0) + used, 2)
    stages = {
        name: round(seconds - before["pass_cpu_seconds"].get(name, 0.0), 2)
        for name, seconds in after["pass_cpu_seconds"].items()
    }
    return {
        "xenstore_requests": after["xenstore_requests"] - before["xenstore_requests"],
        "watch_events": after["watch_events"] - before["watch_events"],
        "pass_cpu": dict(sorted(stages.items(), key=lambda item: -item[1])),
        "passes": after["passes"] - before["passes"],
        "pass_seconds": round(after["pass_seconds"] - before["pass_seconds"], 2),
        "cpu_seconds": round(after["cpu_seconds"] - before["cpu_seconds"], 2),
        "threads": dict(sorted(threads.items(), key=lambda item: -item[1])),
    }


def report_cpu(
    what: str,
    before: CpuSnapshot,
    after: CpuSnapshot,
    seconds: float,
    daemon: dict[str, Any] | None = None,
) -> None:
    """Where the processors went during a measured recovery (`seconds` long), to results/<machine>/
    cpu.jsonl: the CPU time each domain used meanwhile, by its name at the end (one that went: by its
    name before, with the time it had used then, since a dead domain uses none), and dom0's processes
    that used the most (with the children they reaped; a process that came and went meanwhile and was
    not reaped by one that stays is not counted). On the test bed every domain shares two emulated
    processors, so a recovery is as quick as the work on them allows."""
    used = _cpu_used(before[0], after[0], 1)
    gone = [f"{name}({d})" for d, (name, _t) in before[0].items() if d not in after[0]]
    spent = _cpu_used(before[1], after[1], 2)
    dom0 = dict(sorted(((p, t) for p, t in spent.items() if t >= 0.05), key=lambda item: -item[1])[:15])
    entry = {"what": what, "seconds": round(seconds, 2), "used": used, "gone": gone, "dom0": dom0}
    entry["total"] = round(sum(used.values()), 1)
    if daemon is not None:
        entry["xenddd"] = daemon
    say(f"CPU {what}: {entry['total']:.1f} s in {seconds:.1f} s: {used}")
    if daemon is not None:
        say(f"xenddd's work in {what}: {daemon}")
    with open(RESULTS / "cpu.jsonl", "a") as out:
        out.write(json.dumps(entry) + "\n")


def _cpu_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], digits: int
) -> dict[str, float]:
    """The CPU time each domain or process of `after` used since `before` (all of it if it is new), by
    its name and number at the end."""
    return {
        f"{name}({key})": round(total - before.get(key, (name, 0.0))[1], digits)
        for key, (name, total) in after.items()
    }


def say(text: str) -> None:
    """Progress on the serial console, which the host harness streams."""
    with open("/dev/console", "w") as console:
        console.write(f"XENDDD-IT: {text}\n")


@pytest.fixture(autouse=True)
def announce(request: pytest.FixtureRequest) -> None:
    say(f"scenario {request.node.name}")
