"""`xenddd sim`: run a simulated Xen host in the foreground (issue #3)."""

from __future__ import annotations

import signal
import threading

import click

from xenddd.cli.context import CliContext, pass_cli
from xenddd.config.loader import DEFAULT_CONFIG_PATH


@click.command()
@click.option(
    "--socket", "socket_path", required=True, type=click.Path(dir_okay=False), help="xenstored's socket."
)
@pass_cli
def sim(cli: CliContext, socket_path: str) -> None:
    """Run a simulated Xen host in the foreground, its xenstored listening on SOCKET.

    Other programs can then use it as a host: Debian's xenstore-* tools (XENSTORED_PATH=SOCKET), pyxs
    scripts, or a separately started `xenddd daemon` with `xenstore_socket` pointing at SOCKET. With
    --config, the config's driver domains are started and its [[simulation.guest]] entries created with
    their vifs and vbds. Stops on SIGINT or SIGTERM. Touches nothing but SOCKET.

    \b
    Exit status: 0 stopped by a signal, 2 invalid config.
    """
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
