"""What every subcommand receives from the `xenddd` group: output mode and where the config is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import click

from xenddd.config.loader import DEFAULT_CONFIG_PATH, load_config
from xenddd.config.spec import Config, Settings
from xenddd.errors import NotImplementedYet


@dataclass
class CliContext:
    as_json: bool
    config_path: Path
    simulate: bool = False
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        """The validated config, loaded once, on first use: commands that need none never read it. With
        --simulate, its paths are those of `daemon --simulate` (see `service.simulated`)."""
        if self._config is None:
            self._config = load_config(self.config_path)
            if self.simulate:
                from xenddd.service.simulated import simulation_dir, simulation_settings

                self._config = simulation_settings(self._config, simulation_dir())
        return self._config

    def settings(self) -> Settings:
        """The config's settings; the defaults when the default config file does not exist, so that
        host commands (pci-assignable-*) work on a dom0 where xenddd is not configured yet."""
        if self.config_path == DEFAULT_CONFIG_PATH and not self.config_path.exists():
            sysfs = os.environ.get("XENDDD_SYSFS_ROOT")
            return Settings(sysfs_root=Path(sysfs)) if sysfs else Settings()
        return self.config().settings


pass_cli = click.make_pass_decorator(CliContext)


def not_implemented(command: str, issue: int) -> NotImplementedYet:
    """The honest answer of a subcommand whose issue has not landed yet (exit status 1)."""
    return NotImplementedYet(f"'{command}' is not implemented yet (issue #{issue})")
