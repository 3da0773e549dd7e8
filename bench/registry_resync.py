"""Benchmark: frontend registry resync of N guests x 2 devices, and watch event -> registry updated latency.

Runs against the simulated xenstored (started in-process on a temporary socket) or, with --socket, against
any running xenstored. Populates what libxl writes for one vif (network DD) and one vbd (block DD) per guest,
then prints: resync wall time, xenstore requests per device (must stay constant as N grows: no rescans),
and the median/p99 latency from a backend write to the registry reflecting it (watcher thread -> hint queue
-> registry.refresh on a consumer thread, as in the daemon). Goals: resync <= 2 s at N=1000, median <= 5 ms.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xenddd.adapters.xenstore.client import Xenstore
from xenddd.hints import Hint, ResyncHint, XenstoreHint
from xenddd.model import DeviceKind, FrontendKey
from xenddd.registry.backend_watcher import BackendWatcher
from xenddd.registry.frontends import FrontendRegistry

NET_DD, BLK_DD = 1, 2
FIRST_GUEST = 10


_SERVER = """
import sys, threading
from pathlib import Path
from xenddd.sim.xenstored_socket import SocketServer
from xenddd.sim.xenstored import Xenstored
server = SocketServer(Xenstored(), Path(sys.argv[1]))
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop()
"""


@contextmanager
def simulated_xenstored(directory: Path) -> Iterator[Path]:
    """The simulator's xenstored in its own process, so that it does not share the client's GIL."""
    socket_path = directory / "xenstored.sock"
    root = str(Path(__file__).resolve().parents[1])
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(socket_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield socket_path
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)


def populate(xs: Xenstore, guests: int) -> dict[int, str]:
    """What libxl writes for `vif=['backend=netdd,...']` and `disk=['backend=blkdd,...']`, per guest."""
    items: list[tuple[str, str]] = []
    uuids: dict[int, str] = {}

    def domain(domid: int, name: str) -> None:
        uuids[domid] = str(uuid.uuid4())
        items.extend(
            [(f"/local/domain/{domid}/name", name), (f"/local/domain/{domid}/vm", f"/vm/{uuids[domid]}")]
        )

    def device(dd: int, g: int, kind: str, devid: int, nodes: dict[str, str]) -> None:
        be, fe = f"/local/domain/{dd}/backend/{kind}/{g}/{devid}", f"/local/domain/{g}/device/{kind}/{devid}"
        common = {"frontend": fe, "frontend-id": str(g), "online": "1", "state": "4"}
        items.extend(
            (f"/libxl/{g}/device/{kind}/{devid}/{k}", v)
            for k, v in {**nodes, "frontend": fe, "backend": be}.items()
        )
        items.extend((f"{be}/{k}", v) for k, v in {**common, **nodes, "hotplug-status": "connected"}.items())
        items.extend(
            (f"{fe}/{k}", v) for k, v in {"backend": be, "backend-id": str(dd), "state": "4"}.items()
        )

    domain(0, "Domain-0")
    domain(NET_DD, "netdd")
    domain(BLK_DD, "blkdd")
    for g in range(FIRST_GUEST, FIRST_GUEST + guests):
        domain(g, f"guest{g}")
        mac = f"00:16:3e:{(g >> 16) & 0xFF:02x}:{(g >> 8) & 0xFF:02x}:{g & 0xFF:02x}"
        device(NET_DD, g, "vif", 0, {"mac": mac, "bridge": "xenbr0", "script": "vif-bridge", "type": "vif"})
        device(
            BLK_DD,
            g,
            "vbd",
            51712,
            {"params": f"/dev/vg/guest{g}", "dev": "xvda", "mode": "w", "device-type": "disk", "type": "phy"},
        )
    xs.write_many(items)
    return uuids


def measure_resync(xs: Xenstore, state_dir: Path, guests: int) -> FrontendRegistry:
    registry = FrontendRegistry(xs, ["netdd", "blkdd"], state_dir=state_dir)
    for label in ("cold (first) resync", "warm resync"):
        before = xs.requests_sent
        start = time.perf_counter()
        registry.resync()
        wall = time.perf_counter() - start
        devices = len(registry.frontends())
        assert devices == 2 * guests, f"registry has {devices} entries, expected {2 * guests}"
        per_device = (xs.requests_sent - before) / devices
        print(
            f"{label:22s}: {guests} guests x 2 devices in {wall:.3f} s; "
            f"{per_device:.1f} xenstore requests per device (pipelined)"
        )
    return registry


def measure_latency(xs: Xenstore, registry: FrontendRegistry, uuids: dict[int, str], samples: int) -> None:
    hints: queue.Queue[Hint] = queue.Queue()
    watcher = BackendWatcher(xs, registry.driver_domains, hints.put, domains=registry.domains)
    stop = threading.Event()

    def reconciler() -> None:
        while not stop.is_set():
            try:
                hint = hints.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(hint, XenstoreHint):
                registry.refresh(hint.path)
            elif isinstance(hint, ResyncHint):
                registry.resync()

    consumer = threading.Thread(target=reconciler, daemon=True)
    consumer.start()
    watcher.start()
    assert watcher.wait_armed(10)
    time.sleep(1.0)  # let the initial watch events (full scans) drain before timing
    latencies = []
    guests = sorted(g for g in uuids if g >= FIRST_GUEST)
    for i in range(samples):
        g = guests[(i * 7919) % len(guests)]
        key = FrontendKey(uuids[g], DeviceKind.VIF, 0)
        current = registry.get(key)
        assert current is not None
        value = "busy" if current.hotplug_status == "connected" else "connected"
        start = time.perf_counter()
        xs.write(f"/local/domain/{NET_DD}/backend/vif/{g}/0/hotplug-status", value)
        ok = registry.wait_for(
            lambda r, k=key, v=value: (f := r.get(k)) is not None and f.hotplug_status == v, 5
        )
        latencies.append(time.perf_counter() - start)
        assert ok, "registry never saw the change"
    watcher.stop()
    stop.set()
    consumer.join()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"watch event -> registry updated: median {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {p99 * 1000:.2f} ms over {samples} writes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--socket", type=Path, help="use this running xenstored instead of the simulator")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        with simulated_xenstored(directory) if args.socket is None else _existing(args.socket) as socket_path:
            xs = Xenstore(socket_path, call_timeout=30)
            start = time.perf_counter()
            uuids = populate(xs, args.guests)
            print(f"populated {args.guests} guests in {time.perf_counter() - start:.1f} s")
            registry = measure_resync(xs, directory / "state", args.guests)
            measure_latency(xs, registry, uuids, args.samples)
            xs.close()


@contextmanager
def _existing(socket_path: Path) -> Iterator[Path]:
    yield socket_path


if __name__ == "__main__":
    main()
