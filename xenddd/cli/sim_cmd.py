"""`xenddd sim`: run a simulated Xen host in the foreground (issue #3), or inject a fault into the one
`xenddd daemon --simulate` runs, to rehearse a recovery."""

from __future__ import annotations

import signal
import threading

import click

from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import emit_record
from xenddd.config.loader import DEFAULT_CONFIG_PATH
from xenddd.errors import DaemonNotRunning


@click.group(invoke_without_command=True)
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False), help="xenstored's socket.")
@click.pass_context
def sim(ctx: click.Context, socket_path: str | None) -> None:
    """Run a simulated Xen host in the foreground, its xenstored listening on SOCKET; or, with a
    subcommand, inject a fault into the simulated host of `xenddd daemon --simulate`.

    Other programs can use the host: Debian's xenstore-* tools (XENSTORED_PATH=SOCKET), pyxs scripts,
    or a separately started `xenddd daemon` with `xenstore_socket` pointing at SOCKET. With --config,
    the config's driver domains are started and its [[simulation.guest]] entries created with their
    vifs and vbds. Stops on SIGINT or SIGTERM. Touches nothing but SOCKET.

    \b
    Exit status: 0 stopped by a signal, 2 invalid config or no --socket.
    """
    if ctx.invoked_subcommand is not None:
        if socket_path is not None:
            raise click.UsageError("--socket runs a host; a fault subcommand needs none")
        return
    if socket_path is None:
        raise click.UsageError("give --socket PATH to run a host, or a fault: crash, destroy, shutdown")
    _run_host(ctx.obj, socket_path)


def _run_host(cli: CliContext, socket_path: str) -> None:
    from pathlib import Path

    from xenddd.sim.socket_host import SimulatedHost

    config = None if cli.config_path == DEFAULT_CONFIG_PATH and not cli.config_path.exists() else cli.config()
    host = SimulatedHost.start(Path(socket_path))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if config is not None:
            for spec in config.start_order():
                host.hypervisor.define(spec)
                host.hypervisor.start(spec.name)
            host.create_guests(config)
        click.echo(f"simulated Xen host ready; xenstored on {socket_path}", err=True)
        stop.wait()
    finally:
        host.stop()


def _fault(op: str, what: str) -> click.Command:
    @click.command(
        op,
        help=f"{what} domain NAME on the simulated host of `xenddd daemon --simulate`.\n\n"
        "\b\nExit status: 0 done, 1 no simulated host runs, 2 NAME is not running there.",
    )
    @click.argument("name")
    @pass_cli
    def inject(cli: CliContext, name: str) -> None:
        from xenddd.service.control import answer_or_raise, request
        from xenddd.service.simulated import FAULTS_SOCKET, simulation_dir

        path = simulation_dir() / FAULTS_SOCKET
        try:
            answer = answer_or_raise(request(path, op, {"name": name}))
        except DaemonNotRunning:
            raise DaemonNotRunning(
                f"no simulated host runs with its faults socket at {path} (xenddd daemon --simulate)"
            ) from None
        record = {"name": name, "fault": op, "domid": answer["domid"]}
        emit_record(cli.as_json, "sim-fault", record, f"{name}: {op} injected (domid {answer['domid']})")

    return inject


for _command in (
    _fault("crash", "Crash (a kernel panic of)"),
    _fault("destroy", "Destroy, as `xl destroy` would,"),
    _fault("shutdown", "Shut down, as from inside,"),
):
    sim.add_command(_command)
