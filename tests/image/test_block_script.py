"""The image's own `block` (xenddd/image/block.sh), run by busybox as `xl devd` runs it in a storage
domain, against a fake root (its /dev, /proc/mounts, Xen's script beside it) and fake `xenstore-*`
commands: Xen's contract for a disk that is one of the domain's block devices, the wait for one that is
not there yet, and what it hands to Xen's script."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from tests.image.fake_commands import install

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(
    BUSYBOX is None or shutil.which("flock") is None, reason="busybox or flock is not installed"
)

XENBUS_PATH = "/local/domain/1/backend/vbd/3/51728"
XVDB = os.makedev(202, 16)  # physical-device "ca:10"

FAKE_XENSTORE_LS = """
import os, sys
assert sys.argv[1:] == ["-f", "backend/vbd"], sys.argv
print(open(os.environ["FAKE_NODES"]).read(), end="")
"""
FAKE_XENSTORE_WRITE = """
import os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("write " + " ".join(sys.argv[1:]) + "\\n")
"""
FAKE_XENSTORE_READ = """
import json, os, sys
value = json.load(open(os.environ["FAKE_READABLE"])).get(sys.argv[1])
if value is None:
    sys.exit(1)
print(value)
"""
FAKE_XEN_SCRIPT = """#!/bin/sh
echo "xen block $*" >> "$FAKE_LOG"
"""


@dataclass
class Domain:
    root: Path
    bin: Path
    log: Path
    nodes: Path
    readable: Path

    def device(self, path: str, numbers: int = XVDB) -> None:
        node = self.root / path.lstrip("/")
        node.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(node, stat.S_IFBLK | 0o600, numbers)

    def backends(self, **devices: dict[str, str]) -> None:
        """Each device "FRONTEND_DEVID" (e.g. "3_51728") with its nodes, as `xenstore-ls -f` lists them."""
        lines = [
            f'backend/vbd/{key.replace("_", "/")}/{node} = "{value}"'
            for key, nodes in devices.items()
            for node, value in nodes.items()
        ]
        self.nodes.write_text("\n".join(lines) + "\n")

    def mounts(self, *lines: str) -> None:
        (self.root / "proc/mounts").write_text("".join(f"{line}\n" for line in lines))

    def run(self, command: str = "add", dom0: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
        """`dom0`: as the Debian package installs it for dom0 (debian/rules): bash, Xen's own script
        named by `xen_block` on the first line (here the root's etc/xen/scripts/block)."""
        assert BUSYBOX is not None
        script = resources.files("xenddd.image").joinpath("block.sh")
        with resources.as_file(script) as path:
            shell = [BUSYBOX, "sh", str(path)]
            if dom0:
                installed = self.root.parent / "dom0-block"
                xen_block = self.root / "etc/xen/scripts/block"
                installed.write_text(f"#!/bin/bash\nxen_block={xen_block}\n" + path.read_text())
                shell = ["bash", str(installed)]
            return subprocess.run(
                [*shell, command],
                env={
                    "PATH": f"{self.bin}:/usr/bin:/bin",
                    "XENDDD_DD_ROOT": str(self.root),
                    "XENBUS_PATH": XENBUS_PATH,
                    "XENBUS_TYPE": "vbd",
                    "XENBUS_BASE_PATH": "backend",
                    "FAKE_LOG": str(self.log),
                    "FAKE_NODES": str(self.nodes),
                    "FAKE_READABLE": str(self.readable),
                    **env,
                },
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def hotplug_log(self) -> str:
        return (self.root / "var/log/xen/xen-hotplug.log").read_text()


def disk(params: str = "/dev/xvdb", mode: str = "w", **more: str) -> dict[str, str]:
    return {"params": params, "mode": mode, "type": "phy", "frontend-id": "3", "state": "2", **more}


CONNECTED = f"write {XENBUS_PATH}/physical-device ca:10 {XENBUS_PATH}/physical-device-path /dev/xvdb "
CONNECTED += f"{XENBUS_PATH}/hotplug-status connected"


@pytest.fixture
def dom(tmp_path: Path) -> Domain:
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    for directory in ("var/log/xen", "proc", "dev", "etc/xen/scripts"):
        (root / directory).mkdir(parents=True)
    bin_dir.mkdir()
    fakes = {
        bin_dir / "xenstore-ls": FAKE_XENSTORE_LS,
        bin_dir / "xenstore-write": FAKE_XENSTORE_WRITE,
        bin_dir / "xenstore-read": FAKE_XENSTORE_READ,
    }
    install(fakes)
    xen = root / "etc/xen/scripts/block.xen"
    xen.write_text(FAKE_XEN_SCRIPT)
    xen.chmod(0o755)
    domain = Domain(root, bin_dir, tmp_path / "calls", tmp_path / "nodes", tmp_path / "readable")
    domain.readable.write_text("{}")
    domain.mounts("proc /proc proc rw 0 0", "dev /dev devtmpfs rw 0 0")
    try:
        domain.device("/dev/probe")
    except PermissionError:
        pytest.skip("making a block device node needs CAP_MKNOD")
    (root / "dev/probe").unlink()
    return domain


def test_a_block_device_of_the_domain_is_served_in_one_write_under_xens_lock(dom: Domain) -> None:
    dom.device("/dev/xvdb")
    dom.backends(**{"3_51728": disk()})
    result = dom.run()
    assert result.returncode == 0, result.stderr
    assert dom.calls() == [CONNECTED]
    assert "/dev/xvdb (ca:10, mode w) connected" in dom.hotplug_log()


def test_the_device_waits_for_xens_block_lock(dom: Domain) -> None:
    """Another hotplug script holding the lock (Xen's, which removes the file when it releases it) holds
    this one until then; the lock is free again afterwards."""
    dom.device("/dev/xvdb")
    dom.backends(**{"3_51728": disk()})
    lockfile = dom.root / "var/lock/xen-hotplug/block"
    lockfile.parent.mkdir(parents=True)
    with open(lockfile, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        running = threading.Thread(target=dom.run)
        running.start()
        time.sleep(1.0)
        assert dom.calls() == []
        lockfile.unlink()  # Xen's release_lock
    running.join(30)
    assert dom.calls() == [CONNECTED]
    with open(lockfile) as again:
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_target_that_appears_later_is_waited_for_then_served(dom: Domain) -> None:
    dom.backends(**{"3_51728": disk()})
    appear = threading.Timer(0.8, dom.device, args=("/dev/xvdb",))
    appear.start()
    started = time.monotonic()
    result = dom.run()
    appear.join()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 0.8
    assert dom.calls() == [CONNECTED]


def test_a_target_that_never_appears_fails_the_device_with_the_reason(dom: Domain) -> None:
    dom.backends(**{"3_51728": disk()})
    result = dom.run(XENDDD_BLOCK_WAIT="1")
    assert result.returncode == 1
    error = "/dev/xvdb does not exist (waited 1 s)"
    assert dom.calls() == [f"write {XENBUS_PATH}/hotplug-error {error} {XENBUS_PATH}/hotplug-status error"]


def test_a_link_to_a_block_device_is_served_as_the_device_it_names(dom: Domain) -> None:
    dom.device("/dev/xvdb")
    (dom.root / "dev/disk").mkdir()
    (dom.root / "dev/disk/data").symlink_to("../xvdb")
    dom.backends(**{"3_51728": disk("/dev/disk/data")})
    assert dom.run().returncode == 0
    assert dom.calls() == [CONNECTED]


def test_a_device_already_served_is_left_alone(dom: Domain) -> None:
    dom.device("/dev/xvdb")
    dom.backends(**{"3_51728": disk(**{"physical-device": "ca:10"})})
    assert dom.run().returncode == 0
    assert dom.calls() == []


@pytest.mark.parametrize(
    ("params", "kind"),
    [("/srv/disk.img", "phy"), ("/dev/xvdb", "qcow2")],
    ids=["a file", "another type"],
)
def test_what_is_not_a_block_device_of_the_domain_goes_to_xens_script(
    dom: Domain, params: str, kind: str
) -> None:
    dom.device("/dev/xvdb")
    dom.backends(**{"3_51728": {**disk(params), "type": kind}})
    for command in ("add", "remove"):
        assert dom.run(command).returncode == 0
    assert dom.calls() == ["xen block add", "xen block remove"]


def test_in_dom0_a_device_is_served_and_anything_else_goes_to_xens_block(dom: Domain) -> None:
    xen = dom.root / "etc/xen/scripts/block"
    xen.write_text(FAKE_XEN_SCRIPT.replace("xen block", "dom0's xen block"))
    xen.chmod(0o755)
    dom.device("/dev/xvdb")
    dom.backends(**{"3_51728": disk()})
    assert dom.run(dom0=True).returncode == 0
    dom.backends(**{"3_51728": disk("/srv/disk.img")})
    assert dom.run(dom0=True).returncode == 0
    assert dom.calls() == [CONNECTED, "dom0's xen block add"]


def test_removing_a_block_device_of_the_domain_has_nothing_to_undo(dom: Domain) -> None:
    dom.device("/dev/xvdb")
    dom.backends(**{"3_51728": disk(**{"physical-device": "ca:10"})})
    assert dom.run("remove").returncode == 0
    assert dom.calls() == []


def test_a_target_mounted_in_the_domain_is_refused_writable_and_shared_read_only(dom: Domain) -> None:
    dom.device("/dev/xvdb")
    dom.mounts("/dev/xvdb /mnt ext4 ro,relatime 0 0")
    dom.backends(**{"3_51728": disk(mode="w")})
    assert dom.run().returncode == 1
    assert dom.calls()[-1].endswith(
        "/dev/xvdb is mounted in this domain " + f"{XENBUS_PATH}/hotplug-status error"
    )
    dom.backends(**{"3_51728": disk(mode="r")})
    assert dom.run().returncode == 0
    assert dom.calls()[-1] == CONNECTED.replace("mode w", "mode r")
    dom.backends(**{"3_51728": disk(mode="w!")})  # `!`: no checks, as in Xen's script
    assert dom.run().returncode == 0


def test_a_target_another_guest_uses_is_refused_unless_both_only_read_it(dom: Domain) -> None:
    dom.device("/dev/xvdb")
    dom.readable.write_text(json.dumps({"/local/domain/3/vm": "/vm/aaa", "/local/domain/4/vm": "/vm/bbb"}))
    other = disk(**{"physical-device": "ca:10"})
    dom.backends(**{"3_51728": disk(mode="w"), "4_51712": other})
    assert dom.run().returncode == 1
    assert "is in use by another guest's disk (4/51712)" in dom.calls()[-1]
    dom.backends(**{"3_51728": disk(mode="r"), "4_51712": {**other, "mode": "r"}})
    assert dom.run().returncode == 0 and dom.calls()[-1].startswith(f"write {XENBUS_PATH}/physical-device")
    dom.backends(**{"3_51728": disk(mode="r"), "4_51712": other})
    assert dom.run().returncode == 1


def test_a_guest_whose_vm_this_domain_cannot_read_counts_as_the_same_as_xens_script_counts_it(
    dom: Domain,
) -> None:
    dom.device("/dev/xvdb")
    dom.backends(**{"3_51728": disk(mode="w"), "4_51712": disk(**{"physical-device": "ca:10"})})
    assert dom.run().returncode == 0
    assert dom.calls() == [CONNECTED]


@pytest.mark.parametrize("path", ["/local/domain/1/backend/vbd/x/51728", "/local/domain/1/backend/vbd/3"])
def test_a_backend_path_that_is_not_one_fails_and_serves_nothing(dom: Domain, path: str) -> None:
    dom.device("/dev/xvdb")
    dom.backends(**{"3_51728": disk()})
    result = dom.run(XENBUS_PATH=path)
    assert result.returncode == 1
    assert dom.calls() == [f"write {path}/hotplug-error bad backend path: {path} {path}/hotplug-status error"]
