"""Every test's simulated host keeps its sockets and state in the test's own directory."""

from pathlib import Path

import pytest

pytest_plugins = ("xenddd.sim.pytest_plugin",)


@pytest.fixture(autouse=True)
def simulation_dir_of_this_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`daemon --simulate` would otherwise use the one predictable directory of the machine (and of
    every test run on it at once)."""
    monkeypatch.setenv("XENDDD_SIM_DIR", str(tmp_path / "sim"))
