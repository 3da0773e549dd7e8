"""The service commands: `daemon`, `status`, `events` (issue #8)."""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from xenddd.adapters.systemd import Notifier, configure_logging
from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import Column, emit_list, emit_record, render_table
from xenddd.config.spec import Config
from xenddd.errors import InputError
from xenddd.service.control import answer_or_raise, request
from xenddd.service.lock import daemon_lock


@click.command()
@click.option(
    "--simulate", is_flag=True, help="Run against an in-process simulated Xen host (no Xen needed)."
)
@pass_cli
def daemon(cli: CliContext, simulate: bool) -> None:
    """Run the xenddd daemon in the foreground (as systemd's xenddd.service does).

    Connects to xenstored and libvirt (retrying while they come up), hides the configured PCI devices,
    starts the driver domains in dependency order, then watches them and recovers any that dies.
    Notifies systemd (READY=1 after the first reconcile, STATUS=, WATCHDOG=1). SIGTERM stops the daemon
    and leaves the driver domains running; SIGHUP reloads the config.

    With --simulate the same daemon runs against a simulated host built from the config's driver
    domains and [[simulation.guest]] entries; the control socket and state directory then default to a
    temporary directory unless the config sets them.

    One daemon per state directory: a second one exits 1 naming the running one's pid.

    \b
    Exit status: 0 stopped by a signal, 1 failed (or another daemon runs), 2 invalid config.
    """
    config = cli.config()
    configure_logging(config.settings.log_level)
    scratch = Path(tempfile.mkdtemp(prefix="xenddd-sim-")) if simulate else None
    if scratch is not None:
        config = _simulation_settings(config, scratch)
    # Before anything is touched: a second daemon must not finish PCI steps or take the control socket.
    with daemon_lock(config.settings.state_dir):
        if scratch is not None:
            sys.exit(_run_simulated(cli, config, scratch))
        from xenddd.service.production import production_runtime

        notifier = Notifier()
        runtime = production_runtime(config, notifier)
        from xenddd.service.daemon import Daemon

        sys.exit(Daemon(config, runtime, config_path=cli.config_path, notifier=notifier).run())


def _simulation_settings(config: Config, scratch: Path) -> Config:
    """The state directory and control socket in `scratch` unless the config sets them."""
    from dataclasses import replace

    from xenddd.config.spec import Settings

    defaults = Settings()
    settings = config.settings
    if settings.state_dir == defaults.state_dir:
        settings = replace(settings, state_dir=scratch / "state")
    if settings.control_socket == defaults.control_socket:
        settings = replace(settings, control_socket=scratch / "control.sock")
    return replace(config, settings=settings)


def _run_simulated(cli: CliContext, config: Config, scratch: Path) -> int:
    from xenddd.service.daemon import Daemon
    from xenddd.service.simulated import simulated_runtime
    from xenddd.sim.socket_host import SimulatedHost

    settings = config.settings
    sim = SimulatedHost.start(scratch / "xenstored.sock")
    click.echo(
        f"xenddd: simulated host: xenstored at {sim.server.path}, control socket {settings.control_socket}",
        err=True,
    )
    try:
        return Daemon(config, simulated_runtime(sim, config), config_path=cli.config_path).run()
    finally:
        sim.stop()


@click.command()
@pass_cli
def status(cli: CliContext) -> None:
    """Show the daemon's health and every driver domain's state, restarts, frontends and last incident.

    Asks the running daemon over its control socket; changes nothing.

    \b
    Exit status: 0 ok, 1 the daemon is not running or did not answer.
    """
    answer = answer_or_raise(request(cli.config().settings.control_socket, "status"))
    daemon_health: dict[str, Any] = answer.get("daemon", {})
    domains: list[dict[str, Any]] = answer.get("driver_domains", [])
    record = {"daemon": daemon_health, "driver_domains": domains}
    lines = [
        f"daemon: pid {daemon_health.get('pid')}, {daemon_health.get('mode')} host, "
        f"up {daemon_health.get('uptime_seconds')} s, xenstore {daemon_health.get('xenstore')}"
    ]
    rows = [
        {
            **d,
            "last": _last_incident(d.get("last_incident")),
            "phase": (d.get("incident") or {}).get("phase"),
        }
        for d in domains
    ]
    lines.append(render_table(_STATUS_COLUMNS, rows))
    lines += [f"{d['name']}: {d['error']}" for d in domains if d.get("error")]
    lines += [
        f"{d['name']}: parked (never connected; retried): {p}" for d in domains for p in d.get("parked", [])
    ]
    emit_record(cli.as_json, "status", record, "\n".join(lines))


_STATUS_COLUMNS = (
    Column("Name", "name"),
    Column("ID", "domid", right_align=True),
    Column("State", "state"),
    Column("Restarts", "restarts", right_align=True),
    Column("Crashes", "crashes", right_align=True),
    Column("Frontends", "frontends", right_align=True),
    Column("Recovery", "phase"),
    Column("Last incident", "last"),
)


def _last_incident(incident: dict[str, Any] | None) -> str | None:
    if not incident:
        return None
    when = dt.datetime.fromtimestamp(float(incident["detected_at"])).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when} MTTR {incident['mttr_seconds']:.2f}s"


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until interrupted.")
@click.option("--since", default=None, help="Only events after T: ISO 8601 time, or seconds ago (e.g. 3600).")
@pass_cli
def events(cli: CliContext, follow: bool, since: str | None) -> None:
    """Show the history of incidents and recoveries, each phase with its timestamp.

    A recovery appears as detected, detached, restarted, ready, one `reattached` per frontend and
    `recovered` (with the same incident id), so the time to repair is visible per incident.
    Changes nothing.

    \b
    Exit status: 0 ok, 1 the daemon is not running, 2 invalid --since.
    """
    socket_path = cli.config().settings.control_socket
    args: dict[str, Any] = {}
    if since is not None:
        args["since"] = _parse_since(since)
    answer = answer_or_raise(request(socket_path, "events", args))
    records: list[dict[str, Any]] = answer["events"]
    columns = (
        Column("Time", "time"),
        Column("Event", "event"),
        Column("DD", "driver_domain"),
        Column("Details", "details"),
    )
    emit_list(cli.as_json, "events", columns, [_event_row(r, cli.as_json) for r in records])
    last = records[-1]["seq"] if records else 0
    while follow:
        answer = answer_or_raise(request(socket_path, "events", {"after_seq": last, "wait": 25}))
        for record in answer["events"]:
            last = record["seq"]
            if cli.as_json:
                import json

                click.echo(json.dumps(record))
            else:
                row = _event_row(record, False)
                click.echo(
                    f"{row['time']}  {row['event']:<18} {row['driver_domain'] or '-':<10} {row['details']}"
                )


def _event_row(record: dict[str, Any], raw: bool) -> dict[str, Any]:
    if raw:
        return record
    details = " ".join(
        f"{k}={v}" for k, v in record.items() if k not in ("seq", "ts", "event", "driver_domain")
    )
    when = dt.datetime.fromtimestamp(float(record["ts"])).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return {
        "time": when,
        "event": record["event"],
        "driver_domain": record.get("driver_domain"),
        "details": details,
    }


def _parse_since(text: str) -> float:
    try:
        return time.time() - float(text)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InputError(f"--since {text!r}: give seconds ago or an ISO 8601 time") from None
