"""What every subcommand receives from the `xenddd` group: output mode and where the config is."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import click

from xenddd.config.loader import DEFAULT_CONFIG_PATH, load_config
from xenddd.config.spec import Config, Settings
from xenddd.errors import ConfigError, NotImplementedYet


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
            self._config = self._simulated(load_config(self.config_path))
        return self._config

    def daemon_settings(self) -> Settings:
        """Where the daemon's socket and state are, even while the config file is invalid: that is when
        `status` must show that `systemctl reload` kept the running config, and `events` what happened.
        The invalid file is warned about; its socket and state paths are used if they can be read."""
        try:
            return self.config().settings
        except ConfigError as exc:
            click.echo(f"xenddd: warning: {exc}", err=True)
        defaults = Settings()
        try:
            table = tomllib.loads(self.config_path.read_text(encoding="utf-8")).get("xenddd", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            table = {}
        paths = {
            key: Path(value)
            for key in ("control_socket", "state_dir")
            if isinstance(table, dict) and isinstance(value := table.get(key), str) and value.startswith("/")
        }
        settings = Settings(
            control_socket=paths.get("control_socket", defaults.control_socket),
            state_dir=paths.get("state_dir", defaults.state_dir),
        )
        return self._simulated(Config(settings, ())).settings

    def _simulated(self, config: Config) -> Config:
        """With --simulate, the paths of `daemon --simulate` (see `service.simulated`)."""
        if not self.simulate:
            return config
        from xenddd.service.simulated import simulation_dir, simulation_settings

        return simulation_settings(config, simulation_dir())

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
