"""The image's own `vif-bridge` (xenddd/image/vif-bridge.sh), run by busybox as `xl devd` runs it, against
a fake sysfs and fake `ip`/`xenstore-*` commands: Xen's contract for a bridged vif, and nothing changed
when the backend's nodes are not what dom0's toolstack writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")

BACKEND = "/local/domain/1/backend/vif/3/0"
FRONTEND = "/local/domain/3/device/vif/0"

# `ip` as far as the script uses it, acting on the fake sysfs: renames, bridge ports, the up flag
FAKE_IP = """
import os, sys
from pathlib import Path
net = Path(os.environ["XENDDD_DD_ROOT"]) / "sys/class/net"
args = sys.argv[1:]
batch = "-batch" in args
lines = sys.stdin.read().splitlines() if batch else [" ".join(args)]
with open(os.environ["FAKE_LOG"], "a") as log:
    for line in lines:
        log.write("ip " + line + "\\n")
failed = False
for line in lines:
    words = line.split()
    if words[:3] != ["link", "set", "dev"] or not (net / words[3]).exists():
        failed = failed or words[:2] != ["address", "flush"]
        continue
    dev, rest = net / words[3], words[4:]
    if rest[:1] == ["name"]:
        dev.rename(net / rest[1])
    elif rest[:1] == ["master"] and (net / rest[1] / "bridge").exists():
        (net / rest[1] / "brif" / words[3]).mkdir(parents=True)
    elif rest == ["up"]:
        (dev / "flags").write_text("0x1003\\n")
    elif rest == ["address", "fe:ff:ff:ff:ff:ff"] and os.environ.get("FAKE_REFUSE_MAC"):
        failed = True
    if failed and "-force" not in args:
        break
sys.exit(1 if failed else 0)
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

    def interface(self, name: str, bridge: bool = False, mtu: int = 1500) -> None:
        directory = self.root / "sys/class/net" / name
        directory.mkdir(parents=True)
        (directory / "flags").write_text("0x1002\n")
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

    def hotplug_log(self) -> str:
        return (self.root / "var/log/xen/xen-hotplug.log").read_text()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    (root / "var/log/xen").mkdir(parents=True)
    bin_dir.mkdir()
    fakes = {"ip": FAKE_IP, "xenstore-ls": FAKE_XENSTORE_LS, "xenstore-write": FAKE_XENSTORE_WRITE}
    for name, code in fakes.items():
        (bin_dir / name).write_text(f"#!{sys.executable}\n{code}")
        (bin_dir / name).chmod(0o755)
    host = Host(root, bin_dir, tmp_path / "calls", tmp_path / "nodes")
    host.interface("br0", bridge=True, mtu=9000)
    host.interface("vif3.0")
    return host


def test_online_puts_the_vif_on_the_named_bridge_with_its_mtu_then_says_connected(host: Host) -> None:
    host.interface("br1", bridge=True)
    host.backend(bridge="br1", mtu="1400")
    done = host.run()
    assert done.returncode == 0, host.hotplug_log()
    assert host.calls() == [
        "ip link set dev vif3.0 down",
        "ip link set dev vif3.0 address fe:ff:ff:ff:ff:ff",
        "ip address flush dev vif3.0",
        "ip link set dev vif3.0 mtu 1400",
        "ip link set dev vif3.0 master br1",
        "ip link set dev vif3.0 up",
        f"write {FRONTEND}/mtu 1400",
        f"write {BACKEND}/hotplug-status connected",
    ]


def test_without_bridge_or_mtu_nodes_the_first_bridge_and_its_mtu_are_taken(host: Host) -> None:
    host.backend()
    assert host.run().returncode == 0, host.hotplug_log()
    calls = host.calls()
    assert "ip link set dev vif3.0 master br0" in calls
    assert calls[-2:] == [f"write {FRONTEND}/mtu 9000", f"write {BACKEND}/hotplug-status connected"]


def test_a_vifname_renames_the_interface_first(host: Host) -> None:
    host.backend(bridge="br0", vifname="web0")
    assert host.run().returncode == 0, host.hotplug_log()
    calls = host.calls()
    assert calls[0] == "ip link set dev vif3.0 name web0"
    assert "ip link set dev web0 master br0" in calls
    assert (host.root / "sys/class/net/br0/brif/web0").is_dir()


def test_a_refused_mac_is_tolerated_as_xens_script_tolerates_it(host: Host) -> None:
    host.backend(bridge="br0")
    assert host.run(FAKE_REFUSE_MAC="1").returncode == 0, host.hotplug_log()
    assert host.calls()[-1] == f"write {BACKEND}/hotplug-status connected"


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
    assert "ip link set dev vif3.0 master br0" in host.calls()


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
    assert host.calls() == ["ip link set dev vif3.0 down", "ip link set dev vif3.0 nomaster"]


def test_a_device_models_tap_interface_is_left_alone(host: Host) -> None:
    host.backend(bridge="br0")
    assert host.run("add").returncode == 0
    assert host.calls() == []


def test_busyboxs_own_ip_applet_on_the_path_is_passed_over_for_iproute2s(host: Host, tmp_path: Path) -> None:
    """In the image, busybox's applets are on PATH too; theirs has no -batch."""
    assert BUSYBOX is not None
    applets = tmp_path / "applets"
    applets.mkdir()
    (applets / "ip").symlink_to(BUSYBOX)
    host.backend(bridge="br0")
    done = host.run(PATH=f"{applets}:{host.bin}:/usr/bin:/bin")
    assert done.returncode == 0, host.hotplug_log()
    assert "ip link set dev vif3.0 master br0" in host.calls()
