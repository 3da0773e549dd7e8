"""Driver-domain lifecycle commands: `list`, `create`, `destroy`, `restart` (issue #5).

While the daemon runs, these go through its control socket, so a planned operation never races a
recovery; without it, `list`, `create` and `destroy` talk to libvirt directly, and `restart` (which must
reattach frontends afterwards) asks for the daemon.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import Column, emit_list, emit_record, incident_summary
from xenddd.errors import DaemonNotRunning
from xenddd.service.control import answer_or_raise, request

if TYPE_CHECKING:
    from xenddd.adapters.toolstacks import Toolstacks
    from xenddd.config.spec import Config

_COLUMNS = (
    Column("Name", "name"),
    Column("ID", "domid", right_align=True),
    Column("Mem", "memory_mib", right_align=True),
    Column("VCPUs", "vcpus", right_align=True),
    Column("State", "state"),
    Column("Time(s)", "cpu_time_s", right_align=True),
    Column("Restarts", "restarts", right_align=True),
    Column("Frontends", "frontends", right_align=True),
    Column("Upstream", "upstream"),
    Column("Last incident", "last"),
)


def _daemon(cli: CliContext, op: str, **args: Any) -> dict[str, Any] | None:
    """The daemon's answer, or None when it is not running."""
    try:
        answer = request(cli.config().settings.control_socket, op, args, timeout=300.0)
    except DaemonNotRunning:
        return None
    return answer_or_raise(answer)


@click.command("list")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@pass_cli
def list_domains(cli: CliContext, names: tuple[str, ...]) -> None:
    """List the configured driver domains (or only NAME...), like `xl list`, with xenddd's view of each.

    Name, ID, Mem (MiB), VCPUs, State, Time(s) as `xl list` shows them, plus restarts, frontends served
    and the last crash, as the daemon knows them (`-` when the daemon is not running), and the driver
    domains that serve each one's own vifs and disks (its upstream). Changes nothing.

    \b
    Exit status: 0 ok, 1 the toolstack could not be asked, 2 invalid config or a NAME not configured.
    """
    for name in names:
        cli.config().driver_domain(name)
    answer = _daemon(cli, "list")
    rows = answer["driver_domains"] if answer is not None else _list_from_toolstacks(cli)
    rows = [row for row in rows if not names or row["name"] in names]
    if not cli.as_json:
        rows = [
            {
                **d,
                "last": incident_summary(d.get("last_incident")),
                "upstream": ",".join(d["upstreams"]) or None,
            }
            for d in rows
        ]
    emit_list(cli.as_json, "driver-domains", _COLUMNS, rows)


def _list_from_toolstacks(cli: CliContext) -> list[dict[str, Any]]:
    config = cli.config()
    with _toolstacks(config) as hypervisor:
        rows = []
        for spec in config.driver_domains:
            info = hypervisor.domain(spec.name)
            rows.append(
                {
                    "name": spec.name,
                    "domid": info.domid if info else None,
                    "memory_mib": info.memory_kib // 1024 if info else spec.memory_mib,
                    "vcpus": info.vcpus if info else spec.vcpus,
                    "state": info.state.value if info else "undefined",
                    "cpu_time_s": round(info.cpu_time_ns / 1e9, 1) if info else None,
                    "restarts": None,
                    "frontends": None,
                    "upstreams": list(spec.upstreams),
                    "last_incident": None,
                }
            )
        return rows


@contextlib.contextmanager
def _toolstacks(config: Config) -> Iterator[Toolstacks]:
    """The daemon's toolstacks, for a command run without it; xenstored is connected only if a promotion's
    rename or disk move needs it (none of these commands promotes)."""
    from xenddd.adapters.hypervisor import LibvirtHypervisor
    from xenddd.adapters.toolstacks import toolstacks
    from xenddd.adapters.xenstore.client import Xenstore

    xenstore = Xenstore(config.settings.xenstore_socket)
    try:
        hypervisor = toolstacks(config, LibvirtHypervisor(config.settings.libvirt_uri), xenstore)
        try:
            yield hypervisor
        finally:
            hypervisor.close()
    finally:
        xenstore.close()


