"""Model parsers are the boundary for operator and xenstore strings: strict, and never crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenddd.errors import InputError
from xenddd.model import Bdf, normalise_mac, validate_domain_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0000:00:1f.3", "0000:00:1f.3"), ("00:1f.3", "0000:00:1f.3"), ("ABCD:FF:1F.7", "abcd:ff:1f.7")],
)
def test_bdf_accepts_long_and_short_forms(text: str, expected: str) -> None:
    assert str(Bdf.parse(text)) == expected


@pytest.mark.parametrize("text", ["00:1f.9", "00:20.0", "0:00:1f.0", "00:1f", "00:1f.0;rm", "", "../00:1f.0"])
def test_bdf_rejects_what_is_not_a_pci_address(text: str) -> None:
    with pytest.raises(InputError):
        Bdf.parse(text)


@given(st.text())
def test_bdf_parse_either_round_trips_or_raises_input_error(text: str) -> None:
    try:
        bdf = Bdf.parse(text)
    except InputError:
        return
    assert Bdf.parse(str(bdf)) == bdf


def test_mac_is_normalised_to_xenstore_form() -> None:
    assert normalise_mac("00:16:3E:AA:bb:0c") == "00:16:3e:aa:bb:0c"
    for bad in ("00:16:3e:aa:bb", "00-16-3e-aa-bb-0c", "00:16:3e:aa:bb:0g"):
        with pytest.raises(InputError):
            normalise_mac(bad)


def test_domain_names_follow_libvirt_and_xl() -> None:
    assert validate_domain_name("dom-net_1.a") == "dom-net_1.a"
    for bad in ("", "-x", "a b", "a/b", "x" * 65, 3):
        with pytest.raises(InputError):
            validate_domain_name(bad)
