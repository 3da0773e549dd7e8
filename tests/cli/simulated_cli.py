"""A config with one simulated driver domain and guest, and the `xenddd` command run as an operator would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = """
[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/boot/dd"
[driver_domain.readiness]
condition = "running"
[driver_domain.restart]
backoff_base = 0.0
backoff_cap = 0.0

[[simulation.guest]]
name = "web"
vif = ["domnet"]
"""


def xenddd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xenddd", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
