"""`reconnect`: "in-place" needs the dead instance's domid again, which only xl's driver domains can get;
what cannot have it is refused in one line when the config is read."""

from __future__ import annotations

import pytest

from tests.config.parsing import parse, rejection

DOMNET = """
[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/k"
{extra}
"""


def test_the_default_is_to_reattach() -> None:
    assert parse(DOMNET.format(extra="")).driver_domain("domnet").reconnect == "reattach"


def test_an_xl_driver_domain_may_reconnect_in_place() -> None:
    spec = parse(DOMNET.format(extra='toolstack = "xl"\nreconnect = "in-place"')).driver_domain("domnet")
    assert spec.reconnect == "in-place"


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
    ],
)
def test_what_cannot_reconnect_in_place_is_refused_in_one_line(extra: str, expected: str) -> None:
    assert expected in rejection(DOMNET.format(extra=extra))
