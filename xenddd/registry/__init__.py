"""The frontend registry: which guest frontend each driver domain serves, remembered across its crashes.

Owns: judging the nodes guests and driver domains write (`records`: hostile input, cross-checked with
dom0's `/libxl` records), reading them (`device_nodes`), the
domid → guest directory (`domain_directory`), the registry and its persistence (`frontends`,
`persistence`), the xenstore watches that feed it and what their hints ask to re-read
(`backend_watcher`, `hinted_paths`), rate-limited complaints about bad nodes (`complaints`), and a
guest device's live state (`guest_view`).
May import: `xenddd.adapters`, `xenddd.config`, `xenddd.model`, `xenddd.errors`, `xenddd.hints`,
`xenddd.state`.
Must not import: `xenddd.pci` (independent), recovery, service, sim, cli.
"""
