"""The driver domain's `xenddd.*` words, parsed by the image's init and by its Python twin on one table of
cases, and what `xenddd image check` finds about the driver domains that boot an image."""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.image.fake_root import FakeRoot
from xenddd.config.loader import load_config
from xenddd.errors import InputError
from xenddd.image.builder import BuildRequest, build, write
from xenddd.image.check import check, drivers_for
from xenddd.image.cmdline import parse
from xenddd.image.manifest import Manifest
from xenddd.image.root_tree import RootTree

GOOD = [
    "console=hvc0",
    "console=hvc0 xenddd.bridge=br0 xenddd.port=br0,vif xenddd.console_logs=1",
    "xenddd.bridge=br0 xenddd.bridge=br-lan.1 xenddd.port=br0,mac=00:16:3e:00:00:01"
    " xenddd.port=br-lan.1,if=eth1",
    "xenddd.bridge=br0 xenddd.port=br0,pci=0000:00:05.0",
    "xenddd.ip=eth0,10.0.0.2/24 xenddd.gw=10.0.0.1 xenddd.forward=1 xenddd.modules=tg3,bnx2",
    "xenddd.ip=eth0,10.0.0.2/24 xenddd.ip=eth1,192.168.1.1/32 xenddd.gw=10.0.0.1 xenddd.gw=10.0.0.254",
]
BAD = [
    "xenddd.port=br0,vif",  # no bridge declared before it
    "xenddd.port=br0,vif xenddd.bridge=br0",
    "xenddd.bridge=a-bridge-name-too-long",
    "xenddd.bridge=br0 xenddd.port=br0,mac=00:16:3E:00:00:01",
    "xenddd.bridge=br0 xenddd.port=br0,pci=00:05.0",
    "xenddd.bridge=br0 xenddd.port=br0,usb",
    "xenddd.ip=eth0,300.0.0.1/24",
    "xenddd.ip=eth0,10.0.0.1",
    "xenddd.ip=eth0,10.0.0.1/33",
    "xenddd.gw=10.0.0",
    "xenddd.forward=yes",
    "xenddd.modules=a,,b",
    "xenddd.modules=",
    "xenddd.console_logs=2",
    "xenddd.unknown=1",
]
BUSYBOX = shutil.which("busybox")


def init_parses(cmdline: str) -> tuple[bool, list[str]]:
    assert BUSYBOX is not None
    init = resources.files("xenddd.image").joinpath("dd-init.sh")
    with resources.as_file(init) as path:
        done = subprocess.run(
            [BUSYBOX, "sh", str(path), "--print-config"],
            env={**os.environ, "XENDDD_DD_CMDLINE": cmdline},
            capture_output=True,
            text=True,
            check=False,
        )
    return done.returncode == 0, done.stdout.splitlines()


def twin_parses(cmdline: str) -> tuple[bool, list[str]]:
    try:
        return True, parse(cmdline).lines()
    except InputError:
        return False, []


@pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")
@pytest.mark.parametrize("cmdline", GOOD + BAD)
def test_the_init_and_its_python_twin_agree_on_every_case(cmdline: str) -> None:
    ok, lines = init_parses(cmdline)
    assert ok == (cmdline in GOOD)
    if ok:
        assert lines == twin_parses(cmdline)[1]
    else:
        assert twin_parses(cmdline) == (False, [])


def fake_interface(sys: Path, name: str, device: str, bus: str, mac: str = "00:16:3e:00:00:01") -> None:
    """An interface as sysfs shows it: its device on a xen bus, driven by the "vif" driver."""
    (sys / "bus" / bus / "drivers" / "vif").mkdir(parents=True, exist_ok=True)
    (sys / "devices" / device).mkdir(parents=True)
    (sys / "devices" / device / "subsystem").symlink_to(sys / "bus" / bus)
    (sys / "devices" / device / "driver").symlink_to(sys / "bus" / bus / "drivers" / "vif")
    (sys / "class" / "net" / name).mkdir(parents=True)
    (sys / "class" / "net" / name / "device").symlink_to(sys / "devices" / device)
    (sys / "class" / "net" / name / "address").write_text(mac + "\n")


