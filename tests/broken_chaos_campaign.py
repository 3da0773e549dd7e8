"""The fault campaign (bench/chaos.py) with a catalogue of one fault that goes wrong, run as its own process
(`python tests/broken_chaos_campaign.py raises|never-ready FAULTS`): what a campaign that cannot go on must
still do — print its table and exit 1 — is only seen from outside, since a killed daemon's threads stay
blocked in the process for good."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

CHAOS = Path(__file__).resolve().parent.parent / "bench" / "chaos.py"


def load_chaos() -> Any:
    spec = importlib.util.spec_from_file_location("chaos", CHAOS)
    assert spec is not None and spec.loader is not None
    chaos = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = chaos  # its dataclasses look their module up
    spec.loader.exec_module(chaos)
    return chaos


def main() -> None:
    broken, faults = sys.argv[1], sys.argv[2]
    chaos = load_chaos()

    class NeverReady(chaos.Daemon):  # type: ignore[name-defined,misc]
        def run(self) -> int:
            threading.Event().wait()
            return 1

    def kill_then_raise(c: Any) -> None:
        c.crash(c.running_dd())
        c.kill_daemon()  # its toolstack workers now block for good: an interpreter exit would wait for them
        raise RuntimeError("a fault that goes wrong")

    def restart_never_ready(c: Any) -> None:
        c.kill_daemon()
        chaos.Daemon = NeverReady
        c.start_daemon()

    chaos.READY_DEADLINE = 1.0
    chaos.CATALOGUE = {"broken": {"raises": kill_then_raise, "never-ready": restart_never_ready}[broken]}
    sys.argv = [str(CHAOS), "--faults", faults, "--guests", "1"]
    chaos.main()


if __name__ == "__main__":
    main()
