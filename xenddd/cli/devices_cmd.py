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
from xenddd.registry.persistence import frontend_to_json


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
    try:
        registry.load()
        try:
            registry.resync()
        except XenstoreUnavailable as exc:
            click.echo(f"xenddd: warning: {exc}; showing the last recorded registry", err=True)
    finally:
        xenstore.close()
    rows = [_row(f) for f in registry.frontends(kind, guest=guest, backend=backend)]
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


def _row(frontend: Frontend) -> dict[str, Any]:
    row: dict[str, Any] = frontend_to_json(frontend)
    params = frontend.params
    row.update(
        guest=frontend.guest_name,
        be=f"{frontend.backend_name}/{frontend.backend_domid}",
        mac=params.mac if isinstance(params, VifParams) else None,
        vdev=params.vdev if isinstance(params, VbdParams) else None,
        backend_state=int(frontend.backend_state),
        frontend_state=int(frontend.frontend_state),
        be_state=_state(frontend.backend_state),
        fe_state=_state(frontend.frontend_state),
        hotplug_status=frontend.hotplug_status,
        status="orphaned" if frontend.orphaned else "ok",
    )
    return row


def _state(state: XenbusState) -> str | None:
    return None if state is XenbusState.UNKNOWN else f"{int(state)}:{state.name.lower().replace('_', '-')}"
