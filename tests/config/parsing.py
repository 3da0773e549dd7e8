"""Parsing a config text as if it were /etc/xenddd/xenddd.toml, and the one line a bad one is refused with."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from xenddd.config.loader import parse_config
from xenddd.config.spec import Config
from xenddd.errors import ConfigError


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), Path("/etc/xenddd/xenddd.toml"))


def rejection(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("/etc/xenddd/xenddd.toml")
    return message


def domnet(table: str = "") -> str:
    """A network driver domain's config: `{extra}` for keys of its own, then `table`."""
    return '\n[[driver_domain]]\nname = "domnet"\nkind = "network"\nkernel = "/k"\n{extra}\n' + table
