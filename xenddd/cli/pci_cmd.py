"""PCI hiding commands: `pci-assignable-add`, `-remove`, `-list` (issue #4)."""

from __future__ import annotations

import click

from xenddd.cli.context import CliContext, not_implemented, pass_cli


@click.command("pci-assignable-add")
@click.argument("bdf")
@click.option("--name", default=None, help="Driver domain the device is meant for (recorded).")
@click.option("--force", is_flag=True, help="Hide it even if dom0 appears to depend on it.")
@pass_cli
def pci_assignable_add(cli: CliContext, bdf: str, name: str | None, force: bool) -> None:
    """Hide PCI device BDF from dom0 by binding it to xen-pciback.

    Exit status: 0 hidden (or already), 1 failed (rolled back), 2 invalid BDF or refused.
    """
    raise not_implemented("pci-assignable-add", 4)


@click.command("pci-assignable-remove")
@click.argument("bdf")
@click.option("--rebind", is_flag=True, help="Bind the device's original driver again.")
@click.option("--force", is_flag=True, help="Even if a running domain has it assigned.")
@pass_cli
def pci_assignable_remove(cli: CliContext, bdf: str, rebind: bool, force: bool) -> None:
    """Give PCI device BDF back to dom0 (unbind from xen-pciback).

    Exit status: 0 done, 1 failed, 2 invalid BDF or refused.
    """
    raise not_implemented("pci-assignable-remove", 4)


@click.command("pci-assignable-list")
@pass_cli
def pci_assignable_list(cli: CliContext) -> None:
    """List the PCI devices bound to xen-pciback. Changes nothing."""
    raise not_implemented("pci-assignable-list", 4)
