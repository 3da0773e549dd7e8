"""xl.cfg files against golden files (regenerate with XENDDD_REGOLD=1 after a deliberate change): the same
decisions as the libvirt XML, in xl's syntax (xl.cfg(5), xl-disk-configuration(5),
xl-network-configuration(5), xl-pci-configuration(5))."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adapters.golden import golden_text
from xenddd.adapters.xl_config import xl_config, xl_rate
from xenddd.config.spec import DiskSpec, DriverDomainSpec, PciDeviceSpec, VifSpec
from xenddd.errors import InputError
from xenddd.model import Bdf, DriverDomainKind

NET = frozenset({DriverDomainKind.NETWORK})
KERNEL = Path("/var/lib/xenddd/dd-vmlinuz")

CASES = {
    "xl_pv_network_dd_with_relaxed_permissive_pci": xl_config(
        DriverDomainSpec(
            "domnet",
            NET,
            kernel=KERNEL,
            initrd=Path("/var/lib/xenddd/dd-initrd"),
            cmdline="console=hvc0",
            pci=(
                PciDeviceSpec(Bdf.parse("00:10.0"), permissive=True, rdm_policy="relaxed", reset="relaxed"),
                PciDeviceSpec(Bdf.parse("0000:03:00.1")),
            ),
            toolstack="xl",
        )
    ),
    "xl_pv_filtering_dd_chained_behind_domnet": xl_config(
        DriverDomainSpec(
            "domfw",
            NET,
            kernel=KERNEL,
            memory_mib=192,
            vcpus=2,
            disks=(
                DiskSpec(Path("/var/lib/xenddd/domfw.img"), readonly=True),
                DiskSpec(Path("/dev/vg/domfw-data"), vdev="xvdb", backend="domstore"),
            ),
            vifs=(
                VifSpec(
                    "00:16:3e:12:34:56",
                    backend="domnet",
                    bridge="br0",
                    ip="10.0.0.2",
                    script="vif-bridge",
                    rate_kib=1221,
                ),
                VifSpec("00:16:3e:12:34:57", script="vif-route"),
            ),
            toolstack="xl",
        )
    ),
    "xl_pv_standby_ready_for_pci_hotplug": xl_config(
        DriverDomainSpec(
            "domnet-standby",
            NET,
            kernel=KERNEL,
            disks=(DiskSpec(Path("/var/lib/xenddd/domnet.qcow2"), format="qcow2", readonly=True),),
            toolstack="xl",
            pci_hotplug=True,
        )
    ),
    "xl_hvm_block_dd_preserve_on_crash": xl_config(
        DriverDomainSpec(
            "domstore",
            frozenset({DriverDomainKind.BLOCK}),
            virt="hvm",
            memory_mib=512,
            vcpus=2,
            disks=(
                DiskSpec(Path("/var/lib/xenddd/domstore.img")),
                DiskSpec(Path("/dev/vg/data"), vdev="xvdb"),
            ),
            on_crash="preserve",
            toolstack="xl",
        )
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cfg_matches_its_golden_file(name: str) -> None:
    assert CASES[name] == golden_text(f"{name}.cfg", CASES[name])


def _settings(cfg: str) -> dict[str, str]:
    """The one-line settings of a generated file (lists span lines and are left out)."""
    pairs = (line.split(" = ", 1) for line in cfg.splitlines() if " = " in line and not line.endswith("["))
    return dict(pairs)


def test_every_pci_device_is_listed_with_its_options_and_passthrough_is_enabled() -> None:
    cfg = CASES["xl_pv_network_dd_with_relaxed_permissive_pci"]
    assert '    "0000:00:10.0,permissive=1,rdm_policy=relaxed",\n' in cfg
    assert '    "0000:03:00.1",\n' in cfg  # strict reset too: xl has no refusal to mirror
    assert (_settings(cfg)["passthrough"], _settings(cfg)["e820_host"]) == ('"enabled"', "1")


def test_a_standby_without_devices_is_created_ready_for_their_hot_plug() -> None:
    settings = _settings(CASES["xl_pv_standby_ready_for_pci_hotplug"])
    assert (settings["passthrough"], settings["e820_host"]) == ('"enabled"', "1")
    assert "pci = [" not in CASES["xl_pv_standby_ready_for_pci_hotplug"]


def test_a_domain_without_pci_devices_or_hotplug_gets_no_passthrough() -> None:
    settings = _settings(CASES["xl_pv_filtering_dd_chained_behind_domnet"])
    assert "passthrough" not in settings and "e820_host" not in settings


def test_an_hvm_domain_gets_passthrough_for_hot_plug_but_no_pv_memory_map() -> None:
    spec = DriverDomainSpec("domstore", NET, virt="hvm", disks=(DiskSpec(Path("/x.img")),), pci_hotplug=True)
    settings = _settings(xl_config(spec))
    assert settings["passthrough"] == '"enabled"' and "e820_host" not in settings


def test_on_crash_is_the_configured_action() -> None:
    assert _settings(CASES["xl_hvm_block_dd_preserve_on_crash"])["on_crash"] == '"preserve"'
    assert _settings(CASES["xl_pv_filtering_dd_chained_behind_domnet"])["on_crash"] == '"destroy"'


@pytest.mark.parametrize(
    ("rate_kib", "given"),
    [
        (1221, "1250304B/s@50ms"),
        (1, "1024B/s@50ms"),
        (4_194_303, "4294966272B/s@50ms"),  # the largest number of bytes xl accepts without a unit
        (5_000_000, "5120000KB/s@50ms"),  # above it: xl's decimal K, exactly
    ],
)
def test_a_rate_gives_xl_the_bytes_per_interval_libvirt_gives_libxl(rate_kib: int, given: str) -> None:
    assert xl_rate(rate_kib) == given
    number, prefix = int(given.split("B")[0].rstrip("KMG")), given.split("B")[0].lstrip("0123456789")
    per_second = number * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[prefix]
    assert per_second * 50_000 // 1_000_000 == rate_kib * 1024 // 20  # libxlu_vif.c vs libvirt's libxlMakeNic


@pytest.mark.parametrize("cmdline", ['console=hvc0 init="/sbin/init"', "root=/dev/xvda'", "a\\b", "a\nb"])
def test_a_value_xl_would_misread_is_refused(cmdline: str) -> None:
    with pytest.raises(InputError, match="quote, backslash or control character"):
        xl_config(DriverDomainSpec("domnet", NET, kernel=KERNEL, cmdline=cmdline))


def test_a_comma_inside_a_vif_value_is_refused_but_a_disk_target_may_hold_one() -> None:
    with pytest.raises(InputError, match="comma"):
        xl_config(
            DriverDomainSpec("domnet", NET, kernel=KERNEL, vifs=(VifSpec("00:16:3e:00:00:01", ip="a,b"),))
        )
    cfg = xl_config(DriverDomainSpec("domstore", NET, kernel=KERNEL, disks=(DiskSpec(Path("/srv/a,b.img")),)))
    assert ",target=/srv/a,b.img" in cfg
