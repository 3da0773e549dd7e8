"""The operator's configuration: frozen dataclasses and the TOML reader that builds them.

Owns: the config model (`spec`), reading and validating `/etc/xenddd/xenddd.toml` (`loader`,
`toml_reader`), `config check`'s findings and their severities (`check`), the do-nothing config the
Debian package and `scripts/install` put there (`default.toml`), and the annotated example documenting
every key (`example.toml`).
May import: `xenddd.model`, `xenddd.errors` — nothing else of xenddd, no third-party library.
Imported by: every other package; it imports none of them.
"""
