"""Round-trips per second from one pyxs client to the simulated xenstored (prints, asserts nothing).

Run: .venv/bin/python bench/xenstore_ops.py [--seconds N]
The simulated xenstored runs in a separate process so that client and server do not share the GIL,
as they would not on a real host.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

from pyxs import Client


def serve(path: str, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    from xenddd.sim.xenstored import Xenstored
    from xenddd.sim.xenstored_socket import SocketServer

    server = SocketServer(Xenstored(), Path(path))
    server.start()
    ready.set()
    while True:
        time.sleep(3600)


def rate(label: str, seconds: float, operation: object) -> None:
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            operation()  # type: ignore[operator]
        count += 100
    elapsed = time.perf_counter() - started
    print(f"{label:<28} {count / elapsed:>10,.0f} ops/s  ({count} in {elapsed:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    args = parser.parse_args()
    path = str(Path(tempfile.mkdtemp()) / "xenstored.sock")
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(path, ready), daemon=True)
    server.start()
    ready.wait(10)
    with Client(unix_socket_path=path) as client:
        client.write(b"/bench/key", b"value")
        rate("READ", args.seconds, lambda: client.read(b"/bench/key"))
        rate("WRITE", args.seconds, lambda: client.write(b"/bench/key", b"v"))

        def transaction() -> None:
            client.transaction()
            client.write(b"/bench/tx", b"1")
            client.commit()

        rate("TRANSACTION (start+write+end)", args.seconds, transaction)
    server.terminate()


if __name__ == "__main__":
    main()
