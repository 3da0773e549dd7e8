"""The edges: the only code that talks to libvirt, xl, xenstored, sysfs, udev, systemd and apt.

Owns: libvirt and the domain XML it is given (`hypervisor`, `domain_xml`, with the `hypervisor_api`
protocol the core and the simulator share), `xl` (`xl`, `xl_domains`, `xl_config`, and libxl itself in
`libxl_create`, for a domain created as a chosen domid, and `domain_rename`, libxl's rename as the
xenstore transaction it is), xenstored (`xenstore/`), pciback sysfs
(`pci_sysfs`), uevents (`udev`), the notify socket and journal (`systemd`), Debian packages fetched and
unpacked but not installed (`debian_packages`). Library quirks stay here; the core sees typed objects.
May import: `xenddd.config`, `xenddd.model`, `xenddd.errors`, and the third-party libraries (pyxs,
libvirt, pyudev) — the only package allowed to.
Must not import: registry, pci, recovery, service, sim, cli.
"""
