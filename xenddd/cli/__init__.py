"""The `xenddd` command line: an `xl`-style group whose subcommands live in one module per concern.

Owns: the subcommands (`*_cmd`), their shared context and output (`context`, `output`), and the demo's
scenario (`demo`, `demo.toml`).
May import: every other package of xenddd, and click. Nothing imports it but `xenddd.__main__`.
"""
