"""Typed, path-aware access to a parsed TOML table, so every config error can say exactly where it is.

Each `TableReader` remembers its key path (`driver_domain[1].pci[0]`) and which keys were read; `finish()`
rejects whatever is left, which is how unknown (usually misspelt) keys are caught.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from xenddd.errors import ConfigError, InputError

T = TypeVar("T")
_MISSING: Any = object()


class TableReader:
    def __init__(self, table: dict[str, Any], key_path: str) -> None:
        self._table = table
        self._path = key_path
        self._used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def __contains__(self, key: str) -> bool:
        return key in self._table

    def error(self, key: str, message: str) -> ConfigError:
        key_path = self._key(key)
        return ConfigError(f"{key_path}: {message}", key_path)

    def _get(self, key: str, default: Any, required: bool) -> Any:
        self._used.add(key)
        if key in self._table:
            return self._table[key]
        if required:
            raise self.error(key, "is required")
        return default

    def table(self, key: str) -> TableReader:
        value = self._get(key, {}, False)
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, not {_kind(value)}")
        return TableReader(value, self._key(key))

    def tables(self, key: str) -> list[TableReader]:
        value = self._get(key, [], False)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"must be an array of tables ([[{self._key(key)}]]), not {_kind(value)}")
        return [TableReader(v, f"{self._key(key)}[{i}]") for i, v in enumerate(value)]

    def string(self, key: str, default: str) -> str:
        value = self._get(key, default, False)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_kind(value)}")
        if "\0" in value:
            raise self.error(key, "must not contain NUL characters")
        return value

    def optional_string(self, key: str) -> str | None:
        if key not in self._table:
            self._used.add(key)
            return None
        return self.string(key, "") or None

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.error(key, f"{value!r} is not one of " + ", ".join(repr(c) for c in choices))
        return value

    def path(self, key: str, default: Path | None, required: bool = False) -> Path:
        value = self._get(key, default, required)
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
            raise self.error(key, f"must be an absolute path, not {value!r}")
        return Path(value)

    def optional_path(self, key: str) -> Path | None:
        if key not in self._table:
            self._used.add(key)
            return None
        return self.path(key, None)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default, False)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_kind(value)}")
        return value

    def integer(self, key: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._get(key, default, False)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_kind(value)}")
        _check_range(self, key, value, minimum, maximum)
        return value

    def number(self, key: str, default: float, minimum: float | None = None) -> float:
        value = self._get(key, default, False)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"must be a finite number, not {value!r}")
        _check_range(self, key, value, minimum, None)
        return float(value)

    def string_list(self, key: str, choices: Sequence[str] | None, required: bool = False) -> list[str]:
        """A list of strings; a single string is accepted as a one-element list (`kind = "network"`)."""
        value = self._get(key, [], required)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise self.error(key, f"must be a string or a list of strings, not {_kind(value)}")
        for item in items:
            if choices is not None and item not in choices:
                raise self.error(key, f"{item!r} is not one of " + ", ".join(repr(c) for c in choices))
        if len(set(items)) != len(items):
            raise self.error(key, "lists the same value twice")
        return list(items)

    def checked(
        self, key: str, parse: Callable[[Any], T], required: bool = False, default: Any = _MISSING
    ) -> T:
        """Run a model parser (Bdf.parse, validate_domain_name...) and attach the key path to its error."""
        value = self._get(key, default, required)
        try:
            return parse(value)
        except InputError as exc:
            raise self.error(key, str(exc)) from None

    def finish(self) -> None:
        unknown = sorted(set(self._table) - self._used)
        if unknown:
            raise self.error(unknown[0], "unknown key (misspelt, or not valid here)")


def _check_range(
    reader: TableReader, key: str, value: float, minimum: float | None, maximum: float | None
) -> None:
    if minimum is not None and value < minimum:
        raise reader.error(key, f"must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise reader.error(key, f"must be at most {maximum}, not {value}")


def _kind(value: object) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


_PART_RE = re.compile(r"([A-Za-z0-9_-]+)(?:\[(\d+)\])?")


def locate_line(text: str, key_path: str) -> int | None:
    """Best-effort line number of `key_path` in the TOML source, for the error message.

    Follows `[table]` / `[[array]]` headers in order; keys written as inline tables or dotted keys are not
    found, and then the message simply has no line.
    """
    parts = [(m.group(1), m.group(2)) for m in _PART_RE.finditer(key_path)]
    lines = text.splitlines()
    start, end = 0, len(lines)
    prefix = ""
    for depth, (name, index) in enumerate(parts):
        header = f"{prefix}.{name}" if prefix else name
        is_last = depth == len(parts) - 1
        if index is not None:
            pattern = re.compile(r"^\s*\[\[\s*" + re.escape(header) + r"\s*\]\]")
            hits = [i for i in range(start, end) if pattern.match(lines[i])]
            if int(index) >= len(hits):
                return None
            start = hits[int(index)]
            end = _section_end(lines, start, header)
            if is_last:
                return start + 1
        else:
            table = re.compile(r"^\s*\[\s*" + re.escape(header) + r"\s*\]")
            hit = next((i for i in range(start, end) if table.match(lines[i])), None)
            if hit is not None and not is_last:
                start, end = hit, _section_end(lines, hit, header)
            elif is_last:
                key = re.compile(r"^\s*" + re.escape(name) + r"\s*=")
                own_end = next((i for i in range(start + 1, end) if lines[i].lstrip().startswith("[")), end)
                found = next((i for i in range(start, own_end) if key.match(lines[i])), hit)
                return found + 1 if found is not None else None
            else:
                return None
        prefix = header
    return None


def _section_end(lines: list[str], start: int, header: str) -> int:
    """The end of a section is the next header that is not nested below it."""
    for i in range(start + 1, len(lines)):
        stripped = lines[i].lstrip()
        if stripped.startswith("["):
            name = stripped.strip("[] \t").split("]")[0].strip()
            if not name.startswith(header + "."):
                return i
    return len(lines)
