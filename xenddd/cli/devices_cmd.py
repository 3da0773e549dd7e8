"""Frontend registry views: `network-list`, `block-list` (issue #6).

Read-only: the registry recorded by the daemon (state directory) is loaded and reconciled in memory against
live xenstore, so entries of a crashed driver domain show as orphaned. If xenstored cannot be reached, the
last recorded registry is shown without live states, and a warning says so.
"""

from __future__ import annotations

from typing import Any

import click

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xenstore.errors import XenstoreUnavailable
from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import Column, emit_list
from xenddd.errors import InputError
from xenddd.model import DeviceKind, Frontend, VbdParams, VifParams, XenbusState
from xenddd.registry.frontends import FrontendRegistry


@click.command("network-list")
@click.argument("guest", required=False)
@click.option("--backend", default=None, help="Only devices served by this driver domain.")
@pass_cli
def network_list(cli: CliContext, guest: str | None, backend: str | None) -> None:
    """List guests' network frontends (vif) and the driver domains serving them. Changes nothing."""
    _list_devices(cli, DeviceKind.VIF, guest, backend)


@click.command("block-list")
@click.argument("guest", required=False)
@click.option("--backend", default=None, help="Only devices served by this driver domain.")
@pass_cli
def block_list(cli: CliContext, guest: str | None, backend: str | None) -> None:
    """List guests' block frontends (vbd) and the driver domains serving them. Changes nothing."""
    _list_devices(cli, DeviceKind.VBD, guest, backend)


def _list_devices(cli: CliContext, kind: DeviceKind, guest: str | None, backend: str | None) -> None:
    config = cli.config()
    names = [spec.name for spec in config.driver_domains]
    if backend is not None and backend not in names:
        raise InputError(f"{backend!r} is not a configured driver domain (configured: {', '.join(names)})")
    xenstore = Xenstore(config.settings.xenstore_socket)
    registry = FrontendRegistry(xenstore, names, state_dir=config.settings.state_dir, read_only=True)
    live = True
    try:
        registry.load()
        try:
            registry.resync()
        except XenstoreUnavailable as exc:
            live = False
            click.echo(f"xenddd: warning: {exc}; showing the last recorded registry", err=True)
    finally:
        xenstore.close()
    frontends = registry.frontends(kind, guest=guest, backend=backend)
    if guest is not None and not frontends and not registry.frontends(guest=guest):
        raise InputError(f"{guest!r} is not a guest served by a configured driver domain")
    rows = [_row(f, live) for f in frontends]
    if not cli.as_json:
        rows = [_table_row(row) for row in rows]
    identity = Column("Mac", "mac") if kind is DeviceKind.VIF else Column("Vdev", "vdev")
    columns = [
        Column("Guest", "guest"),
        Column("Idx", "devid", right_align=True),
        Column("BE", "be"),
        identity,
        Column("BE-state", "be_state"),
        Column("FE-state", "fe_state"),
        Column("Hotplug", "hotplug_status"),
        Column("Status", "status"),
    ]
    emit_list(cli.as_json, f"{kind.value}-list", columns, rows)


def _row(frontend: Frontend, live: bool) -> dict[str, Any]:
    """One device, each fact once; `status` is `unknown` when xenstore could not be asked."""
    params = frontend.params
    identity = (
        {"mac": params.mac, "bridge": params.bridge}
        if isinstance(params, VifParams)
        else {"vdev": params.vdev, "target": params.target}
        if isinstance(params, VbdParams)
        else {}
    )
    return {
        "guest": frontend.guest_name,
        "guest_domid": frontend.guest_domid,
        "guest_uuid": frontend.guest_uuid,
        "devid": frontend.devid,
        "backend": frontend.backend_name,
        "backend_domid": frontend.backend_domid,
        **identity,
        "backend_state": _state(frontend.backend_state),
        "frontend_state": _state(frontend.frontend_state),
        "hotplug_status": frontend.hotplug_status,
        "status": "orphaned" if frontend.orphaned else "ok" if live else "unknown",
    }


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    states = {
        key: None
        if row[key] is None
        else f"{row[key]}:{XenbusState(row[key]).name.lower().replace('_', '-')}"
        for key in ("backend_state", "frontend_state")
    }
    return {
        **row,
        "be": f"{row['backend']}/{row['backend_domid']}",
        "be_state": states["backend_state"],
        "fe_state": states["frontend_state"],
    }


def _state(state: XenbusState) -> int | None:
    return None if state is XenbusState.UNKNOWN else int(state)
