"""What every subcommand receives from the `xenddd` group: output mode and where the config is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from xenddd.config import Config, load_config
from xenddd.errors import NotImplementedYet


@dataclass
class CliContext:
    as_json: bool
    config_path: Path
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        """The validated config, loaded once, on first use: commands that need none never read it."""
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


pass_cli = click.make_pass_decorator(CliContext)


def not_implemented(command: str, issue: int) -> NotImplementedYet:
    """The honest answer of a subcommand whose issue has not landed yet (exit status 1)."""
    return NotImplementedYet(f"'{command}' is not implemented yet (issue #{issue})")
