"""The parts of the libxl_create program that run without Xen: the config it hands libxl, its usage."""

from __future__ import annotations

import json

import pytest

from xenddd.adapters.libxl_create import CreateError, main, with_domid


def test_the_domid_goes_into_xls_config_as_c_info_domid() -> None:
    config = {"c_info": {"type": "pv", "name": "domnet"}, "b_info": {"max_memkb": 131072}}
    assert json.loads(with_domid(json.dumps(config), 7)) == {
        "c_info": {"type": "pv", "name": "domnet", "domid": 7},
        "b_info": {"max_memkb": 131072},
    }


@pytest.mark.parametrize("text", ["Parsing config from /x", "[]", '{"b_info": {}}', '{"c_info": 3}'])
def test_what_is_not_a_domain_config_is_refused(text: str) -> None:
    with pytest.raises(CreateError):
        with_domid(text, 7)


@pytest.mark.parametrize("argv", [[], ["domnet"], ["7", "8"]])
def test_a_wrong_command_line_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("usage:")
