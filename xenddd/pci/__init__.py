"""PCI devices for driver domains: hiding them from dom0 through xen-pciback, and giving them back.

Owns: the assignment steps with their intent and rollback (`assignment`), what dom0 depends on and so
must never be hidden (`safety`), the configured devices as this host has them for `config check`
(`preflight`), and pci.ids names for messages (`names`).
May import: `xenddd.adapters`, `xenddd.config`, and the shared vocabulary.
Must not import: `xenddd.registry` (independent), recovery, service, sim, cli.
"""
