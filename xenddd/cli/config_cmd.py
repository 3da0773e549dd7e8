"""`xenddd config check [FILE]`: validate a config and look at what it names, without changing the host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xenddd.adapters.pci_sysfs import PciSysfs
from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import echo_findings, emit_record
from xenddd.config.check import Finding, file_findings
from xenddd.config.loader import load_config
from xenddd.config.toml_reader import locate_line
from xenddd.pci.preflight import device_findings
from xenddd.registry.xenstored_quota import devices_recorded, quota_warnings, read_xenstored_quotas


@click.group("config")
def config_group() -> None:
    """Work with the configuration file."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_cli
def check(cli: CliContext, file: Path | None) -> None:
    """Validate FILE (default: --config / $XENDDD_CONFIG / /etc/xenddd/xenddd.toml) without changing the host.

    Reads and validates every key, then looks at what the config names on this host: kernels, initrds
    and disks must exist; each PCI device must exist in sysfs, not be one dom0 depends on, and have a
    reset method unless its reset policy is "relaxed". Errors (the daemon would fail or refuse) and
    warnings (e.g. no driver domain: the daemon does nothing) are one line each, naming the file, the
    line and the key path; a valid config gets a one-line summary.

    \b
    Exit status: 0 valid (warnings allowed), 2 invalid, unreadable, or an error found.
    """
    path = file or cli.config_path
    config = load_config(path)
    settings = config.settings
    findings = file_findings(config) + device_findings(config, PciSysfs(settings.sysfs_root), Path("/proc"))
    near = quota_warnings(devices_recorded(settings.state_dir), read_xenstored_quotas())
    findings += [
        Finding("warning", f"driver_domain[{i}]", f"{spec.name} {near[spec.name]}")
        for i, spec in enumerate(config.driver_domains)
        if spec.name in near
    ]
    text = path.read_text(encoding="utf-8")
    errors = [f for f in findings if f.severity == "error"]
    names = [spec.name for spec in config.start_order()]
    record = {
        "path": str(path),
        "valid": not errors,
        "driver_domains": names,
        "pci_devices": [str(p.bdf) for spec in config.driver_domains for p in spec.pci],
        "errors": [_finding_json(text, f) for f in errors],
        "warnings": [_finding_json(text, f) for f in findings if f.severity == "warning"],
    }
    if not cli.as_json:
        echo_findings(findings, path, text)
    if cli.as_json or not errors:
        summary = f"{path}: ok, {len(names)} driver domain(s)" + (
            f" (start order: {', '.join(names)})" if names else ""
        )
        emit_record(cli.as_json, "config-check", record, summary)
    if errors:
        click.get_current_context().exit(2)


def _finding_json(text: str, finding: Finding) -> dict[str, Any]:
    return {"key": finding.key_path, "line": locate_line(text, finding.key_path), "message": finding.message}
