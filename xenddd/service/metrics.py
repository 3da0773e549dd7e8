"""Metrics for node_exporter's textfile collector: what no Xen toolstack reports.

Named by Prometheus' conventions (a counter ends in `_total`, a unit is spelt out, `# TYPE` names the
metric as its samples do); restarts are one counter with a `trigger` label, `automatic` (after the
domain died) or `operator` (`xenddd restart`, `create`), so a dashboard can sum them or tell them apart.
The format is Prometheus' text exposition format, which is what the textfile collector parses (not
OpenMetrics, whose counters would be typed without `_total`). Written atomically (temporary file +
rename) so the collector never reads half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from xenddd.recovery.history import History, mttr

MTTR_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def render_metrics(snapshot: dict[str, Any], history: History) -> str:
    domains = snapshot["driver_domains"]
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"# HELP {name} {help_text}")
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    def per_domain(key: str, labels: str = "") -> list[tuple[str, float]]:
        return [(f'{{driver_domain="{d["name"]}"{labels}}}', float(d[key])) for d in domains]

    family(
        "xenddd_restarts_total",
        "counter",
        "Restarts of a driver domain: automatic (after it died) or by an operator.",
        per_domain("restarts", ',trigger="automatic"') + per_domain("manual_restarts", ',trigger="operator"'),
    )
    family("xenddd_crashes_total", "counter", "Unexpected stops of a driver domain.", per_domain("crashes"))
    family(
        "xenddd_driver_domain_failed",
        "gauge",
        "1 while the restart policy is exhausted.",
        per_domain("failed"),
    )
    family("xenddd_frontends", "gauge", "Guest frontends served by a driver domain.", per_domain("frontends"))
    family(
        "xenddd_reattach_failures_total",
        "counter",
        "Failed frontend reattach attempts.",
        per_domain("reattach_failures"),
    )
    family(
        "xenddd_parked_frontends",
        "gauge",
        "Frontends that never connected within their reattach attempts, retried outside any recovery.",
        [(f'{{driver_domain="{d["name"]}"}}', float(len(d["parked"]))) for d in domains],
    )
    durations = [d for d in (mttr(records) for records in history.incidents().values()) if d is not None]
    buckets = [(f'{{le="{b:g}"}}', float(sum(1 for d in durations if d <= b))) for b in MTTR_BUCKETS]
    buckets.append(('{le="+Inf"}', float(len(durations))))
    lines.append("# TYPE xenddd_mttr_seconds histogram")
    lines.append(
        "# HELP xenddd_mttr_seconds Time from detecting a dead driver domain to its last frontend reattached."
    )
    lines.extend(f"xenddd_mttr_seconds_bucket{labels} {_number(v)}" for labels, v in buckets)
    lines.append(f"xenddd_mttr_seconds_sum {sum(durations):.3f}")
    lines.append(f"xenddd_mttr_seconds_count {len(durations)}")
    last = snapshot.get("last_reconcile_seconds")
    if last is not None:
        family(
            "xenddd_last_reconcile_duration_seconds",
            "gauge",
            "Duration of the last reconcile pass.",
            [("", float(last))],
        )
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, snapshot: dict[str, Any], history: History) -> None:
    text = render_metrics(snapshot, history)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
