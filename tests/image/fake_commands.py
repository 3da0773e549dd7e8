"""Fake commands for the image's shell scripts under test (vif-bridge.sh, block.sh): small Python
programs standing in for `xenstore-*`, busybox's `ip` and the like, found first on the scripts' PATH."""

from __future__ import annotations

import sys
from pathlib import Path


def install(fakes: dict[Path, str]) -> None:
    """Each path an executable that runs its Python code with this test's interpreter."""
    for path, code in fakes.items():
        path.write_text(f"#!{sys.executable}\n{code}")
        path.chmod(0o755)
