"""The fault campaign (bench/chaos.py) at 100 faults with a fixed seed: the real daemon on the simulated
host survives every fault of the catalogue with every invariant holding once it has settled. A campaign
that cannot go on says so in its table and exits 1; it never hangs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def this_checkout() -> dict[str, str]:
    """The environment of a campaign that runs this checkout's xenddd: a script's own directory comes first
    on its path, not the checkout, so it would import xenddd from wherever the venv's editable install
    points (the main checkout, for a git worktree sharing its venv)."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_a_hundred_random_faults_leave_every_guest_connected_with_its_identity_and_nothing_failed() -> None:
    """About 2.5 min on a quiet 2-core machine, half of it the nine `guest-never-connects` waiting out
    their handshakes' timeouts; the limits leave room for a machine busy with other work."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--faults", "100", "--seed", "1", "--guests", "8"],
        cwd=ROOT,
        env=this_checkout(),
        capture_output=True,
        text=True,
        timeout=460,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chaos: 100 faults" in result.stdout


@pytest.mark.parametrize(
    ("broken", "violation"),
    [("raises", "fault-raised: RuntimeError"), ("never-ready", "daemon-not-ready")],
)
def test_a_fault_that_raises_or_a_daemon_never_ready_ends_the_campaign_with_its_table_and_exit_1(
    broken: str, violation: str
) -> None:
    """The first fault kills the daemon and then raises, or starts one that never becomes ready: a
    violation, the end of the campaign, and its table all the same — not a traceback, and not an
    interpreter waiting at exit for the killed daemon's blocked threads."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "broken_chaos_campaign.py"), broken, "3"],
        cwd=ROOT,
        env=this_checkout(),
        capture_output=True,
        text=True,
        timeout=40,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "chaos: 1 of 3 faults (ended early)" in result.stdout, output
    assert re.search(rf"^{violation} +1 +e\.g\. fault 1 \(broken\): ", result.stdout, re.MULTILINE), output
