"""Typed errors that carry the operator's one-line message and the exit status the CLI returns.

Exit codes follow STYLE.md: 0 ok, 1 the operation failed, 2 bad input (nothing was changed).
"""

from __future__ import annotations


class XendddError(Exception):
    """An expected failure: the CLI prints `xenddd: <message>` and exits with `exit_code`, no traceback."""

    exit_code = 1


class InputError(XendddError):
    """The operator's input (argument, config value, BDF...) is invalid; nothing on the host was touched."""

    exit_code = 2


class ConfigError(InputError):
    """An invalid configuration file; the message names the file, the key path and the line when known.

    `key_path` (e.g. `driver_domain[1].pci[0].bdf`) lets the loader look up the line after the fact, since
    tomllib reports lines only for syntax errors.
    """

    def __init__(self, message: str, key_path: str = "") -> None:
        super().__init__(message)
        self.key_path = key_path


class NotImplementedYet(XendddError):
    """A subcommand whose issue has not landed; says so honestly instead of pretending to work."""


class DaemonNotRunning(XendddError):
    """The CLI needed the daemon's control socket and nobody is listening on it."""
