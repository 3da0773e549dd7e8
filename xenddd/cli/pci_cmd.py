"""PCI hiding commands: `pci-assignable-add`, `-remove`, `-list` (issue #4)."""

from __future__ import annotations

import click

from xenddd.adapters.pci_sysfs import PciSysfs
from xenddd.adapters.udev import PyudevUevents
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xenstore.errors import XenstoreError
from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import Column, emit_list, emit_record
from xenddd.config.loader import DEFAULT_CONFIG_PATH
from xenddd.config.spec import PciDeviceSpec
from xenddd.errors import InputError
from xenddd.model import Bdf
from xenddd.pci.assignment import PciAssigner, UsersOf, xenstore_pci_users


def _assigner(cli: CliContext, *, need_users: bool) -> PciAssigner:
    settings = cli.settings()
    users: UsersOf = lambda _bdf: []  # noqa: E731
    if need_users:
        try:
            xenstore = Xenstore(settings.xenstore_socket, call_timeout=5.0)
            xenstore.connect()
            users = xenstore_pci_users(xenstore)
        except XenstoreError:

            def users(bdf: Bdf) -> list[str]:
                raise InputError(
                    f"cannot tell whether a domain uses {bdf}: xenstored is unreachable at "
                    f"{settings.xenstore_socket} (use --force to give it back anyway)"
                )

    return PciAssigner(PciSysfs(settings.sysfs_root), PyudevUevents(), settings.state_dir, users_of=users)


def _configured_spec(cli: CliContext, bdf: Bdf) -> tuple[str | None, PciDeviceSpec | None]:
    """The device's options and driver domain from the config, if it names this device."""
    if cli.config_path == DEFAULT_CONFIG_PATH and not cli.config_path.exists():
        return None, None
    for domain in cli.config().driver_domains:
        for device in domain.pci:
            if device.bdf == bdf:
                return domain.name, device
    return None, None


@click.command("pci-assignable-add")
@click.argument("bdf")
@click.option("--name", default=None, help="Driver domain the device is meant for (recorded).")
@click.option("--force", "-f", is_flag=True, help="Hide it even if dom0 appears to depend on it.")
@pass_cli
def pci_assignable_add(cli: CliContext, bdf: str, name: str | None, force: bool) -> None:
    """Hide PCI device BDF (dddd:bb:dd.f or bb:dd.f) from dom0 by binding it to xen-pciback.

    Records the device's current driver in the state directory first, then unbinds it, points it at
    pciback (driver_override, or pciback's slot list on older kernels), binds it and waits for the
    kernel's bind event. Any failure rolls everything back. Refuses, changing nothing, a device dom0
    depends on (root or mounted disk controller, a NIC carrying dom0's routes, the boot VGA, or a device
    sharing an IOMMU group with one of those) unless --force. Options (permissive, reset policy) come
    from the config when it lists the device.

    \b
    Exit status: 0 hidden (or already hidden), 1 failed and rolled back, 2 invalid BDF or refused.
    """
    address = Bdf.parse(bdf)
    configured_name, spec = _configured_spec(cli, address)
    changed = _assigner(cli, need_users=False).hide(
        address, force=force, name=name or configured_name, spec=spec
    )
    text = f"{address}: {'hidden from dom0 (bound to pciback)' if changed else 'already bound to pciback'}"
    emit_record(cli.as_json, "pci-assignable-add", {"bdf": str(address), "changed": changed}, text)


@click.command("pci-assignable-remove")
@click.argument("bdf")
@click.option("--rebind", "-r", is_flag=True, help="Bind the device's original driver again.")
@click.option("--force", "-f", is_flag=True, help="Even if a running domain has it assigned.")
@pass_cli
def pci_assignable_remove(cli: CliContext, bdf: str, rebind: bool, force: bool) -> None:
    """Give PCI device BDF back to dom0: unbind it from xen-pciback and remove its slot.

    With --rebind, binds the driver recorded when it was hidden and waits for the kernel's bind event;
    a device hidden by something other than xenddd has none recorded, and is then left unbound.
    Refuses, changing nothing, while a running domain has the device assigned (xenstore backend/pci),
    unless --force.

    \b
    Exit status: 0 done, 1 failed, 2 invalid BDF or refused.
    """
    address = Bdf.parse(bdf)
    driver = _assigner(cli, need_users=not force).give_back(address, rebind=rebind, force=force)
    if driver is not None:
        text = f"{address}: given back to dom0 and bound to {driver}"
    elif rebind:
        text = f"{address}: given back to dom0, not rebound: no original driver is recorded for it"
    else:
        text = f"{address}: given back to dom0"
    emit_record(cli.as_json, "pci-assignable-remove", {"bdf": str(address), "driver": driver}, text)


@click.command("pci-assignable-list")
@pass_cli
def pci_assignable_list(cli: CliContext) -> None:
    """List the PCI devices bound to xen-pciback (or recorded by xenddd), with their names, original
    driver, IOMMU group, reset methods and the domain using each. Changes nothing.

    \b
    Exit status: 0 ok, 1 sysfs could not be read.
    """
    rows = (
        _assigner(cli, need_users=True).list()
        if _xenstore_reachable(cli)
        else _assigner(cli, need_users=False).list()
    )
    columns = (
        Column("BDF", "bdf"),
        Column("Device", "name"),
        Column("Driver", "driver"),
        Column("Original", "original_driver"),
        Column("For", "for"),
        Column("IOMMU", "iommu_group", right_align=True),
        Column("Reset", "reset_methods"),
        Column("Used by", "used_by"),
    )
    emit_list(cli.as_json, "pci-assignable", columns, rows)


def _xenstore_reachable(cli: CliContext) -> bool:
    return cli.settings().xenstore_socket.exists()
