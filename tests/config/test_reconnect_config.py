"""`reconnect`: "in-place" needs the dead instance's domid again, which only xl's driver domains can get;
what cannot have it is refused in one line when the config is read. `reattach_guests` names the guests that
are reattached all the same."""

from __future__ import annotations

import pytest

from tests.config.parsing import domnet, parse, rejection

DOMNET = domnet()


def test_the_default_is_to_reattach() -> None:
    assert parse(DOMNET.format(extra="")).driver_domain("domnet").reconnect == "reattach"


def test_an_xl_driver_domain_may_reconnect_in_place() -> None:
    spec = parse(DOMNET.format(extra='toolstack = "xl"\nreconnect = "in-place"')).driver_domain("domnet")
    assert spec.reconnect == "in-place"
    assert spec.restores_in_place("web") and spec.reattach_guests == frozenset()


def test_guests_named_in_reattach_guests_are_reattached_by_an_in_place_driver_domain() -> None:
    extra = 'toolstack = "xl"\nreconnect = "in-place"\nreattach_guests = ["raid1-vm", "bonded.vm"]'
    spec = parse(DOMNET.format(extra=extra)).driver_domain("domnet")
    assert spec.reattach_guests == frozenset({"raid1-vm", "bonded.vm"})
    assert not spec.restores_in_place("raid1-vm") and spec.restores_in_place("web")
    one = parse(DOMNET.format(extra=extra.replace('["raid1-vm", "bonded.vm"]', '"web"'))).driver_domain(
        "domnet"
    )
    assert one.reattach_guests == frozenset({"web"})
    reattaching = parse(DOMNET.format(extra="")).driver_domain("domnet")
    assert not reattaching.restores_in_place("web")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('reconnect = "in-place"', 'driver_domain[0].reconnect: "in-place" needs the dead instance\'s domid'),
        ('toolstack = "xl"\nreconnect = "inplace"', "reconnect"),
        (
            'toolstack = "xl"\nreconnect = "in-place"\n[driver_domain.standby]\nenabled = true',
            "a promoted standby has its own",
        ),
        (
            'toolstack = "xl"\nreconnect = "in-place"\n'
            '[driver_domain.readiness]\ncondition = "backend-initwait"',
            "attaches nothing to probe readiness with",
        ),
        (
            'reattach_guests = ["web"]',
            'driver_domain[0].reattach_guests: applies only with reconnect = "in-place"',
        ),
        (
            'toolstack = "xl"\nreconnect = "in-place"\nreattach_guests = ["web", "no/slash"]',
            "driver_domain[0].reattach_guests: 'no/slash' is not a valid domain name",
        ),
        ('toolstack = "xl"\nreconnect = "in-place"\nreattach_guests = 3', "must be a list of guest names"),
    ],
)
def test_what_cannot_reconnect_in_place_is_refused_in_one_line(extra: str, expected: str) -> None:
    assert expected in rejection(DOMNET.format(extra=extra))
