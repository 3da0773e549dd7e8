"""The image's init after a restore (`dd-init.sh --follow-restores`), run by busybox with fake `xenstore-*`
and `xl` commands: a domain saved and restored runs as another domid, where `xl devd` must be started again
(the old one watches the old domid's backends) and data/ready written again in the new home."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from tests.image.fake_commands import install

BUSYBOX = shutil.which("busybox")
SLEEP = shutil.which("sleep")
pytestmark = pytest.mark.skipif(BUSYBOX is None or SLEEP is None, reason="busybox or sleep is not installed")

# the watch fires once when set, then once per restore, when the kernel sets it again in the new home
FAKE_XENSTORE_WATCH = """
import os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("watch " + " ".join(sys.argv[1:]) + "\\n")
for _ in range(int(os.environ["FAKE_EVENTS"])):
    print("domid", flush=True)
"""
# the domid as each read finds it, in the order of the reads: one before the watch, one per event
FAKE_XENSTORE_READ = """
import os, sys
assert sys.argv[1:] == ["domid"], sys.argv
path = os.environ["FAKE_DOMIDS"]
domids = open(path).read().split()
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(f"read domid = {domids[0]}\\n")
print(domids[0])
open(path, "w").write(" ".join(domids[1:] or domids))
"""
FAKE_SLEEP = f"""
import os, sys
with open(os.environ["FAKE_SLEEPS"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
os.execv("{SLEEP}", ["sleep", *sys.argv[1:]])
"""
FAKE_XENSTORE_WRITE = """
import os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("write " + " ".join(sys.argv[1:]) + "\\n")
"""
FAKE_XENSTORE_RM = """
import os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("rm " + " ".join(sys.argv[1:]) + "\\n")
"""
# `xl devd -p PIDFILE` as xl runs it: a daemon left behind, its pid written over the file's first bytes
FAKE_XL = f"""
import os, subprocess, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("xl " + " ".join(sys.argv[1:]) + "\\n")
assert sys.argv[1:3] == ["devd", "-p"], sys.argv
def alive(pid):
    try:
        return open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
earlier = [os.environ["FAKE_BOOT_DEVD"], *open(os.environ["FAKE_DEVDS"]).read().split()]
with open(os.environ["FAKE_LOG"], "a") as log:  # the xl devd it replaces, still serving meanwhile?
    log.write(f"devds running: {{sum(alive(p) for p in earlier if p != 'failed')}}\\n")
failures = int(os.environ.get("FAKE_DEVD_FAILURES", "0"))
started = open(os.environ["FAKE_DEVDS"]).read().split()
if len(started) < failures:
    open(os.environ["FAKE_DEVDS"], "a").write("failed\\n")
    sys.exit(1)
daemon = subprocess.Popen(
    ["{SLEEP}", "300"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
)
fd = os.open(sys.argv[3], os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, f"{{daemon.pid}}\\n".encode())
os.close(fd)
open(os.environ["FAKE_DEVDS"], "a").write(f"{{daemon.pid}}\\n")
"""


@dataclass
class RestoredDomain:
    bin: Path
    run: Path
    log: Path
    domids: Path
    devds: Path
    sleeps: Path
    boot_devd: subprocess.Popen[bytes]

    def follow(self, domids: list[int], kinds: str = "network", failures: int = 0) -> list[str]:
        """The watcher over `domids` (the first read before the watch, then one per event); the console."""
        assert BUSYBOX is not None
        self.domids.write_text(" ".join(map(str, domids)))
        init = resources.files("xenddd.image").joinpath("dd-init.sh")
        with resources.as_file(init) as path:
            done = subprocess.run(
                [BUSYBOX, "sh", str(path), "--follow-restores", str(self.run)],
                env={
                    "PATH": f"{self.bin}:/usr/bin:/bin",
                    "XENDDD_DD_KINDS": kinds,
                    "FAKE_LOG": str(self.log),
                    "FAKE_EVENTS": str(len(domids) - 1),
                    "FAKE_DOMIDS": str(self.domids),
                    "FAKE_DEVDS": str(self.devds),
                    "FAKE_DEVD_FAILURES": str(failures),
                    "FAKE_SLEEPS": str(self.sleeps),
                    "FAKE_BOOT_DEVD": str(self.boot_devd.pid),
                },
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def started_devds(self) -> list[str]:
        return self.devds.read_text().split()


def ended(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet (what the init's PID 1 leaves until it waits)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def domain(tmp_path: Path) -> Iterator[RestoredDomain]:
    assert SLEEP is not None
    bin_dir, run = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    run.mkdir()
    install(
        {
            bin_dir / "xenstore-watch": FAKE_XENSTORE_WATCH,
            bin_dir / "xenstore-read": FAKE_XENSTORE_READ,
            bin_dir / "xenstore-write": FAKE_XENSTORE_WRITE,
            bin_dir / "xenstore-rm": FAKE_XENSTORE_RM,
            bin_dir / "xl": FAKE_XL,
            bin_dir / "sleep": FAKE_SLEEP,
        }
    )
    # the boot's xl devd, this test's child: ended, it stays a zombie until waited for, as under PID 1
    boot_devd = subprocess.Popen([SLEEP, "300"], stdin=subprocess.DEVNULL)
    (run / "xl-devd.pid").write_text(f"{boot_devd.pid}\n")
    (tmp_path / "devds").write_text("")
    domain = RestoredDomain(
        bin_dir,
        run,
        tmp_path / "calls",
        tmp_path / "domids",
        tmp_path / "devds",
        tmp_path / "sleeps",
        boot_devd,
    )
    try:
        yield domain
    finally:
        boot_devd.kill()
        boot_devd.wait()
        for pid in domain.started_devds():
            if pid != "failed" and not ended(int(pid)):
                os.kill(int(pid), signal.SIGKILL)


@pytest.mark.parametrize(
    ("kinds", "ready_write"),
    [
        ("network", "write data/ready 1"),
        ("network,block", "write data/feature-block-wait 1 data/ready 1"),
    ],
)
def test_each_restore_writes_the_readiness_key_then_starts_xl_devd_then_ends_the_old_xl_devd(
    domain: RestoredDomain, kinds: str, ready_write: str
) -> None:
    """The key first: xl devd's start is seconds of the outage under emulation, and it serves the
    backends it finds waiting; the old one ends only once the new one runs."""
    console = domain.follow([3, 3, 7, 9], kinds=kinds)
    devd = f"xl devd -p {domain.run}/xl-devd.pid"
    assert domain.calls() == [
        "read domid = 3",  # at boot, ready
        "watch domid",
        "read domid = 3",  # the watch being set: nothing to do
        "read domid = 7",
        ready_write,
        devd,
        "devds running: 1",  # the boot's, ended only once the new one started
        "read domid = 9",  # restored again
        ready_write,
        devd,
        "devds running: 1",
    ]
    assert [re.sub(r"uptime=[0-9.]+$", "uptime=U", line) for line in console] == [
        "xenddd-dd: restored as domid 7 (was 3): restarting xl devd",
        "xenddd-dd: ready domid=7 uptime=U",
        "xenddd-dd: restored as domid 9 (was 7): restarting xl devd",
        "xenddd-dd: ready domid=9 uptime=U",
        "xenddd-dd: the watch on domid ended: a restore would not be answered",
    ]
    first, second = map(int, domain.started_devds())
    assert domain.boot_devd.wait(timeout=5) == -signal.SIGTERM
    assert ended(first) and not ended(second)
    assert (domain.run / "xl-devd.pid").read_text() == f"{second}\n"


def test_an_old_xl_devd_that_ended_but_is_not_reaped_yet_is_not_waited_for(domain: RestoredDomain) -> None:
    """The boot's xl devd is PID 1's child, which reaps it only when it next waits for a process: a zombie
    meanwhile, which `kill -0` still finds. Waiting for it to go would add the whole bound (5 s) to every
    restore; here the watcher sleeps a round at most while the signal lands."""
    domain.follow([3, 3, 7])
    assert Path(f"/proc/{domain.boot_devd.pid}").exists()  # a zombie, not reaped yet
    assert domain.boot_devd.wait(timeout=5) == -signal.SIGTERM
    sleeps = domain.sleeps.read_text().splitlines() if domain.sleeps.exists() else []
    assert len(sleeps) <= 2, sleeps


def test_the_watch_being_set_with_the_domid_of_the_boot_changes_nothing(domain: RestoredDomain) -> None:
    assert domain.follow([3, 3]) == ["xenddd-dd: the watch on domid ended: a restore would not be answered"]
    assert domain.calls() == ["read domid = 3", "watch domid", "read domid = 3"]
    assert domain.boot_devd.poll() is None


def test_an_xl_devd_that_does_not_start_after_a_restore_takes_the_key_back_and_writes_ready_error(
    domain: RestoredDomain,
) -> None:
    """The watcher is not PID 1: it reports, leaves no data/ready in that home, and answers the next
    restore (a new home, where another start may succeed)."""
    console = domain.follow([3, 3, 7, 9], failures=1)
    devd = f"xl devd -p {domain.run}/xl-devd.pid"
    why = "xl devd did not start after a restore as domid 7 (see /var/log/xen/xldevd.log)"
    assert domain.calls() == [
        "read domid = 3",
        "watch domid",
        "read domid = 3",
        "read domid = 7",
        "write data/ready 1",
        devd,
        "devds running: 1",
        "rm data/ready",
        f"write data/ready-error {why}",
        "read domid = 9",
        "write data/ready 1",
        devd,
        "devds running: 0",  # the boot's ended after the failed start; that start left none
    ]
    assert [re.sub(r"uptime=[0-9.]+$", "uptime=U", line) for line in console[:3]] == [
        "xenddd-dd: restored as domid 7 (was 3): restarting xl devd",
        "xenddd-dd: ready domid=7 uptime=U",
        f"xenddd-dd: cannot start: {why}",
    ]
    assert domain.boot_devd.wait(timeout=5) == -signal.SIGTERM
    assert domain.started_devds()[0] == "failed"


def test_a_start_that_fails_leaves_no_pid_for_the_next_restore_to_signal(domain: RestoredDomain) -> None:
    """The old xl devd's pid would name another process by the next restore, maybe one of the domain's own."""
    domain.follow([3, 3, 7], failures=1)
    assert domain.boot_devd.wait(timeout=5) == -signal.SIGTERM
    assert (domain.run / "xl-devd.pid").read_text() == ""
