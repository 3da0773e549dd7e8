"""Paths built from other domains' directory listings cannot escape the subtree they were listed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenddd.adapters.xenstore.paths import InvalidXenstorePath, split_path, xs_join


@pytest.mark.parametrize("hostile", ["..", ".", "a/b", "", "x\0y", "név", "a b", "/etc"])
def test_a_component_that_xenstored_would_not_accept_is_refused(hostile: str) -> None:
    with pytest.raises(InvalidXenstorePath):
        xs_join("/local/domain/3/backend/vif", hostile)


def test_numbers_and_names_join_below_the_base() -> None:
    assert xs_join("/local/domain", 7, "backend", "vbd") == "/local/domain/7/backend/vbd"


@given(st.lists(st.text(max_size=12), max_size=4))
def test_a_joined_path_either_stays_below_its_base_or_is_refused(components: list[str]) -> None:
    base = "/local/domain/5/backend"
    try:
        joined = xs_join(base, *components)
    except InvalidXenstorePath:
        return
    assert split_path(joined) == [*split_path(base), *components]
