"""One host-side test per scenario run inside the real Xen dom0 (integration/scenarios/), so a failure names
its scenario. The whole test bed boots once per session (see conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

SCENARIOS = Path(__file__).with_name("scenarios")
# the boot of the test bed (in the session fixture) has its own deadline, XENDDD_IT_TIMEOUT
pytestmark = pytest.mark.timeout(0)


def scenario_ids() -> list[str]:
    ids = []
    for path in sorted(SCENARIOS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        ids += [
            f"{path.stem}::{node.name}"
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        ]
    return ids


@pytest.mark.parametrize("scenario", scenario_ids())
def test_scenario_on_real_xen(xen_run: Any, scenario: str) -> None:
    outcome = xen_run.outcomes.get(scenario)
    if outcome is None:
        pytest.fail(
            f"{scenario} did not run in dom0 (dom0 runner rc={xen_run.returncode}; see integration/results/)"
        )
    if outcome == "skipped":
        pytest.skip("skipped inside dom0")
    assert outcome == "passed", xen_run.messages.get(scenario, "")
