"""The image's own `vif-bridge` (xenddd/image/vif-bridge.sh), run by busybox as `xl devd` runs it, against
a fake sysfs and fake `ip`/`xenstore-*` commands: Xen's contract for a bridged vif, and nothing changed
when the backend's nodes are not what dom0's toolstack writes."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from tests.image.fake_commands import install

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")

BACKEND = "/local/domain/1/backend/vif/3/0"
FRONTEND = "/local/domain/3/device/vif/0"

# busybox's `ip` as far as the script uses it, acting on the fake sysfs: renames, bridge ports, the up flag
FAKE_BUSYBOX = """
import os, sys
from pathlib import Path
net = Path(os.environ["XENDDD_DD_ROOT"]) / "sys/class/net"
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[:4] == ["ip", "address", "flush", "dev"]:
    sys.exit(0 if (net / args[4]).exists() else 1)
if args[:4] != ["ip", "link", "set", "dev"] or not (net / args[4]).exists():
    sys.exit(1)
dev, rest = net / args[4], args[5:]
while rest:
    word, rest = rest[0], rest[1:]
    if word == "name":
        dev.rename(net / rest[0])
    elif word == "address":  # refused while up, as netback refuses it
        if os.environ.get("FAKE_REFUSE_MAC") or int((dev / "flags").read_text(), 16) & 1:
            sys.exit(1)
        (dev / "address").write_text(rest[0] + "\\n")
    elif word == "master":
        if not (net / rest[0] / "bridge").exists():
            sys.exit(1)
        (net / rest[0] / "brif" / dev.name).mkdir(parents=True)
    elif word in ("up", "down"):
        flags = int((dev / "flags").read_text(), 16)
        (dev / "flags").write_text(hex(flags | 1 if word == "up" else flags & ~1) + "\\n")
    if word in ("name", "address", "master", "mtu"):
        rest = rest[1:]
"""
FAKE_XENSTORE_LS = """
import os, sys
print(open(os.environ["FAKE_NODES"]).read(), end="")
"""
FAKE_XENSTORE_WRITE = """
import os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    pairs = sys.argv[1:]
    for path, value in zip(pairs[::2], pairs[1::2]):
        log.write(f"write {path} {value}\\n")
