"""The service commands: `daemon`, `status`, `events` (issue #8)."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import click

from xenddd.adapters.systemd import Notifier, configure_logging, journal_event
from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import Column, emit_json, emit_list, incident_summary, render_table
from xenddd.config.loader import DEFAULT_CONFIG_PATH
from xenddd.config.spec import Config
from xenddd.errors import DaemonNotRunning, InputError, XendddError
from xenddd.recovery.history import History
from xenddd.registry.xenstored_quota import quota_warnings, read_xenstored_quotas
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
    domains and [[simulation.guest]] entries. Its xenstored, control socket and state directory are in
    one predictable directory (/run/xenddd-sim as root; $XENDDD_SIM_DIR overrides it), printed at start
    and shown by `xenddd --simulate status`; the config's state_dir and control_socket win if it sets
    them. `xenddd sim crash NAME` (or destroy, shutdown) injects a fault to rehearse a recovery.

    One daemon per state directory: a second one exits 1 naming the running one's pid.

    \b
    Exit status: 0 stopped by a signal, 1 failed (or another daemon runs), 2 invalid config.
    """
    if simulate:
        cli.simulate = True
    config = cli.config()
    journal = configure_logging(config.settings.log_level)
    if cli.simulate:
        from xenddd.service.simulated import prepare_simulation_dir, simulation_dir

        prepare_simulation_dir(simulation_dir())
    # Before anything is touched: a second daemon must not finish PCI steps or take the control socket.
    with daemon_lock(config.settings.state_dir):
        if cli.simulate:
            sys.exit(_run_simulated(cli, config, journal))
        from xenddd.service.production import production_runtime

        notifier = Notifier()
        runtime = production_runtime(config, notifier)
        from xenddd.service.daemon import Daemon

        service = Daemon(config, runtime, config_path=cli.config_path, notifier=notifier)
        if journal:
            service.history.subscribe(journal_event)
        sys.exit(service.run())


def _run_simulated(cli: CliContext, config: Config, journal: bool) -> int:
    from xenddd.service.daemon import Daemon
    from xenddd.service.simulated import serve_faults, simulated_runtime, simulation_dir, simulation_settings
    from xenddd.sim.socket_host import SimulatedHost

    settings = config.settings
    xenstored = settings.xenstore_socket
    sim = SimulatedHost.start(xenstored)
    faults = serve_faults(sim, simulation_dir())
    config_option = f" --config {cli.config_path}" if cli.config_path != DEFAULT_CONFIG_PATH else ""
    for line in (
        "simulated host",
        f"  xenstored       {xenstored}  (XENSTORED_PATH={xenstored} xenstore-ls)",
        f"  control socket  {settings.control_socket}",
        f"  state           {settings.state_dir}",
        f"  commands        xenddd --simulate{config_option} status | list | events -f | network-list",
        "  faults          xenddd sim crash|destroy|shutdown NAME",
    ):
        click.echo(f"xenddd: {line}", err=True)
    try:
        service = Daemon(
            config,
            simulated_runtime(sim, config),
            config_path=cli.config_path,
            local_settings=lambda reloaded: simulation_settings(reloaded, simulation_dir()),
        )
        if journal:
            service.history.subscribe(journal_event)
        return service.run()
    finally:
        faults.stop()
        sim.stop()


@click.command()
@pass_cli
def status(cli: CliContext) -> None:
    """Show the daemon's health and every driver domain's state, restarts, frontends and last incident.

    Asks the running daemon over its control socket; changes nothing.

    \b
    Exit status: 0 ok, 1 the daemon is not running or did not answer.
    """
    answer = answer_or_raise(request(cli.daemon_settings().control_socket, "status"))
    daemon_health: dict[str, Any] = answer.get("daemon", {})
    domains: list[dict[str, Any]] = answer.get("driver_domains", [])
    lines = [
        f"daemon: pid {daemon_health.get('pid')}, {daemon_health.get('mode')} host, "
        f"up {daemon_health.get('uptime_seconds')} s, xenstore {daemon_health.get('xenstore')}"
    ]
    if "passes" in daemon_health:
        lines.append(
            f"work: {daemon_health['passes']} passes in {daemon_health['pass_seconds']} s, "
            f"{daemon_health['cpu_seconds']} s of CPU"
        )
    slow = daemon_health.get("slow_call")
    if slow:
        lines.append(f"toolstack call running for {slow['seconds']} s: {slow['what']}")
    if daemon_health.get("mode") == "simulated":
        lines.append(
            f"simulated host: xenstored {daemon_health.get('xenstore_socket')}, "
            f"state {daemon_health.get('state_dir')}"
        )
    rows = [
        {
            **d,
            "last": incident_summary(d.get("last_incident")),
            "phase": (d.get("incident") or {}).get("phase"),
        }
        for d in domains
    ]
    if daemon_health.get("reload_error"):
        lines.append(f"reload failed, running the previous config: {daemon_health['reload_error']}")
    lines.append(render_table(_STATUS_COLUMNS, rows))
    lines += [f"{d['name']}: {d['error']}" for d in domains if d.get("error")]
    lines += [standby_line(d["name"], d["standby"]) for d in domains if d.get("standby")]
    lines += [saved_instance_line(d["name"], d["saved_instance"]) for d in domains if d.get("saved_instance")]
    lines += [in_place_line(d) for d in domains if d.get("reconnect") == "in-place"]
    if daemon_health.get("mode") != "simulated":  # the simulated host's xenstored has its own quotas
        served = {d["name"]: int(d.get("frontends") or 0) for d in domains}
        near = quota_warnings(served, read_xenstored_quotas())
        lines += [f"warning: {name} {text}" for name, text in near.items()]
        for d in domains:
            d["xenstore_quota_warning"] = near.get(d["name"])
    lines += [
        f"{d['name']}: parked (never connected; retried): {p}" for d in domains for p in d.get("parked", [])
    ]
    if cli.as_json:
        emit_json("status", domains, daemon=daemon_health)
    else:
        click.echo("\n".join(lines))


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


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until interrupted.")
@click.option(
    "--since", default=None, help="Only events after T: an ISO 8601 time, or an age such as 90s, 10m, 1h, 2d."
)
@click.option(
    "-n", "--lines", "count", type=click.IntRange(min=0), default=None, help="Only the last N events."
)
@pass_cli
def events(cli: CliContext, follow: bool, since: str | None, count: int | None) -> None:
    """Show the history of incidents and recoveries, each phase with its timestamp.

    A recovery appears as detected, detached, restarted, ready, one `reattached` per frontend and
    `recovered` (with the same incident id), so the time to repair is visible per incident. Asks the
    daemon; while it is not running, reads the history it left in its state directory. --follow keeps
    following across a restart of the daemon. Changes nothing.

    \b
    Exit status: 0 ok, 1 the history could not be read, 2 invalid --since or -n.
    """
    settings = cli.daemon_settings()
    after = _parse_since(since) if since is not None else None
    history = _history(settings.control_socket, settings.state_dir)
    records = [r for r in history if after is None or r["ts"] >= after]
    if count is not None:
        records = records[len(records) - count :] if count else []
    columns = (
        Column("Time", "time"),
        Column("Event", "event"),
        Column("DD", "driver_domain"),
        Column("Details", "details"),
    )
    emit_list(cli.as_json, "events", columns, [_event_row(r, cli.as_json) for r in records])
    if follow:
        _follow(
            cli.as_json, settings.control_socket, settings.state_dir, history[-1]["seq"] if history else 0
        )


