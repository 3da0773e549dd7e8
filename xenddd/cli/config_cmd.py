"""`xenddd config check`: validate a config file without touching the host."""

from __future__ import annotations

import click

from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import emit_record


@click.group("config")
def config_group() -> None:
    """Work with the configuration file."""


@config_group.command("check")
@pass_cli
def check(cli: CliContext) -> None:
    """Validate the config file (--config / $XENDDD_CONFIG / /etc/xenddd/xenddd.toml).

    Reads and validates every key; touches nothing on the host. Prints a one-line summary, or one line
    naming the file, the key path and the line of the first problem.

    \b
    Exit status: 0 valid, 2 invalid or unreadable.
    """
    config = cli.config()
    names = [spec.name for spec in config.start_order()]
    record = {
        "path": str(config.source),
        "valid": True,
        "driver_domains": names,
        "pci_devices": [str(p.bdf) for spec in config.driver_domains for p in spec.pci],
    }
    text = f"{config.source}: ok, {len(names)} driver domain(s)" + (
        f" (start order: {', '.join(names)})" if names else ""
    )
    emit_record(cli.as_json, "config-check", record, text)
