"""A driver domain's own vifs and disks, served by dom0 or by another driver domain (a filtering domain
behind the NIC's): the implicit dependencies they make, and every bad value refused in one line."""

from __future__ import annotations

import pytest

from tests.config.parsing import parse, rejection
from xenddd.config.check import file_findings
from xenddd.config.loader import stable_mac

CHAIN = """
[[driver_domain]]
name = "domfw"
kind = "network"
kernel = "/k"
[[driver_domain.vif]]
backend = "domnet"
bridge = "br0"
ip = "10.0.0.2"
rate = "10Mb/s"
[[driver_domain.disk]]
path = "/dev/vg/domfw-data"
vdev = "xvdb"
backend = "domstore"

[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/k"
[[driver_domain.vif]]
mac = "00:16:3E:AA:BB:01"

[[driver_domain]]
name = "domstore"
kind = "block"
kernel = "/k"
"""


def test_device_backends_are_implicit_dependencies_and_order_the_starts() -> None:
    config = parse(CHAIN)
    fw = config.driver_domain("domfw")
    assert fw.upstreams == ("domnet", "domstore")
    assert fw.dependencies == ("domnet", "domstore")
    assert [s.name for s in config.start_order()] == ["domnet", "domstore", "domfw"]


def test_a_vif_keeps_its_parameters_and_a_missing_mac_is_generated_stably() -> None:
    config = parse(CHAIN)
    (uplink,) = config.driver_domain("domfw").vifs
    assert (uplink.backend, uplink.bridge, uplink.ip, uplink.rate_kib) == ("domnet", "br0", "10.0.0.2", 1221)
    assert (
        uplink.mac_generated
        and uplink.mac == stable_mac("domfw", 0) == parse(CHAIN).driver_domain("domfw").vifs[0].mac
    )
    assert uplink.mac.startswith("00:16:3e:") and stable_mac("domfw", 1) != uplink.mac
    (own,) = config.driver_domain("domnet").vifs
    assert (own.mac, own.backend, own.mac_generated) == ("00:16:3e:aa:bb:01", "dom0", False)


def test_a_cycle_through_device_backends_is_refused() -> None:
    text = CHAIN + '[[driver_domain.vif]]\nbackend = "domfw"\n'  # domstore's uplink from domfw
    assert "dependency cycle: domfw -> domnet" not in rejection(text)
    assert "dependency cycle: domfw -> domstore -> domfw" in rejection(text)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('backend = "ghost"', "'ghost' is not a configured driver domain (or 'dom0')"),
        ('backend = "domstore"\nmtu = 9000', "cannot pass an MTU"),
        ('rate = "10Mb/s@20ms"', "no '@interval'"),
        ('rate = "100b/s"', "below 1 KiB/s"),
        ('mac = "not-a-mac"', "is not a MAC address"),
        (
            'backend = "domnet"\nmac = "00:16:3e:aa:bb:01"',
            "00:16:3e:aa:bb:01 is already the MAC of a vif of domnet",
        ),
        ('backend = "domstore"', "'domstore' cannot serve itself"),
    ],
)
def test_bad_vif_values_are_refused_in_one_line(extra: str, expected: str) -> None:
    assert expected in rejection(CHAIN + f"[[driver_domain.vif]]\n{extra}\n")


def test_config_check_says_which_vif_macs_it_generated() -> None:
    warnings = [f for f in file_findings(parse(CHAIN)) if f.severity == "warning"]
    assert [(f.key_path, f.message.split(":")[0]) for f in warnings] == [
        ("driver_domain[0].vif[0].mac", "no mac given")
    ]
    assert stable_mac("domfw", 0) in warnings[0].message