@click.command()
@click.argument("name")
@pass_cli
def create(cli: CliContext, name: str) -> None:
    """Define (or update the definition of) and start the configured driver domain NAME through libvirt
    (or xl, for one with toolstack = "xl").

    Hides its PCI devices from dom0 first (refusing without IOMMU passthrough). Through the daemon when it
    runs, which then also clears a planned stop and, once the domain is ready, attaches again the guest
    frontends that `destroy --force` detached.

    \b
    Exit status: 0 started, 1 failed, 2 unknown NAME or bad config.
    """
    config = cli.config()
    spec = config.driver_domain(name)
    answer = _daemon(cli, "create", name=name)
    if answer is None:
        from xenddd.adapters.pci_sysfs import PciSysfs
        from xenddd.adapters.udev import PyudevUevents
        from xenddd.pci.assignment import PciAssigner

        with _toolstacks(config) as hypervisor:
            pci = PciAssigner(
                PciSysfs(config.settings.sysfs_root), PyudevUevents(), config.settings.state_dir
            )
            pci.prepare_domain(spec, hypervisor.iommu_available)
            hypervisor.define(spec)
            info = hypervisor.start(name)
        from xenddd.recovery.intent import IntentLog

        detached = len(IntentLog(config.settings.state_dir, read_only=True).load(name).detached_by_destroy)
        text = f"{name}: started (domid {info.domid})" + (
            f"; the {detached} frontend(s) `destroy` detached stay detached until the daemon runs: "
            f"then `xenddd create {name}` attaches them again"
            if detached
            else ""
        )
        record = {"name": name, "domid": info.domid, "reattaching": 0, "detached": detached}
        emit_record(cli.as_json, "create", record, text)
        return
    reattaching = answer.get("reattaching", 0)
    text = (
        f"{name}: starting; {reattaching} frontend(s) detached by `destroy` are attached again once it "
        "is ready (xenddd events --follow shows it)"
        if reattaching
        else f"{name}: started"
    )
    emit_record(cli.as_json, "create", {"name": name, "reattaching": reattaching}, text)


@click.command()
@click.argument("name")
@click.option(
    "--force", "-f", is_flag=True, help="Stop it even while guests are attached through it (detaching them)."
)
@pass_cli
def destroy(cli: CliContext, name: str, force: bool) -> None:
    """Stop driver domain NAME: a planned stop, so xenddd does not restart it.

    Refuses while it serves guest frontends unless --force, which detaches them cleanly first and
    remembers them: `xenddd create NAME` attaches them again. A domain that is not running is left
    as it is.

    \b
    Exit status: 0 stopped, 1 failed, 2 unknown NAME or refused (not running, frontends attached).
    """
    spec = cli.config().driver_domain(name)
    answer = _daemon(cli, "destroy", name=name, force=force)
    if answer is None:
        tool = "xl" if spec.toolstack == "xl" else "virsh"
        raise DaemonNotRunning(
            f"the xenddd daemon is not running; stop {name} with `{tool} destroy {name}` "
            "(its guests' frontends are then left stale)"
        )
    detached = answer.get("detached", 0)
    text = f"{name}: destroyed ({detached} frontend(s) detached)"
    emit_record(cli.as_json, "destroy", {"name": name, "detached": detached}, text)


@click.command()
@click.argument("name")
@pass_cli
def restart(cli: CliContext, name: str) -> None:
    """Restart driver domain NAME and reattach its guests' frontends; also clears a `failed` state.

    Returns once the restart is under way; follow it with `xenddd events --follow`.

    \b
    Exit status: 0 restart begun, 1 failed or the daemon is not running, 2 unknown NAME.
    """
    cli.config().driver_domain(name)
    if _daemon(cli, "restart", name=name) is None:
        raise DaemonNotRunning("the xenddd daemon is not running: it is what reattaches the frontends")
    text = f"{name}: restart begun (xenddd events --follow shows the recovery)"
    emit_record(cli.as_json, "restart", {"name": name}, text)
