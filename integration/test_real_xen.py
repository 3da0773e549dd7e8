"""One host-side test per scenario run inside a real Xen dom0 (integration/scenarios/), so a failure names
its release, machine variant and scenario. Each release and variant boots once per session (see
conftest.py); a scenario file names its variant with a module-level `MACHINE = "..."` (default "pc").

What boots, within CI's 45 minutes (the whole `.ci/run` took 19.4 min cold here, see the README): Debian 13
runs every scenario of both machines but the on-demand ones (`ON_DEMAND = True`: the comparison with the
peers' method, (g), (h), (i); XENDDD_IT_SELECT naming them runs them); Debian 12 boots the `pc` machine for
the package and the daemon on its older Xen, libvirt and Python: (a) and (z). Its recoveries (c, d) add
≈ 6 min (`XENDDD_IT_BOOKWORM=full`); `XENDDD_IT_BOOKWORM=all` gives it every scenario, as trixie has.
XENDDD_IT_RELEASES (space-separated) boots only some releases."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest

SCENARIOS = Path(__file__).with_name("scenarios")
# the boot of the test bed has its own deadline, XENDDD_IT_TIMEOUT
pytestmark = pytest.mark.timeout(0)

# release → the scenario modules it runs (None: all of them)
BOOKWORM_RECOVERIES = ("test_c_network_dd", "test_d_block_dd")
BOOKWORM = os.environ.get("XENDDD_IT_BOOKWORM", "")
RELEASES: dict[str, tuple[str, ...] | None] = {
    "trixie": None,
    "bookworm": None
    if BOOKWORM == "all"
    else ("test_a_smoke", "test_z_package") + (BOOKWORM_RECOVERIES if BOOKWORM == "full" else ()),
}
BOOTED = os.environ.get("XENDDD_IT_RELEASES", " ".join(RELEASES)).split()
SELECT = os.environ.get("XENDDD_IT_SELECT", "")


def module_constant(tree: ast.Module, name: str, default: object) -> object:
    """A scenario module's `NAME = <constant>` (MACHINE, ON_DEMAND), read without importing it: the
    scenarios import dom0's conftest, which only dom0 has."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == [name]
            and isinstance(node.value, ast.Constant)
        ):
            return node.value.value
    return default


def machine_of(tree: ast.Module) -> str:
    return str(module_constant(tree, "MACHINE", "pc"))


def scenario_ids() -> list[Any]:
    ids = []
    for release in BOOTED:
        if release not in RELEASES:
            raise pytest.UsageError(
                f"XENDDD_IT_RELEASES: no recipe for {release!r} (have {' '.join(RELEASES)})"
            )
        share = RELEASES[release]
        for path in sorted(SCENARIOS.glob("test_*.py")):
            if share is not None and path.stem not in share:
                continue
            tree = ast.parse(path.read_text())
            if module_constant(tree, "ON_DEMAND", False) and not SELECT:
                continue  # a benchmark or a long scenario: run when XENDDD_IT_SELECT names it
            machine = machine_of(tree)
            ids += [
                pytest.param(
                    release,
                    machine,
                    f"{path.stem}::{node.name}",
                    id=f"{release}-{machine}:{path.stem}::{node.name}",
                )
                for node in tree.body
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
            ]
    # one boot after the other: each release's pc first, it holds most scenarios
    return sorted(ids, key=lambda p: (BOOTED.index(p.values[0]), p.values[1] != "pc"))


@pytest.mark.parametrize(("release", "machine", "scenario"), scenario_ids())
def test_scenario_on_real_xen(test_bed: Any, release: str, machine: str, scenario: str) -> None:
    run = test_bed.run(release, machine, RELEASES[release])
    outcome = run.outcomes.get(scenario)
    if outcome is None and run.dom0_crashed:
        pytest.fail(
            f"dom0 of the {release} {machine} test bed crashed before {scenario} finished (if it was "
            f"selected); see integration/results/{machine}-{release}/serial.log"
        )
    if outcome is None and run.timed_out:
        pytest.fail(
            f"the {release} {machine} test bed ran out of time (XENDDD_IT_TIMEOUT, or the suite's "
            f"XENDDD_IT_DEADLINE) before {scenario} finished (if it was selected); see "
            f"integration/results/{machine}-{release}/serial.log"
        )
    if outcome is None and run.hung:
        pytest.fail(
            f"the {release} {machine} test bed hung (its console silent for XENDDD_IT_SILENCE) before "
            f"{scenario} finished (if it was selected); see "
            f"integration/results/{machine}-{release}/serial.log"
        )
    if outcome is None and run.returncode is None:  # QEMU ended (or was killed) before the runner said DONE
        pytest.fail(
            f"the {release} {machine} test bed ended before its dom0 runner finished {scenario} (if it "
            f"was selected); see integration/results/{machine}-{release}/serial.log"
        )
    if outcome is None and SELECT:
        pytest.skip("not selected by XENDDD_IT_SELECT")
    if outcome is None:
        pytest.fail(
            f"{scenario} did not run in the {release} {machine} dom0 (dom0 runner rc={run.returncode}; "
            f"see integration/results/{machine}-{release}/)"
        )
    if outcome == "skipped":
        pytest.skip("skipped inside dom0")
    assert outcome == "passed", run.messages.get(scenario, "")
