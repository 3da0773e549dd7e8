"""Host side of the integration suite: build the Debian package and (or reuse) each release's image, boot
Xen under QEMU once per release and machine variant, run that boot's scenarios inside dom0 (which installs
xenddd from the package with apt), and hand each scenario's outcome to the host test of the same name.
Releases: Debian 13 `trixie` (Xen 4.20) and Debian 12 `bookworm` (Xen 4.17). Variants: `pc` (no IOMMU:
everything but passthrough) and `vtd` (q35 with QEMU's emulated VT-d, Xen iommu=1: PCI passthrough into a
driver domain)."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

collect_ignore = ["scenarios", "image", "results"]  # scenarios run inside dom0, not on the host

TOP = Path(__file__).resolve().parents[1]
RESULTS = TOP / "integration/results"
HISTORY = RESULTS / "mttr-history.tsv"
BOOT_TIMEOUT = float(os.environ.get("XENDDD_IT_TIMEOUT", "2700"))
# a test bed whose serial console says nothing this long has hung (the dom0 runner says it is alive once a
# minute, and a good boot's longest quiet stretch before it starts is under a minute here): killed then,
# not at BOOT_TIMEOUT — a silent QEMU once held CI past its limit
SILENCE = float(os.environ.get("XENDDD_IT_SILENCE", "600"))
# when the whole suite must have ended (seconds since the epoch; .ci/run sets it below CI's own limit): no
# boot runs past it, none starts after it, so CI reports which scenarios did not run instead of timing out
SUITE_DEADLINE = float(os.environ.get("XENDDD_IT_DEADLINE", "inf"))
# a pytest -k expression over the scenarios' names, applied inside dom0 (a shorter boot for one change)
SELECT = os.environ.get("XENDDD_IT_SELECT", "")
# how many times scenario (g) crashes domnet in a row (the re-add race hunt); 0, the default, skips it
CRASHES = os.environ.get("XENDDD_IT_CRASHES", "0")
# how many times scenario (g) detaches and attaches a healthy vif of its xl guest (memory per replug)
REPLUGS = os.environ.get("XENDDD_IT_REPLUGS", "0")
# what the driver domains boot: `product`, the image `xenddd image build` made (the default; see
# integration/scenarios/dd_image.py), or `legacy`, the test bed's root disk with init=xenddd-it-dd
DD_IMAGE = os.environ.get("XENDDD_IT_DD_IMAGE", "product")
# two test beds at once starve each other of the host's cores (and time out): one boots after the other
BOOT_LOCK = Path(os.environ.get("XENDDD_IT_LOCK", "/run/lock/xenddd-integration.lock"))
XEN_ARGS = (
    "dom0_mem=1024M,max:1024M dom0_max_vcpus=2 console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
    "noreboot xpti=false pv-l1tf=false spec-ctrl=no"
)
DOM0_ARGS = "root=/dev/vda rw console=hvc0 xenddd.it=dom0"
STORE_DISK_MIB = 64
SCENARIO_STARTED = "XENDDD-IT: scenario "  # the dom0 runner's marker as each scenario starts


@dataclass(frozen=True)
class Machine:
    """One QEMU machine variant of the test bed; `first` goes before every other device (intel-iommu
    must be created before the PCI devices it translates for)."""

    name: str
    first: tuple[str, ...]
    xen_args: str = ""


MACHINES = {
    "pc": Machine("pc", ("-machine", "pc")),
    "vtd": Machine(
        "vtd", ("-machine", "q35", "-device", "intel-iommu,intremap=on,caching-mode=on"), "iommu=1"
    ),
}


@dataclass
class XenRun:
    """What the one boot of the test bed produced."""

    returncode: str | None
    outcomes: dict[str, str] = field(default_factory=dict)  # scenario test id → passed/failed/skipped
    messages: dict[str, str] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timed_out: bool = False  # killed at XENDDD_IT_TIMEOUT (or the suite's deadline): the rest fail
    hung: bool = False  # killed after XENDDD_IT_SILENCE of silence on its serial console
    first_boot: str = ""  # "hung" or "crashed": this is the second boot, after the first did so
    dom0_crashed: bool = False  # Xen said so on the serial console: nothing more would come


def build(script: str, *args: str) -> Path:
    """Runs a build script that prints its product's path on its last line."""
    result = subprocess.run(
        [str(TOP / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def boot(images: Path, machine: Machine, release: str, select: str) -> XenRun:
    with open(BOOT_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for the test bed that holds {BOOT_LOCK}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return boot_alone(images, machine, release, select)


def boot_alone(images: Path, machine: Machine, release: str, select: str) -> XenRun:
    results = RESULTS / f"{machine.name}-{release}"  # the dom0 runner names it after its os-release
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    (results / "select").write_text(select)
    (results / "crashes").write_text(CRASHES)
    (results / "dd-image").write_text(DD_IMAGE)
    (results / "replugs").write_text(REPLUGS)
    store = results / "store-disk.img"  # the block driver domain's data disk, fresh for every boot
    # and the two it serves to scenario (g)'s guests: one read-only to both, one read-write to one
    extra = [results / "store-ro-disk.img", results / "store-rw-disk.img"]
    rootfs = images / "rootfs.img"
    sockets = Path(tempfile.mkdtemp(prefix="xenddd-it-"))  # a short path: a unix socket's is at most 107
    monitor = sockets / "qmp.sock"
    qemu = [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "Westmere", *machine.first,
        "-m", "4096", "-smp", "2", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
        # asked where the vCPUs stand if the test bed goes silent
        "-qmp", f"unix:{monitor},server=on,wait=off",
        "-kernel", str(images / "xen"), "-append", f"{XEN_ARGS} {machine.xen_args}".strip(),
        "-initrd", f"{images / 'vmlinuz'} {DOM0_ARGS} xenddd.machine={machine.name},{images / 'initrd.img'}",
        # dom0's root (vda), then the root disks of domnet (vdb) and domstore (vdc): one cached image,
        # each opened as its own throw-away snapshot; domstore's data disks (vdd, vde, vdf)
        "-drive", f"file={rootfs},if=virtio,format=raw,snapshot=on",
        "-drive", f"file={rootfs},if=virtio,format=raw,snapshot=on,file.locking=off",
        "-drive", f"file={rootfs},if=virtio,format=raw,snapshot=on,file.locking=off",
        "-drive", f"file={store},if=virtio,format=raw",
        "-drive", f"file={extra[0]},if=virtio,format=raw",
        "-drive", f"file={extra[1]},if=virtio,format=raw",
        # the root disk of domfw (vdg), the filtering driver domain scenario (h) chains behind domnet
        "-drive", f"file={rootfs},if=virtio,format=raw,snapshot=on,file.locking=off",
        "-virtfs", f"local,path={TOP},mount_tag=xenddd,security_model=none,id=xenddd",
        "-nic", "none",
        # the NIC that scenario (b) hides from dom0 and (f) passes through: an e1000 at a fixed address,
        # on an isolated user network
        "-netdev", "user,id=pt0,restrict=on", "-device", "e1000,netdev=pt0,addr=0x10",
    ]  # fmt: skip
    run = run_qemu(qemu, results, (store, *extra), monitor)
    if run.hung or (run.dom0_crashed and not any(SCENARIO_STARTED in m for m in run.markers)):
        # a test bed gone silent (not even the runner's heartbeat: QEMU, Xen or the whole of dom0 stuck),
        # or a dom0 that crashed before any scenario ran, so before anything under test but the package's
        # install (an int3 in the kernel's own text patching under TCG was seen): worth one boot more;
        # the first one's serial log is kept, and the summary says so
        what = "hung" if run.hung else "crashed"
        print(f"the test bed {what}: booting once more", file=sys.stderr, flush=True)
        (results / "serial.log").rename(results / f"serial-dom0-{what}.log")
        run = run_qemu(qemu, results, (store, *extra), monitor)
        run.first_boot = what
    shutil.rmtree(sockets, ignore_errors=True)
    store.unlink()
    for path in extra:
        path.unlink()
    junit = results / "junit.xml"
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{Path(case.get('classname', '').replace('.', '/')).name}::{case.get('name')}"
            failure = case.find("failure") if case.find("failure") is not None else case.find("error")
            if failure is not None:
                run.outcomes[name] = "failed"
                run.messages[name] = (failure.get("message") or "") + "\n" + (failure.text or "")[-3000:]
            elif case.find("skipped") is not None:
                run.outcomes[name] = "skipped"
            else:
                run.outcomes[name] = "passed"
    return run


def run_qemu(qemu: list[str], results: Path, disks: tuple[Path, ...], monitor: Path | None = None) -> XenRun:
    """One boot of the test bed, its serial console in results/serial.log, its data disks fresh. The
    console is read by a thread of its own, so that a QEMU that says nothing more is still killed at its
    deadline or after XENDDD_IT_SILENCE; before that kill, QEMU's QMP `monitor` (if any) is asked where
    the vCPUs stand (results/hung-cpus.txt)."""
    for path, mib in zip(disks, (STORE_DISK_MIB, 8, 8), strict=True):
        with open(path, "wb") as disk:
            disk.truncate(mib << 20)
    started = time.monotonic()
    deadline = min(started + BOOT_TIMEOUT, started + SUITE_DEADLINE - time.time())
    run = XenRun(returncode=None)
    with (
        open(results / "serial.log", "w") as serial,
        subprocess.Popen(
            qemu,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as process,
    ):
        assert process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=pump, args=(process.stdout, lines), daemon=True)
        reader.start()
        heard = started
        while True:
            try:
                line = lines.get(timeout=max(0.0, min(deadline, heard + SILENCE) - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:  # QEMU closed its console: it ended
                break
            if line:
                heard = time.monotonic()
                elapsed = heard - started
                serial.write(f"[{elapsed:8.2f}] {line}")
                serial.flush()
                if "XENDDD-IT" in line:
                    marker = line.strip()
                    run.markers.append(f"[{elapsed:7.1f}s] {marker}")
                    print(f"[{elapsed:7.1f}s] {marker}", file=sys.stderr, flush=True)
                    done = re.search(r"DONE rc=(\S+)", line)
                    if done:
                        run.returncode = done.group(1)
                if "Hardware Dom0 crashed" in line:  # Xen runs on: QEMU would wait for the deadline
                    process.kill()
                    run.dom0_crashed = True
                    break
            # recorded, not raised: a second boot would wipe the results
            if time.monotonic() >= deadline:
                process.kill()
                run.timed_out = True
                break
            if time.monotonic() >= heard + SILENCE:
                at = time.monotonic() - started
                serial.write(f"[{at:8.2f}] (host: nothing for {SILENCE:.0f} s; QEMU killed)\n")
                if monitor is not None:
                    (results / "hung-cpus.txt").write_text(cpu_state(monitor))
                process.kill()
                run.hung = True
                break
        process.wait(60)
        reader.join(10)  # at QEMU's end of the console, before the pipe is closed under it
    run.seconds = time.monotonic() - started
    return run


def cpu_state(monitor: Path) -> str:
    """What QEMU's monitor says of a silent test bed's vCPUs: their registers (whether Xen's code or
    dom0's runs, and where), or that QEMU itself no longer answers — a stuck emulator, not a guest."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(monitor))
            stream = sock.makefile("rw")
            stream.readline()  # QMP's greeting
            said = []
            for command in ("", "info cpus", "info registers -a"):
                request: dict[str, object] = {"execute": "qmp_capabilities"}
                if command:
                    request = {"execute": "human-monitor-command", "arguments": {"command-line": command}}
                stream.write(json.dumps(request) + "\n")
                stream.flush()
                reply = json.loads(stream.readline())
                while "return" not in reply and "error" not in reply:  # an event came first
                    reply = json.loads(stream.readline())
                if command:
                    said.append(f"(qemu) {command}\n{reply.get('return', reply)}")
            return "\n".join(said) + "\n"
    except (OSError, ValueError) as exc:
        return f"QEMU's monitor did not answer ({exc}): QEMU itself is stuck, not only its guest\n"


def pump(console: IO[str], lines: queue.Queue[str | None]) -> None:
    """Hands QEMU's console to run_qemu line by line, then None when QEMU closed it."""
    for line in console:
        lines.put(line)
    lines.put(None)


def selection(scenarios: tuple[str, ...] | None) -> str:
    """The pytest -k expression of one boot: its share of the scenarios (None: all of its machine's), and
    within it what XENDDD_IT_SELECT asks for."""
    parts = [f"({' or '.join(scenarios)})"] if scenarios is not None else []
    parts += [f"({SELECT})"] if SELECT else []
    return " and ".join(parts)


class TestBed:
    """Builds the package once and boots each release and machine variant at most once per session, when
    its first scenario asks for it."""

    def __init__(self) -> None:
        self._images: dict[str, Path] = {}
        self._package: Path | None = None
        self._runs: dict[tuple[str, str], XenRun] = {}
        RESULTS.mkdir(parents=True, exist_ok=True)
        for old in RESULTS.iterdir():  # the previous run's results; the MTTR history is kept
            if old.is_dir():
                shutil.rmtree(old)
            elif old.name != HISTORY.name:
                old.unlink()

    def run(self, release: str, machine: str, scenarios: tuple[str, ...] | None) -> XenRun:
        key = (release, machine)
        if key not in self._runs:
            if self._package is None:  # dom0 installs it from the checkout, mounted over 9p
                self._package = build("build-deb")
            if release not in self._images:
                if shutil.which("qemu-system-x86_64") is None:
                    subprocess.run(
                        ["apt-get", "install", "-y", "-qq", "qemu-system-x86"], check=False, timeout=900
                    )
                self._images[release] = build("build-integration-image", "--release", release)
            if time.time() >= SUITE_DEADLINE:  # not booted: its scenarios fail as not finished in time
                self._runs[key] = XenRun(returncode=None, timed_out=True)
                return self._runs[key]
            run = boot(self._images[release], MACHINES[machine], release, selection(scenarios))
            (RESULTS / f"{machine}-{release}" / "summary.txt").write_text(
                f"{release} {machine}: boot+suite {run.seconds:.0f} s, dom0 rc={run.returncode}"
                + (" (killed at XENDDD_IT_TIMEOUT or XENDDD_IT_DEADLINE)" if run.timed_out else "")
                + (" (dom0 crashed)" if run.dom0_crashed else "")
                + (f" (hung: silent for {SILENCE:.0f} s)" if run.hung else "")
                + (f" (booted twice: the first boot {run.first_boot})" if run.first_boot else "")
                + "\n"
                + "\n".join(run.markers)
                + "\n"
            )
            write_mttr_table(release, machine)
            self._runs[key] = run
        return self._runs[key]


# the issues' phases of a cold recovery, from xenstored's access log (scenarios/conftest.instance_phases)
PHASES = ("to_new_domid", "dd_restart", "ready_to_recovered")
MTTR_COLUMNS = (
    "detached",
    "restarted",
    "promoted",
    "ready",
    "recovered",
    "observed",
    "mttr_log",
    "dd_ready",
    *PHASES,
)
MTTR_FIELDS = ("when", "commit", "release", "machine", "method", "path", "driver_domain", "how")
MTTR_HEADER = "\t".join((*MTTR_FIELDS, *MTTR_COLUMNS, "paused"))


def write_mttr_table(release: str, machine: str) -> None:
    """The phases every recovery scenario measured (results/<machine>-<release>/mttr.jsonl, written in
    dom0), as this run's table (results/mttr.tsv) and appended to a history kept across runs (results/
    mttr-history.tsv), to compare MTTR across changes and releases; and the comparison with the peers'
    method (results/comparison.txt), which the terminal summary prints."""
    source = RESULTS / f"{machine}-{release}" / "mttr.jsonl"
    if not source.exists():
        return
    commit = subprocess.run(
        ["git", "-C", str(TOP), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    entries = [json.loads(line) for line in source.read_text().splitlines()]
    rows = []
    for entry in entries:
        phases = [f"{entry[c]:.1f}" if isinstance(entry.get(c), float | int) else "-" for c in MTTR_COLUMNS]
        rows.append(
            "\t".join(
                (
                    time.strftime("%Y-%m-%dT%H:%M"),
                    commit or "?",
                    release,
                    machine,
                    entry.get("method", "xenddd"),
                    entry.get("path", "cold"),
                    entry["driver_domain"],
                    entry["how"],
                    *phases,
                    entry.get("paused", "-"),
                )
            )
        )
    for path in (RESULTS / "mttr.tsv", HISTORY):
        if path.exists() and path.read_text().split("\n", 1)[0] != MTTR_HEADER:
            path.rename(path.with_suffix(".old.tsv"))  # written by an older suite, other columns
        if not path.exists():
            path.write_text(MTTR_HEADER + "\n")
        with open(path, "a") as out:
            out.write("".join(row + "\n" for row in rows))
    comparison = compare_methods(entries)
    if comparison:
        with open(RESULTS / "comparison.txt", "a") as out:
            out.write(f"{release} {machine}: {comparison}\n")


def compare_methods(entries: list[dict[str, object]]) -> str | None:
    """Median MTTR of xenddd and of the peers' method over the same rounds (cold path), their ratio, and
    each one's overhead beyond the driver domain's own restart-to-ready; and, where the same boot also
    recovered by promoting a standby, its MTTR against that restart-to-ready and the peers' MTTR, and by
    restoring a saved instance, its MTTR against the peers' and xenddd's cold one. The
    MTTR is the outage in xenstored's log (`mttr_log`: the old instance's death to the last vif
    Connected) where every cold and standby round has it, else the one the scenario observed by
    polling; (l)'s in-place rounds are observed, and set against the peers' observed MTTR. The
    restart-to-ready is the issues' (from the new instance's creation to its readiness key, `dd_restart`)
    where every cold round has it, else the instance's uptime at ready (`dd_ready`, which leaves out its
    build in dom0, so the overheads carry it). The text says which of each."""
    cold = [e for e in entries if "dd_ready" in e and e.get("path", "cold") == "cold"]
    promoted = [e for e in entries if e.get("path") == "standby" and e.get("driver_domain") == "domnet"]
    in_place = [e for e in entries if e.get("path") == "inplace" and e.get("driver_domain") == "domnet"]
    restored = [e for e in entries if e.get("path") == "saved" and e.get("driver_domain") == "domnet"]
    compared = cold + promoted + restored  # (o)'s domstore: not the peers' domain
    mttr_key = "mttr_log" if compared and all("mttr_log" in e for e in compared) else "observed"
    key = "dd_restart" if cold and all("dd_restart" in e for e in cold) else "dd_ready"
    measure = "creation to readiness key" if key == "dd_restart" else "uptime at ready"

    def median(of: list[dict[str, object]], field: str = mttr_key) -> float:
        return statistics.median(float(e[field]) for e in of)  # type: ignore[arg-type]

    medians: dict[str, tuple[float, float]] = {}
    phases: list[str] = []  # each method's medians of the issues' three phases, where they were measured
    for method in ("peers", "xenddd"):
        mine = [e for e in cold if e.get("method") == method]
        if not mine:
            return None
        overhead = statistics.median(float(e[mttr_key]) - float(e[key]) for e in mine)  # type: ignore[arg-type]
        medians[method] = (median(mine), overhead)
        if key == "dd_restart":
            phases.append(f"{method} " + " / ".join(f"{median(mine, p):.1f}" for p in PHASES))
    (peer_mttr, peer_overhead), (our_mttr, our_overhead) = medians["peers"], medians["xenddd"]
    restart_to_ready = median(cold, key)
    outage = "death to last vif Connected in xenstored's log" if mttr_key == "mttr_log" else "observed"
    text = (
        f"median MTTR ({outage}) xenddd {our_mttr:.1f} s vs peers' method {peer_mttr:.1f} s "
        f"(ratio {our_mttr / peer_mttr:.2f}, goal <= 0.70); the DD's restart-to-ready ({measure}) "
        f"{restart_to_ready:.1f} s; overhead beyond it xenddd {our_overhead:.1f} s vs peers "
        f"{peer_overhead:.1f} s (ratio {our_overhead / peer_overhead:.2f}, goal <= 0.50)"
    )
    if phases:
        shown = ", ".join(phases)
        text += f"; medians of crash -> new domid / restart-to-ready / ready -> recovered: {shown}"
    if promoted:
        standby = median(promoted)
        text += (
            f"; standby MTTR {standby:.1f} s = {standby / restart_to_ready:.2f} of the DD's restart-to-ready "
            f"{restart_to_ready:.1f} s (goal <= 0.50) and {standby / peer_mttr:.2f} of the peers' MTTR "
            "(goal <= 0.35)"
        )
    if restored:  # (c)'s rounds restored from domnet's saved instance: its restore-to-ready for a boot's
        mttr = median(restored)
        text += (
            f"; saved-instance MTTR {mttr:.1f} s = {mttr / peer_mttr:.2f} of the peers' MTTR (goal <= 0.70), "
            f"{mttr / our_mttr:.2f} of xenddd's cold"
        )
        if all("dd_restart" in e for e in restored):
            text += f", its restore-to-ready {median(restored, 'dd_restart'):.1f} s"
    if in_place:  # (l) observes its MTTR by polling: against the peers' observed the same way
        mttr = median(in_place, "observed")
        peers_observed = median([e for e in cold if e.get("method") == "peers"], "observed")
        text += (
            f"; in-place MTTR (observed) {mttr:.1f} s = {mttr / peers_observed:.2f} of the peers' observed "
            f"MTTR (goal <= 0.70), {mttr / restart_to_ready:.2f} of the DD's restart-to-ready "
            f"{restart_to_ready:.1f} s"
        )
    return text


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    comparison = RESULTS / "comparison.txt"
    if comparison.exists():
        terminalreporter.write_sep("-", "recovery against the peers' method (same boot)")
        terminalreporter.write(comparison.read_text())


@pytest.fixture(scope="session")
def test_bed() -> Iterator[TestBed]:
    yield TestBed()
