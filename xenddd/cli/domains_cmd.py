"""Driver-domain lifecycle commands: `list`, `create`, `destroy`, `restart` (issue #5)."""

from __future__ import annotations

import click

from xenddd.cli.context import CliContext, not_implemented, pass_cli


@click.command("list")
@pass_cli
def list_domains(cli: CliContext) -> None:
    """List the configured driver domains, like `xl list`, with xenddd's view of each.

    Changes nothing. Exit status: 0 ok, 1 the toolstack could not be asked, 2 invalid config.
    """
    raise not_implemented("list", 5)


@click.command()
@click.argument("name")
@pass_cli
def create(cli: CliContext, name: str) -> None:
    """Define (or update) and start the configured driver domain NAME through libvirt.

    Hides its PCI devices from dom0 first. Exit status: 0 started, 1 failed, 2 unknown NAME or bad config.
    """
    raise not_implemented("create", 5)


@click.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Stop it even while guests are attached through it.")
@pass_cli
def destroy(cli: CliContext, name: str, force: bool) -> None:
    """Stop driver domain NAME (a planned stop: xenddd does not restart it).

    Exit status: 0 stopped, 1 failed or refused, 2 unknown NAME.
    """
    raise not_implemented("destroy", 5)


@click.command()
@click.argument("name")
@pass_cli
def restart(cli: CliContext, name: str) -> None:
    """Restart driver domain NAME and reattach its guests' frontends (also clears a `failed` state).

    Exit status: 0 restarted, 1 failed, 2 unknown NAME.
    """
    raise not_implemented("restart", 5)
