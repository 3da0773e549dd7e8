"""Frontend registry views: `network-list`, `block-list` (issue #6)."""

from __future__ import annotations

import click

from xenddd.cli.context import CliContext, not_implemented, pass_cli


@click.command("network-list")
@click.argument("guest", required=False)
@click.option("--backend", default=None, help="Only devices served by this driver domain.")
@pass_cli
def network_list(cli: CliContext, guest: str | None, backend: str | None) -> None:
    """List guests' network frontends (vif) and the driver domains serving them. Changes nothing."""
    raise not_implemented("network-list", 6)


@click.command("block-list")
@click.argument("guest", required=False)
@click.option("--backend", default=None, help="Only devices served by this driver domain.")
@pass_cli
def block_list(cli: CliContext, guest: str | None, backend: str | None) -> None:
    """List guests' block frontends (vbd) and the driver domains serving them. Changes nothing."""
    raise not_implemented("block-list", 6)
