"""MTTR overhead and detection latency of xenddd on the simulated host (a benchmark: prints a table).

Driver domains "boot" instantly and the restart backoff is zero, so what is measured is xenddd's own
overhead: detection (crash → `detected`), crash → `recovered` with every frontend Connected again, and
the xenstore requests xenddd sent from the crash to `recovered`, per frontend. The simulated xenstored's
quotas are raised before the host starts, as an operator raises C xenstored's `--entry-nb`/`--watch-nb`
for a large driver domain (see the README); a quota hit ends the run with the hit, never a stall.
The log-log slope of MTTR against frontends is printed between the sizes ≥ 64 (1.0 is linear).

The simulated host (xenstored, kernels, toolstack) runs in a process of its own (`sim.remote_host`), as
xenstored and libvirtd do on a real host: in the daemon's process it would share the daemon's GIL, and at
1,000 frontends the two together are bound to one core, so the MTTR measured would be the sum of both.
`--in-process` keeps the old layout, one interpreter for both, for comparison.

A crash happens as on a real host: xenstored fires @releaseDomain at once, libvirt lists the domain as
crashed, destroys it (removing its nodes: at 1,000 frontends ≈ 12,000 of them, ≈ 50 ms for the simulated
xenstored) and only then sends its lifecycle event; `--cleanup-delay` is how long that destroy waits
(default 0.05 s, as `bench/chaos.py`'s). With 0 the crash removes the nodes before anybody hears of it,
so the detection measured includes the simulated xenstored's removal.
Run: .venv/bin/python bench/recovery_mttr.py [--sizes 1,16,64,256,1000] [--repeat 3] [--in-process]
     [--cleanup-delay 0.05]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
from pathlib import Path

from xenddd.config.loader import parse_config
from xenddd.service.daemon import Daemon
from xenddd.service.simulated import simulated_runtime
from xenddd.sim.quotas import QuotaBook, Quotas
from xenddd.sim.remote_host import RemoteHost
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


def quotas_for(frontends: int) -> QuotaBook:
    """A driver domain owns ≈ 14 nodes and holds one watch per vif in the simulator (≈ 25 nodes on real
    Xen, whose netback writes its feature-* keys): raised with room to spare, as an operator would."""
    return QuotaBook(defaults=Quotas(nodes=max(1000, 32 * frontends), watches=max(128, 2 * frontends)))


def measure(
    frontends: int, repeat: int, in_process: bool, cleanup_delay: float
) -> tuple[list[float], list[float], list[float]]:
    tmp = Path(tempfile.mkdtemp())
    guests = "".join(f'\n[[simulation.guest]]\nname = "g{i}"\nvif = ["domnet"]\n' for i in range(frontends))
    config = parse_config(CONFIG.format(tmp=tmp) + guests, tmp / "bench.toml")
    host = SimulatedHost if in_process else RemoteHost
    sim = host.start(tmp / "xs.sock", quotas=quotas_for(frontends), cleanup_delay=cleanup_delay)
    daemon = Daemon(config, simulated_runtime(sim, config))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    registry = lambda: daemon._wiring.registry.frontends() if daemon._wiring else []  # noqa: E731

    def steady() -> bool:
        entries = registry()
        return len(entries) == frontends and all(f.backend_state == 4 and not f.orphaned for f in entries)

    wait(steady, 600, sim)
    detections, mttrs, requests = [], [], []
    recovered_event = threading.Event()  # the history's listener: polling the history would load the daemon
    daemon.history.subscribe(lambda record: record["event"] == "recovered" and recovered_event.set())
    for _ in range(repeat):
        seen = max((r["seq"] for r in daemon.history.since()), default=0)
        sent = sim.requests_served()
        recovered_event.clear()
        crashed_at = time.time()
        sim.crash("domnet")
        wait(recovered_event.is_set, 600, sim)
        records = daemon.history.since(after_seq=seen)
        detected = next(r["ts"] for r in records if r["event"] == "detected")
        recovered = next(r["ts"] for r in records if r["event"] == "recovered")
        detections.append((detected - crashed_at) * 1000)
        mttrs.append(recovered - crashed_at)
        wait(steady, 600, sim)  # the registry has judged every new backend: the recovery's requests are in
        requests.append((sim.requests_served() - sent) / frontends)
    daemon.stop()
    thread.join(30)
    sim.stop()
    return detections, mttrs, requests


def wait(condition: object, timeout: float, sim: SimulatedHost | RemoteHost, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if hits := sim.quota_hits():
            raise SystemExit(f"a xenstore quota was hit: {hits[0]}")
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(poll)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,16,64,256,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help="the sim in the daemon's process")
    parser.add_argument("--cleanup-delay", type=float, default=0.05, help="libvirt's destroy of a crash (s)")
    args = parser.parse_args()
    print(
        f"{'frontends':>9}  {'detection median (ms)':>21}  {'MTTR median (s)':>15}  {'MTTR max (s)':>12}"
        f"  {'xenstore requests/frontend':>26}",
        flush=True,
    )
    medians: dict[int, float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        detections, mttrs, requests = measure(size, args.repeat, args.in_process, args.cleanup_delay)
        detection, medians[size] = statistics.median(detections), statistics.median(mttrs)
        print(
            f"{size:>9}  {detection:>21.1f}  {medians[size]:>15.3f}  {max(mttrs):>12.3f}"
            f"  {statistics.median(requests):>26.1f}",
            flush=True,
        )
    large = sorted(size for size in medians if size >= 64)
    if len(large) >= 2:
        print(f"MTTR log-log slope against frontends, {large[0]} → {large[-1]}: {slope(large, medians):.2f}")


def slope(sizes: list[int], medians: dict[int, float]) -> float:
    """Least-squares slope of log(MTTR) on log(frontends)."""
    xs = [math.log(size) for size in sizes]
    ys = [math.log(medians[size]) for size in sizes]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )


if __name__ == "__main__":
    main()
