"""The real-Xen test bed's configs are valid xenddd configs, with scenario (g)'s disks appended as
run-in-dom0.sh appends them, and rewritten to boot the product driver-domain image as it rewrites them
(XENDDD_IT_DD_IMAGE=product): a typo there would cost a 20-minute boot to find."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from xenddd.config.loader import parse_config
from xenddd.image.check import MIN_MEMORY_MIB, minimum_memory_mib
from xenddd.image.cmdline import parse as parse_words

SCENARIOS = Path(__file__).resolve().parents[2] / "integration/scenarios"


@pytest.mark.parametrize(("machine", "names"), [("pc", ["domnet", "domstore"]), ("vtd", ["domnet"])])
def test_each_machines_config_parses(machine: str, names: list[str]) -> None:
    path = SCENARIOS / f"xenddd-{machine}.toml"
    config = parse_config(path.read_text(), path)
    assert [d.name for d in config.driver_domains] == names


def test_scenario_gs_disks_go_to_domstore() -> None:
    base = SCENARIOS / "xenddd-pc.toml"
    config = parse_config(base.read_text() + (SCENARIOS / "xenddd-pc-faithful.toml").read_text(), base)
    disks = {d.name: [disk.vdev for disk in d.disks] for d in config.driver_domains}
    assert disks == {"domnet": ["xvda"], "domstore": ["xvda", "xvdb", "xvdc", "xvdd"]}


def _dd_image() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dd_image", SCENARIOS / "dd_image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("machine", ["pc", "vtd"])
def test_with_the_product_image_every_driver_domain_boots_it_with_words_its_init_accepts(
    machine: str,
) -> None:
    dd_image = _dd_image()
    path = SCENARIOS / f"xenddd-{machine}.toml"
    config = parse_config(dd_image.boot_from_image(path.read_text()), path)
    for spec in config.driver_domains:
        image = Path(dd_image.IMAGE) / ("network" if spec.name == "domnet" else "block")
        assert (spec.kernel, spec.initrd) == (image / "vmlinux", image / "initrd.img")
        assert "xvda" not in [disk.vdev for disk in spec.disks]
        assert spec.memory_mib == (MIN_MEMORY_MIB if machine == "pc" else 256) >= minimum_memory_mib(spec)
        words = parse_words(spec.cmdline)
        assert words.bridges == (["br0"] if spec.name == "domnet" else [])
    assert [disk.path for disk in config.driver_domains[-1].disks] == (
        [Path("/dev/vdd")] if machine == "pc" else []
    )


def test_scenario_hs_filtering_domain_boots_the_product_image_too() -> None:
    dd_image = _dd_image()
    text = (SCENARIOS / "test_h_chained_dd.py").read_text()
    domfw = text.split('DOMFW = """', 1)[1].split('"""', 1)[0]
    base = SCENARIOS / "xenddd-pc.toml"
    config = parse_config(dd_image.boot_from_image(base.read_text()) + dd_image.boot_from_image(domfw), base)
    fw = config.driver_domain("domfw")
    assert fw.initrd == Path(f"{dd_image.IMAGE}/network/initrd.img") and fw.disks == ()
    assert [vif.backend for vif in fw.vifs] == ["domnet"]
    assert ("br0", "vif") in parse_words(fw.cmdline).ports


def test_scenario_j_s_cloud_variant_boots_domnet_from_the_cloud_kernel_s_image_and_domstore_as_before() -> (
    None
):
    dd_image = _dd_image()
    path = SCENARIOS / "xenddd-pc.toml"
    config = parse_config(dd_image.boot_from_image(path.read_text(), network="network-cloud"), path)
    image = Path(dd_image.IMAGE)
    kernels = {spec.name: spec.kernel for spec in config.driver_domains}
    assert kernels == {"domnet": image / "network-cloud/vmlinux", "domstore": image / "block/vmlinux"}
