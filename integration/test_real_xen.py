"""One host-side test per scenario run inside the real Xen dom0 (integration/scenarios/), so a failure names
its machine variant and scenario. Each variant boots once per session (see conftest.py); a scenario file
names its variant with a module-level `MACHINE = "..."` (default "pc")."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest

SCENARIOS = Path(__file__).with_name("scenarios")
# the boot of the test bed has its own deadline, XENDDD_IT_TIMEOUT
pytestmark = pytest.mark.timeout(0)


def machine_of(tree: ast.Module) -> str:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["MACHINE"]
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    return "pc"


def scenario_ids() -> list[Any]:
    ids = []
    for path in sorted(SCENARIOS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        machine = machine_of(tree)
        ids += [
            pytest.param(machine, f"{path.stem}::{node.name}", id=f"{machine}:{path.stem}::{node.name}")
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        ]
    return sorted(ids, key=lambda p: p.values[0] != "pc")  # pc first: it holds most scenarios


@pytest.mark.parametrize(("machine", "scenario"), scenario_ids())
def test_scenario_on_real_xen(test_bed: Any, machine: str, scenario: str) -> None:
    run = test_bed.run(machine)
    outcome = run.outcomes.get(scenario)
    if outcome is None and os.environ.get("XENDDD_IT_SELECT"):
        pytest.skip("not selected by XENDDD_IT_SELECT")
    if outcome is None:
        pytest.fail(
            f"{scenario} did not run in the {machine} dom0 (dom0 runner rc={run.returncode}; "
            f"see integration/results/{machine}/)"
        )
    if outcome == "skipped":
        pytest.skip("skipped inside dom0")
    assert outcome == "passed", run.messages.get(scenario, "")
