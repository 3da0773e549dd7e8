"""Recovery: the level-triggered reconciler and what it does when a driver domain dies.

Owns: desired vs observed state (`reconciler`), an incident's phases — detach, restart, wait ready,
reattach, confirm (`phases`), crash-loop backoff (`restart_policy`), the intent log that lets a killed
daemon finish a recovery (`intent`), and the incident history with its MTTR (`history`).
May import: `xenddd.registry`, `xenddd.adapters`, `xenddd.config`, and the shared vocabulary.
Must not import: service, sim, cli; nor `xenddd.pci` (PCI preparation is handed in as a callable).
"""