"""


@dataclass
class Host:
    root: Path
    bin: Path
    log: Path
    nodes: Path

    def interface(self, name: str, bridge: bool = False, mtu: int = 1500, up: bool = False) -> None:
        directory = self.root / "sys/class/net" / name
        directory.mkdir(parents=True)
        (directory / "flags").write_text("0x1003\n" if up else "0x1002\n")
        (directory / "mtu").write_text(f"{mtu}\n")
        if bridge:
            (directory / "bridge").mkdir()

    def backend(self, **nodes: str) -> None:
        every = {"frontend": FRONTEND, "frontend-id": "3", "state": "2", "script": "vif-bridge", **nodes}
        lines = [f'{BACKEND}/{key} = "{value}"' for key, value in every.items()]
        self.nodes.write_text("\n".join(lines) + "\n")

    def run(self, command: str = "online", **env: str) -> subprocess.CompletedProcess[str]:
        assert BUSYBOX is not None
        script = resources.files("xenddd.image").joinpath("vif-bridge.sh")
        with resources.as_file(script) as path:
            return subprocess.run(
                [BUSYBOX, "sh", str(path), command, "type_if=vif"],
                env={
                    "PATH": f"{self.bin}:/usr/bin:/bin",
                    "XENDDD_DD_ROOT": str(self.root),
                    "XENBUS_PATH": BACKEND,
                    "vif": "vif3.0",
                    "FAKE_LOG": str(self.log),
                    "FAKE_NODES": str(self.nodes),
                    **env,
                },
                capture_output=True,
                text=True,
                check=False,
            )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def sysfs(self, path: str) -> str:
        return (self.root / "sys/class/net" / path).read_text().strip()

    def hotplug_log(self) -> str:
        return (self.root / "var/log/xen/xen-hotplug.log").read_text()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    (root / "var/log/xen").mkdir(parents=True)
    bin_dir.mkdir()
    (root / "usr/bin").mkdir(parents=True)
    fakes = {
        bin_dir / "xenstore-ls": FAKE_XENSTORE_LS,
        bin_dir / "xenstore-write": FAKE_XENSTORE_WRITE,
        root / "usr/bin/busybox": FAKE_BUSYBOX,
    }
    install(fakes)
    host = Host(root, bin_dir, tmp_path / "calls", tmp_path / "nodes")
    host.interface("br0", bridge=True, mtu=9000)
    host.interface("vif3.0")
    return host


def test_online_puts_the_vif_on_the_named_bridge_with_its_mtu_then_says_connected(host: Host) -> None:
    host.interface("br1", bridge=True)
    host.backend(bridge="br1", mtu="1400")
    done = host.run()
    assert done.returncode == 0, host.hotplug_log()
    assert host.calls() == [  # a vif never up has no address: nothing to flush
        "ip link set dev vif3.0 address fe:ff:ff:ff:ff:ff master br1 up",
        f"write {FRONTEND}/mtu 1400",
        f"write {BACKEND}/hotplug-status connected",
    ]
    assert host.sysfs("vif3.0/mtu") == "1400"
    assert host.sysfs("vif3.0/address") == "fe:ff:ff:ff:ff:ff"
    assert (host.root / "sys/class/net/br1/brif/vif3.0").is_dir()
    assert "vif3.0 up on bridge br1 with MTU 1400, connected (uptime " in host.hotplug_log()


def test_an_interface_that_is_up_goes_down_through_sysfs_and_loses_its_addresses_before_its_mac_changes(
    host: Host,
) -> None:
    shutil.rmtree(host.root / "sys/class/net/vif3.0")
    host.interface("vif3.0", up=True)
    host.backend(bridge="br0")
    assert host.run().returncode == 0, host.hotplug_log()
    assert host.sysfs("vif3.0/address") == "fe:ff:ff:ff:ff:ff"
    assert host.sysfs("vif3.0/flags") == "0x1003"
    assert host.calls()[0] == "ip address flush dev vif3.0"  # what it carried while up goes


def test_without_bridge_or_mtu_nodes_the_first_bridge_and_its_mtu_are_taken(host: Host) -> None:
    host.backend()
    assert host.run().returncode == 0, host.hotplug_log()
    calls = host.calls()
    assert "ip link set dev vif3.0 address fe:ff:ff:ff:ff:ff master br0 up" in calls
    assert calls[-2:] == [f"write {FRONTEND}/mtu 9000", f"write {BACKEND}/hotplug-status connected"]


def test_a_vifname_renames_the_interface_first(host: Host) -> None:
    host.backend(bridge="br0", vifname="web0")
    assert host.run().returncode == 0, host.hotplug_log()
    calls = host.calls()
    assert calls[0] == "ip link set dev vif3.0 name web0"
    assert "ip link set dev web0 address fe:ff:ff:ff:ff:ff master br0 up" in calls
    assert (host.root / "sys/class/net/br0/brif/web0").is_dir()


def test_a_refused_mac_is_tolerated_as_xens_script_tolerates_it(host: Host) -> None:
    host.backend(bridge="br0")
    assert host.run(FAKE_REFUSE_MAC="1").returncode == 0, host.hotplug_log()
    assert "ip link set dev vif3.0 master br0 up" in host.calls()
    assert host.calls()[-1] == f"write {BACKEND}/hotplug-status connected"
    assert (host.root / "sys/class/net/br0/brif/vif3.0").is_dir()


@pytest.mark.parametrize(
    ("nodes", "why"),
    [
        ({"bridge": "br9"}, "Could not find bridge device br9"),
        ({"bridge": "br0;reboot"}, "Could not find bridge device br0;reboot"),
        ({"bridge": "br0", "vifname": "$(reboot)"}, "bad vifname"),
        ({"bridge": "br0", "mtu": "1500 up"}, "bad MTU"),
        ({"bridge": "br0", "frontend": "/local/domain/4/device/vbd/0"}, "bad frontend path"),
        ({"bridge": "br0", "frontend": "/local/domain/../device/vif/0"}, "bad frontend path"),
    ],
)
def test_a_backend_node_that_is_not_what_libxl_writes_fails_the_device_and_changes_nothing(
    host: Host, nodes: dict[str, str], why: str
) -> None:
    host.backend(**nodes)
    done = host.run()
    assert done.returncode == 1
    calls = host.calls()
    assert not [c for c in calls if c.startswith("ip ")]
    assert calls[0].startswith(f"write {BACKEND}/hotplug-error ") and why in calls[0]
    assert calls[1] == f"write {BACKEND}/hotplug-status error"
    assert why in host.hotplug_log()


def test_a_deeper_node_named_like_one_of_the_backends_is_not_read(host: Host) -> None:
    host.backend(bridge="br0")
    with host.nodes.open("a") as nodes:
        nodes.write(f'{BACKEND}/queue-0/bridge = "br9"\n')
    assert host.run().returncode == 0, host.hotplug_log()
    assert "ip link set dev vif3.0 address fe:ff:ff:ff:ff:ff master br0 up" in host.calls()


def test_a_vif_that_does_not_end_up_on_the_bridge_fails_with_what_ip_said(host: Host) -> None:
    host.backend(bridge="br0")
    (host.root / "sys/class/net/br0/bridge").rmdir()  # `master` refused: no longer a bridge
    done = host.run()
    assert done.returncode == 1
    assert host.calls()[-1] == f"write {BACKEND}/hotplug-status error"
    assert "vif3.0 is not up on bridge br0" in host.hotplug_log()


def test_offline_takes_the_vif_off_its_bridge_and_writes_no_status(host: Host) -> None:
    host.backend(bridge="br0")
    assert host.run("offline").returncode == 0, host.hotplug_log()
    assert host.calls() == ["ip link set dev vif3.0 down nomaster"]


def test_a_device_models_tap_interface_is_left_alone(host: Host) -> None:
    host.backend(bridge="br0")
    assert host.run("add").returncode == 0
    assert host.calls() == []