def _history(socket_path: Path, state_dir: Path) -> list[dict[str, Any]]:
    """The daemon's history; what it recorded in `state_dir` while it is not running."""
    try:
        answer = request(socket_path, "events")
    except DaemonNotRunning:
        return _recorded(state_dir)
    records: list[dict[str, Any]] = answer_or_raise(answer)["events"]
    return records


def _follow(as_json: bool, socket_path: Path, state_dir: Path, last: int) -> None:
    """New records as they come, from the daemon (which answers as soon as one is recorded) or, while it
    is down or restarting, from its history file; sequence numbers carry on across restarts."""
    while True:
        try:
            new: list[dict[str, Any]] = answer_or_raise(
                request(socket_path, "events", {"after_seq": last, "wait": 25})
            )["events"]
        except DaemonNotRunning:
            new = _recorded(state_dir, after_seq=last)
            if not new:
                time.sleep(FOLLOW_POLL)
        for record in new:
            last = record["seq"]
            if as_json:
                click.echo(json.dumps(record))
            else:
                row = _event_row(record, False)
                click.echo(
                    f"{row['time']}  {row['event']:<18} {row['driver_domain'] or '-':<10} {row['details']}"
                )


FOLLOW_POLL = 1.0  # seconds between reads of the history file while the daemon is not running


def _recorded(state_dir: Path, after_seq: int = 0) -> list[dict[str, Any]]:
    try:
        return History(state_dir).since(after_seq=after_seq)
    except OSError as exc:
        raise XendddError(f"cannot read the history in {state_dir}: {exc.strerror}") from None


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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_since(text: str) -> float:
    """An age (`3600`, `90s`, `10m`, `1h`, `2d`) or an ISO 8601 time (local time unless it has an offset)."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        age = float(number) * _UNITS[unit]
    except ValueError:
        pass
    else:
        if age >= 0 and math.isfinite(age):
            return time.time() - age
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InputError(
            f"--since {text!r}: give an age (90s, 10m, 1h, 2d) or an ISO 8601 time (2024-05-01T12:00)"
        ) from None


def in_place_line(domain: dict[str, Any]) -> str:
    line = f"{domain['name']}: reconnects its guests in place (restarted as the same domid, nothing detached)"
    others = domain.get("reattach_guests")
    return f"{line}, but reattaches {', '.join(others)}" if others else line


def saved_instance_line(name: str, saved: dict[str, Any]) -> str:
    """What its starts will do: restore the file, or boot (and save once the domain serves nothing)."""
    file = saved.get("file")
    if saved.get("saving"):
        state = "being saved"
    elif file is None:
        state = "not saved yet: booted at its starts until it is saved, once it serves nothing"
    elif not file["current"]:
        state = "saved under another definition: booted, saved again once it serves nothing"
    else:
        state = f"restored at its starts ({file['bytes'] / 2**20:.0f} MiB on disk)"
    line = f"{name}: saved instance {saved['path']} {state}"
    return line + (f"; last save failed: {saved['error']}" if saved.get("error") else "")


def standby_line(name: str, standby: dict[str, Any]) -> str:
    """What a standby costs is said with its state: a whole second instance's memory."""
    where = f" as domid {standby['domid']}" if standby.get("domid") is not None else ""
    line = f"{name}: standby {standby['name']} {standby['state']}{where} ({standby['memory_mib']} MiB)"
    return line + (f"; last start failed: {standby['error']}" if standby.get("error") else "")
