"""`xenddd demo`: crash driver domains on a simulated host and watch xenddd bring them back (issue #3/#7)."""

from __future__ import annotations

import click

from xenddd.cli.context import CliContext, not_implemented, pass_cli


@click.command()
@pass_cli
def demo(cli: CliContext) -> None:
    """Run the daemon against a simulated Xen host, crash each driver domain and show the recovery."""
    raise not_implemented("demo", 3)
