"""The service commands: `daemon`, `status`, `events` (issue #8)."""

from __future__ import annotations

import click

from xenddd.cli.context import CliContext, not_implemented, pass_cli


@click.command()
@click.option("--simulate", is_flag=True, help="Run against an in-process simulated Xen host.")
@pass_cli
def daemon(cli: CliContext, simulate: bool) -> None:
    """Run the xenddd daemon in the foreground (as systemd's xenddd.service does)."""
    raise not_implemented("daemon", 8)


@click.command()
@pass_cli
def status(cli: CliContext) -> None:
    """Show the daemon's health, connections and every driver domain's state. Changes nothing."""
    raise not_implemented("status", 8)


@click.command()
@click.option("--follow", is_flag=True, help="Keep printing new events.")
@click.option("--since", default=None, help="Only events after this time (ISO 8601 or seconds ago).")
@pass_cli
def events(cli: CliContext, follow: bool, since: str | None) -> None:
    """Show the history of incidents and recoveries with per-phase timestamps. Changes nothing."""
    raise not_implemented("events", 8)
