"""What `xenddd config check` says about a config beyond its syntax: the findings about this host.

A valid config can still fail on the first `create` (a kernel image not there yet) or act on nothing (no
driver domain): `config check` looks at what it can without changing the host, and separates errors (the
daemon would fail or refuse) from warnings (it would run, perhaps not as meant). The loader does not make
these checks, since a disk that is missing at boot may well be there by the time its domain starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xenddd.config.spec import Config

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    key_path: str
    message: str


def file_findings(config: Config) -> list[Finding]:
    """An empty config and generated vif MACs (warnings); kernels, initrds and disks that are not there
    (errors)."""
    findings = []
    if not config.driver_domains:
        findings.append(
            Finding("warning", "driver_domain", "no driver domain is configured: the daemon does nothing")
        )
    for i, spec in enumerate(config.driver_domains):
        where = f"driver_domain[{i}]"
        for key, path in (("kernel", spec.kernel), ("initrd", spec.initrd)):
            if path is not None and not path.is_file():
                findings.append(Finding("error", f"{where}.{key}", _missing(path)))
        for j, disk in enumerate(spec.disks):
            if not disk.path.exists():
                findings.append(Finding("error", f"{where}.disk[{j}].path", _missing(disk.path)))
        for j, vif in enumerate(spec.vifs):
            if vif.mac_generated:
                message = f"no mac given: {vif.mac}, derived from the domain's name, the same on every start"
                findings.append(Finding("warning", f"{where}.vif[{j}].mac", message))
    return findings


def _missing(path: Path) -> str:
    return f"{path} is not a file" if path.exists() else f"{path} does not exist"
