"""Helpers for the scenarios that run inside the test bed's dom0 (Debian's python3 and pytest)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest


def run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def xs_read(path: str) -> str | None:
    result = run("xenstore-read", path, check=False, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def domid(name: str) -> int | None:
    result = run("xl", "domid", name, check=False, timeout=60)
    return int(result.stdout) if result.returncode == 0 and result.stdout.strip().isdigit() else None


def xenddd_json(*args: str) -> Any:
    return json.loads(run("xenddd", "--json", *args).stdout)


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """Deadline-based: under emulation one process spawn costs ~70 ms, so never count loop turns."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def say(text: str) -> None:
    """Progress on the serial console, which the host harness streams."""
    with open("/dev/console", "w") as console:
        console.write(f"XENDDD-IT: {text}\n")


@pytest.fixture(autouse=True)
def announce(request: pytest.FixtureRequest) -> None:
    say(f"scenario {request.node.name}")
