"""xenddd, the Xen driver-domain daemon.

The top level holds only the vocabulary every package shares — `model` (domain types), `errors`, `hints`
(the reconciler queue's messages), `state` (crash-safe JSON records) — and the packages, layered from the
top: `cli` → `service` → `recovery` → `registry` | `pci` → `adapters` → `config` → the vocabulary.
`sim` stands beside `adapters` as a simulated Xen host. The layers are import-linter contracts in
pyproject.toml, checked by `scripts/test`.
"""

__version__ = "0.1.0"
