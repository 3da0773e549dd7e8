"""The long-running daemon: its threads, control socket, metrics, and the adapters it runs on.

Owns: the daemon runtime (`daemon`), one daemon per state directory (`lock`), the CLI ↔ daemon socket
(`control`), the metrics textfile (`metrics`), and the two ways of wiring adapters: a real dom0
(`production`) and the simulated host (`simulated`, the only module here that may import `xenddd.sim`).
May import: recovery, registry, pci, adapters, config, and the shared vocabulary.
Must not import: `xenddd.cli`.
"""