def print_port_joins(sys: str, words: str, cwd: Path | None = None, path: str | None = None) -> list[str]:
    """What the init's port words would enslave in the sysfs tree `sys` (`--print-port-joins`)."""
    assert BUSYBOX is not None
    init = resources.files("xenddd.image").joinpath("dd-init.sh")
    env = {**os.environ, "XENDDD_DD_CMDLINE": words, "PATH": path or os.environ["PATH"]}
    with resources.as_file(init) as script:
        done = subprocess.run(
            [BUSYBOX, "sh", str(script), "--print-port-joins", sys],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return done.stdout.splitlines()


@pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")
def test_a_vif_port_word_takes_the_domains_own_frontends_never_netbacks_interfaces(tmp_path: Path) -> None:
    """netback's vifD.N are the "vif" driver's too; joining one to a bridge races the vif script, which
    takes it down first (it hung the scripts of every in-place reconnect on real Xen)."""
    assert BUSYBOX is not None
    sys = tmp_path / "sys"
    fake_interface(sys, "eth0", "vif-0", "xen")
    fake_interface(sys, "vif3.0", "vif-3-0", "xen-backend", mac="fe:ff:ff:ff:ff:ff")
    fake_interface(sys, "eth1", "vif-1", "xen")
    (sys / "class" / "net" / "eth1" / "master").symlink_to(sys / "class" / "net")
    assert print_port_joins(str(sys), "xenddd.bridge=br0 xenddd.port=br0,vif") == ["eth0 br0"]


@pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")
def test_the_port_words_are_matched_by_the_shell_alone_every_round(tmp_path: Path) -> None:
    """The init matches its port words every 2 s, netback's interfaces among those it looks at while
    guests are being reattached: a command there (readlink, basename, cat) is a process, a share of a
    second of the driver domain's one vCPU under emulation, taken from the guests' hotplug scripts. Here
    each such command, first on the PATH, leaves a line in a log: none may run, for any kind of word."""
    assert BUSYBOX is not None
    sys = tmp_path / "sys"
    fake_interface(sys, "eth0", "vif-0", "xen")
    fake_interface(sys, "vif3.0", "vif-3-0", "xen-backend", mac="fe:ff:ff:ff:ff:ff")
    fake_interface(sys, "vif4.0", "vif-4-0", "xen-backend", mac="fe:ff:ff:ff:ff:ff")
    fake_interface(sys, "eth1", "0000:00:04.0", "pci", mac="00:16:3e:00:00:09")
    commands, log = tmp_path / "bin", tmp_path / "ran"
    commands.mkdir()
    for name in ("readlink", "basename", "cat", "dirname", "realpath", "sleep"):
        (commands / name).write_text(f'#!/bin/sh\necho {name} >> {log}\nexec /usr/bin/{name} "$@"\n')
        (commands / name).chmod(0o755)
    path = f"{commands}:{os.environ['PATH']}"
    words = "xenddd.bridge=br0 xenddd.bridge=br1 xenddd.port=br0,vif xenddd.port=br1,pci=0000:00:04.0"
    assert print_port_joins("sys", words, cwd=tmp_path, path=path) == ["eth0 br0", "eth1 br1"]
    mac_word = "xenddd.bridge=br0 xenddd.port=br0,mac=00:16:3e:00:00:09"
    assert print_port_joins(str(sys), mac_word, path=path) == ["eth1 br0"]
    assert not log.exists(), log.read_text()


def test_the_twin_reads_bridges_ports_addresses_and_modules() -> None:
    words = parse(GOOD[2] + " " + GOOD[4])
    assert words.bridges == ["br0", "br-lan.1"]
    assert words.ports == [("br0", "mac=00:16:3e:00:00:01"), ("br-lan.1", "if=eth1")]
    assert words.addresses == [("eth0", "10.0.0.2/24")] and words.gateway == "10.0.0.1"
    assert words.modules == ["tg3", "bnx2"] and words.forward == "1"


def test_a_command_line_longer_than_xen_takes_is_refused() -> None:
    with pytest.raises(InputError, match="at most 1023"):
        parse("console=hvc0 " + "x" * 1020)


@given(st.lists(st.sampled_from(GOOD + BAD + ["xenddd.bridge=br1", "quiet", "xenddd."]), max_size=4))
def test_any_mix_of_words_parses_or_names_the_bad_ones(words: list[str]) -> None:
    try:
        parse(" ".join(words))
    except InputError as exc:
        assert "bad xenddd words" in str(exc)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = FakeRoot(tmp_path / "root")
    out = tmp_path / "image"
    write(build(RootTree(root.path), BuildRequest(("network",))), out)
    return out


def config_booting(tmp_path: Path, image: Path, extra: str = "", cmdline: str = "console=hvc0") -> Path:
    path = tmp_path / "xenddd.toml"
    path.write_text(
        f"""[[driver_domain]]
name = "domnet"
kind = ["network"]
kernel = "{image}/vmlinuz"
initrd = "{image}/initrd.img"
cmdline = "{cmdline}"
{extra}
[[driver_domain]]
name = "domstore"
kind = ["block"]
kernel = "/boot/vmlinuz"
"""
    )
    return path


def findings(image: Path, config_path: Path, alias: str | None = None) -> list[tuple[str, str, str]]:
    config = load_config(config_path)
    found = check(Manifest.load(image), image, config, lambda _bdf: alias)
    return [(f.severity, f.key_path, f.message) for f in found]


def test_a_driver_domain_that_fits_the_image_gives_no_finding(tmp_path: Path, image: Path) -> None:
    assert findings(image, config_booting(tmp_path, image)) == []


def test_a_bad_word_a_small_memory_and_another_readiness_key_are_errors(tmp_path: Path, image: Path) -> None:
    extra = 'memory = 64\n[driver_domain.readiness]\ncondition = "xenstore-key"\nkey = "data/up"\n'
    found = findings(image, config_booting(tmp_path, image, extra, cmdline="xenddd.gw=1.2.3"))
    assert [key for _, key, _ in found] == [
        "driver_domain[0].cmdline",
        "driver_domain[0].readiness",
        "driver_domain[0].memory",
    ]


def test_a_pci_device_no_module_in_the_image_drives_is_an_error_naming_the_fix(
    tmp_path: Path, image: Path
) -> None:
    config = config_booting(tmp_path, image, '[[driver_domain.pci]]\nbdf = "0000:00:05.0"\n')
    ((_, key, message),) = findings(
        image, config, alias="pci:v000014E4d0000165Fsv00001028sd000004F7bc02sc00i00"
    )
    assert key == "driver_domain[0].pci[0].bdf" and "--nic" in message
    assert findings(image, config, alias="pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00") == []


def test_a_driver_domain_with_pci_devices_needs_room_for_xen_swiotlb_too(tmp_path: Path, image: Path) -> None:
    e1000 = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
    pci = '[[driver_domain.pci]]\nbdf = "0000:00:05.0"\n'
    small = findings(image, config_booting(tmp_path, image, "memory = 128\n" + pci), alias=e1000)
    assert [(key, "xen-swiotlb" in message) for _, key, message in small] == [
        ("driver_domain[0].memory", True)
    ]
    assert findings(image, config_booting(tmp_path, image, "memory = 192\n" + pci), alias=e1000) == []


def test_an_image_of_another_kind_is_an_error(tmp_path: Path, image: Path) -> None:
    config = config_booting(tmp_path, image).read_text().replace('kind = ["network"]', 'kind = ["block"]', 1)
    (tmp_path / "block.toml").write_text(config)
    assert findings(image, tmp_path / "block.toml")[0][1] == "driver_domain[0].kind"


def test_a_changed_image_is_an_error_even_with_no_config(image: Path) -> None:
    (image / "vmlinuz").write_bytes(b"other")
    found = check(Manifest.load(image), image, None, lambda _bdf: None)
    assert [(f.severity, f.message) for f in found] == [("error", "vmlinuz differs from the manifest")]


def test_drivers_match_a_modalias_as_modprobe_does(image: Path) -> None:
    manifest = Manifest.load(image)
    assert drivers_for(manifest, "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00") == ["e1000"]
    assert drivers_for(manifest, "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00") == []


def test_a_driver_domain_booting_the_image_s_initramfs_with_another_kernel_is_an_error(
    tmp_path: Path, image: Path
) -> None:
    other = config_booting(tmp_path, image).read_text().replace(f'"{image}/vmlinuz"', '"/boot/vmlinuz"', 1)
    (tmp_path / "other.toml").write_text(other)
    ((severity, key, message),) = findings(image, tmp_path / "other.toml")
    assert (severity, key) == ("error", "driver_domain[0].kernel")
    assert (
        message
        == f"domnet boots /boot/vmlinuz; the image's kernel is {image}/vmlinuz, whose modules it holds"
    )
