"""The `xenddd` group: global options, error handling, and the registration of every subcommand."""

from __future__ import annotations

import sys
from typing import Any

import click

from xenddd import __version__
from xenddd.cli.config_cmd import config_group
from xenddd.cli.context import CliContext
from xenddd.cli.demo_cmd import demo
from xenddd.cli.devices_cmd import block_list, network_list
from xenddd.cli.domains_cmd import create, destroy, list_domains, restart
from xenddd.cli.image_cmd import image_group
from xenddd.cli.output import emit_json
from xenddd.cli.pci_cmd import pci_assignable_add, pci_assignable_list, pci_assignable_remove
from xenddd.cli.service_cmd import daemon, events, status
from xenddd.cli.sim_cmd import sim
from xenddd.config.loader import config_path
from xenddd.errors import XendddError


class XendddGroup(click.Group):
    """Turns every expected failure into one line on stderr and its exit status: no tracebacks. With
    --json the failure is a JSON document on stdout instead, where the script reading it looks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except XendddError as exc:
            if isinstance(ctx.obj, CliContext) and ctx.obj.as_json:
                emit_json("error", [{"error": str(exc), "exit_code": exc.exit_code}])
            else:
                click.echo(f"xenddd: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=XendddGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable, versioned schema).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file [default: $XENDDD_CONFIG or /etc/xenddd/xenddd.toml].",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="Talk to the simulated host of `xenddd daemon --simulate` (its sockets and state directory).",
)
@click.version_option(version=__version__, prog_name="xenddd")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, config_file: str | None, simulate: bool) -> None:
    """xenddd — the Xen driver-domain daemon and its xl-style command line.

    Hides PCI devices from dom0 for driver domains, creates and monitors the driver domains through
    libvirt's Xen driver, keeps a registry of which guest frontend each driver domain serves, and restarts
    crashed driver domains and reattaches their guests' frontends.

    \b
    Exit status: 0 success, 1 the operation failed, 2 invalid input or refused (nothing changed).
    """
    ctx.obj = CliContext(as_json=as_json, config_path=config_path(config_file), simulate=simulate)


def _json_after_the_subcommand(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    cli_context = ctx.find_object(CliContext)
    if value and cli_context is not None:
        cli_context.as_json = True


def _accept_json(command: click.Command) -> None:
    """`xenddd list --json` as well as `xenddd --json list`: where an operator types it after the
    subcommand, as virsh and most CLIs take it."""
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            _accept_json(subcommand)
        return
    command.params.append(
        click.Option(
            ["--json"],
            is_flag=True,
            expose_value=False,
            callback=_json_after_the_subcommand,
            help="Machine-readable output (as `xenddd --json ...`).",
        )
    )


for command in (
    daemon,
    list_domains,
    create,
    destroy,
    restart,
    status,
    events,
    pci_assignable_add,
    pci_assignable_remove,
    pci_assignable_list,
    network_list,
    block_list,
    config_group,
    image_group,
    demo,
    sim,
):
    _accept_json(command)
    cli.add_command(command)


def main() -> None:
    """click's own errors (an unknown option, a missing argument: exit 2) follow --json as xenddd's do."""
    try:
        code = cli.main(prog_name="xenddd", standalone_mode=False)
    except click.ClickException as exc:
        if "--json" in sys.argv[1:]:
            emit_json("error", [{"error": exc.format_message(), "exit_code": exc.exit_code}])
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
