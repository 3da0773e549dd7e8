"""How list-type commands print: an aligned table like `xl list`, or JSON with a stable, versioned schema.

JSON output is always `{"version": 1, "kind": <what>, "items": [...]}` — a single record (`config check`)
is a list of one, an error is `{"kind": "error", "items": [{"error": ..., "exit_code": ...}]}` — so a script
can check the version before relying on the field names. A few kinds add top-level fields beside `items`
(`status`: `daemon`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from xenddd.config.check import Finding
from xenddd.config.loader import located

JSON_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    right_align: bool = False


def render_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned as xl does; `None` shows as `-`."""
    cells = [[_cell(row.get(col.key)) for col in columns] for row in rows]
    widths = [max([len(col.header)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if col.right_align else v.ljust(w)
            for v, w, col in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line([c.header for c in columns])] + [line(r) for r in cells])


def emit_json(kind: str, items: Sequence[Mapping[str, Any]], **extra: Any) -> None:
    document = {"version": JSON_SCHEMA_VERSION, "kind": kind, "items": [dict(i) for i in items], **extra}
    click.echo(json.dumps(document, indent=2))


def emit_list(as_json: bool, kind: str, columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> None:
    if as_json:
        emit_json(kind, rows)
    else:
        click.echo(render_table(columns, rows))


def emit_record(as_json: bool, kind: str, record: Mapping[str, Any], text: str) -> None:
    if as_json:
        emit_json(kind, [record])
    else:
        click.echo(text)


def echo_findings(findings: Sequence[Finding], config_path: Path | None, text: str = "") -> None:
    """One line on stderr per finding, `xenddd: [warning: ]FILE:LINE: key: message`, the line looked up in
    the config's `text` when there is a config (`config check`, `image check`)."""
    for finding in findings:
        label = "warning: " if finding.severity == "warning" else ""
        message = f"{finding.key_path}: {finding.message}"
        if config_path is not None:
            message = located(config_path, text, finding.key_path, message)
        click.echo(f"xenddd: {label}{message}", err=True)


def local_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


def incident_summary(incident: Mapping[str, Any] | None) -> str | None:
    """A driver domain's last incident in a table cell: when, how it stopped, how long the repair took."""
    if not incident:
        return None
    mttr = incident.get("mttr_seconds")
    return f"{local_time(incident['detected_at'])} {incident.get('reason', 'gone')}" + (
        f", MTTR {mttr:.2f}s" if mttr is not None else ""
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value) or "-"
    return str(value)
