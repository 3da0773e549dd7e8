"""The layering in pyproject.toml holds: lint-imports passes on the tree and fails on a wrong-way import.

Each case copies the package to a scratch directory, adds one import that breaks a rule, and runs the
project's own contracts against the copy — so a contract that could never fail would be caught here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(TOP / "xenddd", tmp_path / "xenddd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(TOP / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        ("model.py", "import xenddd.cli.main", "Layers"),
        ("adapters/xl.py", "import xenddd.recovery.phases", "Layers"),
        ("registry/records.py", "import xenddd.pci.names", "Layers"),
        ("recovery/restart_policy.py", "import libvirt", "Only the adapters import"),
        ("service/daemon.py", "import xenddd.sim.store", "Only service.simulated"),
        ("sim/store.py", "import xenddd.registry.records", "The simulator stands in for Xen"),
        ("config/spec.py", "import click", "Only the CLI imports click"),
    ],
)
def test_a_wrong_way_import_breaks_its_contract(
    tree: Path, module: str, wrong_import: str, contract: str
) -> None:
    path = tree / "xenddd" / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line or line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
