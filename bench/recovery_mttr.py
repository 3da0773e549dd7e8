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
`--boot-delay S` gives each driver domain's boot S seconds (its readiness key comes that long after its
start), as a real one's does; `--path standby` (or `both`) gives each driver domain a warm standby
(`toolstack = "xl"`), waited ready before each crash, so the recovery promotes it instead of booting;
`--path inplace` makes each an xl driver domain with `reconnect = "in-place"`: restarted with its domid,
its guests' backends written again, nothing detached or attached (`all`: the three paths in turn).
`--domains N` spreads the frontends over N driver domains that all crash at once; the MTTR is then the
last one's.
Run: .venv/bin/python bench/recovery_mttr.py [--sizes 1,16,64,256,1000] [--repeat 3] [--in-process]
     [--cleanup-delay 0.05] [--boot-delay 0] [--path cold|standby|inplace|all] [--domains 1,8]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from xenddd.config.loader import parse_config
from xenddd.errors import XendddError
from xenddd.service.control import request
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
"""
DOMAIN = """
[[driver_domain]]
name = "{name}"
kind = "network"
kernel = "/k"
{path}[driver_domain.restart]
max_restarts = 1000
backoff_base = 0
backoff_cap = 0
"""
PATHS = {
    "cold": "",
    "standby": 'toolstack = "xl"\n[driver_domain.standby]\nenabled = true\n',
    "inplace": 'toolstack = "xl"\nreconnect = "in-place"\n',
}


@dataclass(frozen=True)
class Shape:
    frontends: int
    domains: int = 1
    path: str = "cold"
    boot_delay: float = 0.0
    cleanup_delay: float = 0.05
    in_process: bool = False

    def config(self, tmp: Path) -> str:
        names = [f"dd{i}" for i in range(self.domains)]
        text = CONFIG.format(tmp=tmp)
        for name in names:
            text += DOMAIN.format(name=name, path=PATHS[self.path])
        for i in range(self.frontends):
            text += f'\n[[simulation.guest]]\nname = "g{i}"\nvif = ["{names[i % self.domains]}"]\n'
        return text


def quotas_for(frontends: int) -> QuotaBook:
    """A driver domain owns ≈ 14 nodes and holds one watch per vif in the simulator (≈ 25 nodes on real
    Xen, whose netback writes its feature-* keys): raised with room to spare, as an operator would."""
    return QuotaBook(defaults=Quotas(nodes=max(1000, 32 * frontends), watches=max(128, 2 * frontends)))


def measure(shape: Shape, repeat: int) -> tuple[list[float], list[float], list[float]]:
    tmp = Path(tempfile.mkdtemp())
    config = parse_config(shape.config(tmp), tmp / "bench.toml")
    host = SimulatedHost if shape.in_process else RemoteHost
    sim = host.start(
        tmp / "xs.sock",
        quotas=quotas_for(shape.frontends),
        cleanup_delay=shape.cleanup_delay,
        boot_delay=shape.boot_delay,
    )
    daemon = Daemon(config, simulated_runtime(sim, config))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    registry = lambda: daemon._wiring.registry.frontends() if daemon._wiring else []  # noqa: E731
    names = [spec.name for spec in config.driver_domains]

    def steady() -> bool:
        entries = registry()
        connected = len(entries) == shape.frontends and all(
            f.backend_state == 4 and not f.orphaned for f in entries
        )
        return connected and (shape.path != "standby" or standbys_ready(config.settings.control_socket))

    wait(steady, 600, sim)
    detections, mttrs, requests = [], [], []
    recovered = threading.Semaphore(0)  # the history's listener: polling the history would load the daemon
    daemon.history.subscribe(lambda record: record["event"] == "recovered" and recovered.release())
    for _ in range(repeat):
        seen = max((r["seq"] for r in daemon.history.since()), default=0)
        sent = sim.requests_served()
        crashed_at = time.time()
        for name in names:
            sim.crash(name)
        for _name in names:
            wait(lambda: recovered.acquire(timeout=0.02), 600, sim, poll=0)
        records = daemon.history.since(after_seq=seen)
        detected = min(r["ts"] for r in records if r["event"] == "detected")
        last = max(r["ts"] for r in records if r["event"] == "recovered")
        detections.append((detected - crashed_at) * 1000)
        mttrs.append(last - crashed_at)
        wait(steady, 600, sim)  # the registry has judged every new backend: the recovery's requests are in
        requests.append((sim.requests_served() - sent) / shape.frontends)
    daemon.stop()
    thread.join(30)
    sim.stop()
    return detections, mttrs, requests


def standbys_ready(control_socket: Path) -> bool:
    """Every driver domain's standby booted and ready, as `xenddd status` says it."""
    try:
        domains = request(control_socket, "status")["driver_domains"]
    except XendddError:
        return False  # the daemon is not answering yet
    return all((d.get("standby") or {}).get("state") == "ready" for d in domains)


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
    parser.add_argument("--boot-delay", type=float, default=0.0, help="a driver domain's boot (s)")
    parser.add_argument("--path", choices=(*PATHS, "all"), default="cold")
    parser.add_argument("--domains", default="1", help="driver domains crashing at once, e.g. 1,8")
    args = parser.parse_args()
    print(
        f"{'path':>7}  {'domains':>7}  {'frontends':>9}  {'detection median (ms)':>21}"
        f"  {'MTTR median (s)':>15}  {'MTTR max (s)':>12}  {'xenstore requests/frontend':>26}",
        flush=True,
    )
    paths = tuple(PATHS) if args.path == "all" else (args.path,)
    for path in paths:
        for domains in (int(d) for d in args.domains.split(",")):
            medians: dict[int, float] = {}
            for size in (int(s) for s in args.sizes.split(",")):
                shape = Shape(
                    max(size, domains),
                    domains,
                    path,
                    args.boot_delay,
                    args.cleanup_delay,
                    args.in_process,
                )
                detections, mttrs, requests = measure(shape, args.repeat)
                detection, medians[size] = statistics.median(detections), statistics.median(mttrs)
                print(
                    f"{path:>7}  {domains:>7}  {shape.frontends:>9}  {detection:>21.1f}"
                    f"  {medians[size]:>15.3f}  {max(mttrs):>12.3f}  {statistics.median(requests):>26.1f}",
                    flush=True,
                )
            large = sorted(size for size in medians if size >= 64)
            if len(large) >= 2:
                print(
                    f"MTTR log-log slope against frontends, {large[0]} → {large[-1]}: "
                    f"{slope(large, medians):.2f}"
                )


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
