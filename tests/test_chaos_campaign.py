"""The fault campaign (bench/chaos.py) at 100 faults with a fixed seed: the real daemon on the simulated
host survives every fault of the catalogue with every invariant holding once it has settled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hundred_random_faults_leave_every_guest_connected_with_its_identity_and_nothing_failed() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--faults", "100", "--seed", "1", "--guests", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chaos: 100 faults" in result.stdout
