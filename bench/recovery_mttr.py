"""MTTR overhead and detection latency of xenddd on the simulated host (a benchmark: prints a table).

Driver domains "boot" instantly and the restart backoff is zero, so what is measured is xenddd's own
overhead: detection (crash → `detected`), and crash → `recovered` with every frontend Connected again.
Run: .venv/bin/python bench/recovery_mttr.py [--sizes 1,16,64,256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from xenddd.config.loader import parse_config
from xenddd.service.daemon import Daemon
from xenddd.service.simulated import simulated_runtime
from xenddd.sim.socket_host import SimulatedHost

CONFIG = """
[xenddd]
state_dir = "{tmp}/state"
control_socket = "{tmp}/control.sock"
log_level = "error"
max_parallel_reattach = 8
[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/k"
[driver_domain.restart]
max_restarts = 1000
backoff_base = 0
backoff_cap = 0
"""


def measure(frontends: int, repeat: int) -> tuple[list[float], list[float]]:
    tmp = Path(tempfile.mkdtemp())
    guests = "".join(f'\n[[simulation.guest]]\nname = "g{i}"\nvif = ["domnet"]\n' for i in range(frontends))
    config = parse_config(CONFIG.format(tmp=tmp) + guests, tmp / "bench.toml")
    sim = SimulatedHost.start(tmp / "xs.sock")
    sim.engine.watch_quota = 4 * frontends + 128  # as an operator raises xenstored's --watch-nb
    daemon = Daemon(config, simulated_runtime(sim, config))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    registry = lambda: daemon._wiring.registry.frontends() if daemon._wiring else []  # noqa: E731
    wait(lambda: len(registry()) == frontends and all(f.backend_state == 4 for f in registry()), 120)
    detections, mttrs = [], []
    for _ in range(repeat):
        seen = len(daemon.history.since())
        crashed_at = time.time()
        sim.host.crash("domnet")
        wait(lambda seen=seen: any(r["event"] == "recovered" for r in daemon.history.since()[seen:]), 300)
        records = daemon.history.since()[seen:]
        detected = next(r["ts"] for r in records if r["event"] == "detected")
        recovered = next(r["ts"] for r in records if r["event"] == "recovered")
        detections.append((detected - crashed_at) * 1000)
        mttrs.append(recovered - crashed_at)
        wait(lambda: len(registry()) == frontends and all(f.backend_state == 4 for f in registry()), 120)
    daemon.stop()
    thread.join(30)
    sim.stop()
    return detections, mttrs


def wait(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,16,64,256")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'frontends':>9}  {'detection median (ms)':>22}  {'MTTR median (s)':>15}  {'MTTR max (s)':>12}")
    for size in (int(s) for s in args.sizes.split(",")):
        detections, mttrs = measure(size, args.repeat)
        detection, mttr = statistics.median(detections), statistics.median(mttrs)
        print(f"{size:>9}  {detection:>22.1f}  {mttr:>15.3f}  {max(mttrs):>12.3f}")


if __name__ == "__main__":
    main()
