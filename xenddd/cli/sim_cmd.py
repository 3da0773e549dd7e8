"""`xenddd sim`: run a simulated Xen host in the foreground (issue #3)."""

from __future__ import annotations

import click

from xenddd.cli.context import CliContext, not_implemented, pass_cli


@click.command()
@click.option("--socket", "socket_path", required=True, type=click.Path(dir_okay=False))
@pass_cli
def sim(cli: CliContext, socket_path: str) -> None:
    """Run a simulated Xen host whose xenstored listens on SOCKET."""
    raise not_implemented("sim", 3)
