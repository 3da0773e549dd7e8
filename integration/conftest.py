"""Host side of the integration suite: build (or reuse) the image, boot Xen once under QEMU, run every
scenario inside dom0, and hand each scenario's outcome to the host test of the same name."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

collect_ignore = ["scenarios", "image", "results"]  # scenarios run inside dom0, not on the host

TOP = Path(__file__).resolve().parents[1]
RESULTS = TOP / "integration/results"
BOOT_TIMEOUT = float(os.environ.get("XENDDD_IT_TIMEOUT", "2700"))
XEN_ARGS = (
    "dom0_mem=1024M,max:1024M dom0_max_vcpus=2 console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
    "noreboot xpti=false pv-l1tf=false spec-ctrl=no"
)
DOM0_ARGS = "root=/dev/vda rw console=hvc0 xenddd.it=dom0"


@dataclass
class XenRun:
    """What the one boot of the test bed produced."""

    returncode: str | None
    outcomes: dict[str, str] = field(default_factory=dict)  # scenario test id → passed/failed/skipped
    messages: dict[str, str] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)
    seconds: float = 0.0


def build_image() -> Path:
    result = subprocess.run(
        [str(TOP / "scripts/build-integration-image")],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"building the integration image failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


def boot(images: Path) -> XenRun:
    shutil.rmtree(RESULTS, ignore_errors=True)
    RESULTS.mkdir(parents=True)
    qemu = [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "Westmere", "-machine", "pc",
        "-m", "4096", "-smp", "2", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
        "-kernel", str(images / "xen"), "-append", XEN_ARGS,
        "-initrd", f"{images / 'vmlinuz'} {DOM0_ARGS},{images / 'initrd.img'}",
        "-drive", f"file={images / 'rootfs.img'},if=virtio,format=raw,snapshot=on",
        "-drive", f"file={images / 'rootfs.img'},if=virtio,format=raw,snapshot=on,file.locking=off",
        "-virtfs", f"local,path={TOP},mount_tag=xenddd,security_model=none,id=xenddd",
        "-nic", "none",
        # the NIC scenario (b) hides from dom0: an e1000 at a fixed address, on an isolated user network
        "-netdev", "user,id=pt0,restrict=on", "-device", "e1000,netdev=pt0,addr=0x10",
    ]  # fmt: skip
    started = time.monotonic()
    run = XenRun(returncode=None)
    with (
        open(RESULTS / "serial.log", "w") as serial,
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
        deadline = started + BOOT_TIMEOUT
        for line in process.stdout:
            elapsed = time.monotonic() - started
            serial.write(f"[{elapsed:8.2f}] {line}")
            serial.flush()
            if "XENDDD-IT" in line:
                marker = line.strip()
                run.markers.append(f"[{elapsed:7.1f}s] {marker}")
                print(f"[{elapsed:7.1f}s] {marker}", file=sys.stderr, flush=True)
                done = re.search(r"DONE rc=(\S+)", line)
                if done:
                    run.returncode = done.group(1)
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(
                    f"the Xen test bed did not finish within {BOOT_TIMEOUT:.0f} s (see {RESULTS}/serial.log)"
                )
        process.wait(60)
    run.seconds = time.monotonic() - started
    junit = RESULTS / "junit.xml"
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


@pytest.fixture(scope="session")
def xen_run() -> Iterator[XenRun]:
    if not Path("/usr/bin/qemu-system-x86_64").exists() and shutil.which("qemu-system-x86_64") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-system-x86"], check=False, timeout=900)
    images = build_image()
    run = boot(images)
    (RESULTS / "summary.txt").write_text(
        f"boot+suite {run.seconds:.0f} s, dom0 rc={run.returncode}\n" + "\n".join(run.markers) + "\n"
    )
    yield run
