"""The daemon's adapters on a real Xen dom0: xenstored's socket, libvirt's Xen driver, pciback sysfs.

Both services may still be starting when the daemon does (it is ordered after them, but socket activation
and slow hosts exist): connecting is retried with backoff for as long as it takes, telling systemd what
the daemon waits for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from xenddd.adapters.hypervisor import LibvirtHypervisor
from xenddd.adapters.libxl_devices import LibxlDevices
from xenddd.adapters.pci_sysfs import PciSysfs
from xenddd.adapters.systemd import Notifier
from xenddd.adapters.toolstacks import toolstacks, xl_owned_names
from xenddd.adapters.udev import PyudevUevents
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.config.spec import Config, DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.pci.assignment import PciAssigner, xenstore_pci_users
from xenddd.service.daemon import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF_MAX = 10.0


def production_runtime(config: Config, notifier: Notifier) -> Runtime:
    settings = config.settings

    def connect_xenstore() -> Xenstore:
        xenstore = Xenstore(settings.xenstore_socket)
        xenstore.connect()
        return xenstore

    xenstore = _until_connected(connect_xenstore, "xenstored", notifier)
    # libxl's helpers load now, not during the first recovery
    devices = LibxlDevices(warm=settings.max_parallel_reattach)
    libvirt = _until_connected(
        lambda: LibvirtHypervisor(settings.libvirt_uri, devices=devices), "libvirtd", notifier
    )
    # one helper of its own lists xl's domains, only if the config has any (another starts at a reload)
    lister = LibxlDevices(warm=1 if xl_owned_names(config.driver_domains) else 0)
    hypervisor = toolstacks(config, libvirt, xenstore, devices, lister)
    pci = PciAssigner(
        PciSysfs(settings.sysfs_root),
        PyudevUevents(),
        settings.state_dir,
        users_of=xenstore_pci_users(xenstore),
    )
    if pci.sysfs.pciback_loaded():
        for line in pci.finish_interrupted():
            log.warning("PCI: %s", line)

    def prepare(spec: DriverDomainSpec) -> None:
        pci.prepare_domain(spec, hypervisor.iommu_available)

    def close() -> None:
        hypervisor.close()
        lister.close()
        xenstore.close()

    return Runtime(xenstore=xenstore, hypervisor=hypervisor, prepare=prepare, close=close, description="Xen")


def _until_connected(connect: Callable[[], T], what: str, notifier: Notifier) -> T:
    delay = 0.5
    while True:
        try:
            return connect()
        except XendddError as exc:
            notifier.status(f"waiting for {what}")
            log.warning("waiting for %s: %s (retrying in %.1f s)", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
