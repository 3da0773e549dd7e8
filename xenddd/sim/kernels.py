"""Simulated domain kernels: netback/blkback (+ `xl devd` hotplug) in driver domains, netfront/blkfront in
guests, each a watch-driven state machine on the simulated xenstore acting as its own domain.

They walk XenbusState as Linux's drivers do: backend 1 → (hotplug-status=connected) → 2 InitWait; frontend
1 → 3 Initialised once the backend waits; backend → 4 Connected once the frontend is initialised and the
hotplug script ran; frontend → 4 once the backend is connected; `online=0` / state 5 closes both to 6.
Like real netfront, a frontend whose backend vanishes (the driver domain died) stays Connected: it only
reads its backend at probe time.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from xenddd.sim.domain_client import DomainClient
from xenddd.sim.store import XsError
from xenddd.sim.xenstored import Xenstored

log = logging.getLogger(__name__)

INITIALISING, INIT_WAIT, INITIALISED, CONNECTED, CLOSING, CLOSED = 1, 2, 3, 4, 5, 6
VIF_MTU = "1500"  # libxl's default (LIBXL_DEVICE_NIC_MTU), what it writes in a vif's frontend
HOTPLUG_SECONDS = 0.2  # a hotplug script's run in a driver domain given `hotplug_slots`


class Kernel:
    """Common part: a DomainClient, a lock serialising the state machine, and pause handling."""

    def __init__(self, engine: Xenstored, domid: int) -> None:
        self.domid = domid
        self.xs = DomainClient(engine, domid)
        self.home = f"/local/domain/{domid}"
        self._lock = threading.Lock()
        self.paused = False
        self.alive = True

    def stop(self) -> None:
        self.alive = False
        self.xs.close()

    def pause(self) -> None:
        self.paused = True

    def unpause(self) -> None:
        self.paused = False
        self.rescan()

    def rescan(self) -> None:
        raise NotImplementedError

    def handle(self, path: str) -> None:
        """React to a watch event on `path`: by default look at every device again."""
        self.rescan()

    def _state(self, path: str) -> int | None:
        raw = self.xs.read(f"{path}/state")
        return int(raw) if raw is not None and raw.isdigit() else None

    def _guarded(self, path: str) -> None:
        if not self.alive or self.paused:
            return
        with self._lock:
            try:
                self.handle(path)
            except XsError as exc:
                log.debug("sim dom%d: %s while handling %s", self.domid, exc.errno_name, path)


class BackendKernel(Kernel):
    """netback + blkback + `xl devd` of a driver domain. `stall_initwait` keeps backends at state 1
    (fault injection: a driver domain whose hotplug machinery never runs); a backend path in
    `stalled_hotplug` reaches InitWait but never gets its hotplug-status (its script was killed).
    `hotplug_slots`: how many devices may be in their handshake at once before the next one's script is
    killed and its backend gives up (Closed) — a driver domain too slow to run more scripts at once
    within libxl's 40 s, as one just booted under emulation is. `devd_failed`: the image's init could not
    start `xl devd` (after a restore): the backends reach InitWait, no script runs, and instead of the
    readiness key the init writes data/ready-error."""

    def __init__(self, engine: Xenstored, domid: int) -> None:
        super().__init__(engine, domid)
        self.stall_initwait = False
        self.stalled_hotplug: set[str] = set()
        self.hotplug_slots: int | None = None
        self.devd_failed = False
        self._handshaking: set[str] = set()
        self._watched: set[str] = set()
        self._by_frontend: dict[str, tuple[str, str]] = {}
        self.loaded = threading.Event()  # netback and blkback: until then no backend leaves state 1

    def load_backends(self) -> None:
        """What the driver-domain image does at the end of its boot: netback and blkback (which pick up
        every backend written meanwhile), the readiness key, then `xl devd` — which serves the backends
        it finds waiting in InitWait as it serves those that reach it later, so the simulated kernel
        runs the hotplug of all of them from the start."""
        if not self.alive:
            return
        self.xs.watch(f"{self.home}/backend", self._guarded)
        self.loaded.set()
        if self.devd_failed:
            self.xs.write(f"{self.home}/data/ready-error", b"xl devd did not start after a restore")
            return
        self.xs.write(f"{self.home}/data/ready", b"1")

    def handle(self, path: str) -> None:
        """Only the device (or the guest's devices) the event is about: a rescan per event would make N
        devices cost N² (the real netback's per-device watches behave the same way)."""
        parts = path.split("/")
        depth = len(self.home.split("/"))
        if path.startswith(self.home + "/backend/") and len(parts) >= depth + 3:
            kind = parts[depth + 1]
            if len(parts) >= depth + 4:
                self._step("/".join(parts[: depth + 4]), kind)
                return
            for devid in self.xs.directory(path):  # a guest's directory appeared or went
                self._step(f"{path}/{devid}", kind)
            return
        known = self._by_frontend.get(path[: -len("/state")] if path.endswith("/state") else path)
        if known is not None:
            self._step(*known)
            return
        self.rescan()

    def rescan(self) -> None:
        for kind in self.xs.directory(f"{self.home}/backend"):
            for guest in self.xs.directory(f"{self.home}/backend/{kind}"):
                for devid in self.xs.directory(f"{self.home}/backend/{kind}/{guest}"):
                    self._step(f"{self.home}/backend/{kind}/{guest}/{devid}", kind)

    def _step(self, path: str, kind: str) -> None:
        state = self._state(path)
        frontend = (self.xs.read(f"{path}/frontend") or b"").decode("ascii", "replace")
        if frontend and frontend not in self._watched and frontend.startswith("/local/domain/"):
            self._watched.add(frontend)
            self._by_frontend[frontend] = (path, kind)
            self.xs.watch(f"{frontend}/state", self._guarded)
        online = self.xs.read(f"{path}/online")
        if state in (CLOSING,) or (online == b"0" and state not in (CLOSED, None)):
            self._handshaking.discard(path)
            self.xs.write(f"{path}/state", str(CLOSED))
            return
        if state in (CONNECTED, CLOSED, None):
            self._handshaking.discard(path)
        if state is None:
            self.stalled_hotplug.discard(path)  # the stalled script went with its device
        if state == INITIALISING and not self.stall_initwait:
            if path not in self._handshaking and self.hotplug_slots is not None:
                # what was removed meanwhile is not stepped again: counted by its state
                waiting = (INITIALISING, INIT_WAIT)
                self._handshaking = {p for p in self._handshaking if self._state(p) in waiting}
                if len(self._handshaking) >= self.hotplug_slots:
                    self.xs.write(f"{path}/state", str(CLOSED))  # its script killed: the device given up
                    return
                self._handshaking.add(path)
            if kind == "vbd":
                self.xs.write(f"{path}/physical-device", b"fe:0")
            if path in self.stalled_hotplug or self.devd_failed:
                pass
            elif self.hotplug_slots is None:
                self._run_script(path)
            else:  # a script that takes its time, so that handshakes overlap as they do on a slow host
                timer = threading.Timer(HOTPLUG_SECONDS, self._script_done, args=(path,))
                timer.daemon = True
                timer.start()
            self.xs.write(f"{path}/state", str(INIT_WAIT))
            return
        if state == INIT_WAIT and frontend:
            front_state = self._state(frontend)
            if (
                front_state in (INITIALISED, CONNECTED)
                and self.xs.read(f"{path}/hotplug-status") == b"connected"
            ):
                self.xs.write(f"{path}/state", str(CONNECTED))
                self._handshaking.discard(path)

    def _script_done(self, path: str) -> None:
        """A slow script's end, on its timer: only for a device still waiting for it."""
        if not self.alive:
            return
        with self._lock, contextlib.suppress(XsError):
            if self._state(path) == INIT_WAIT:
                self._run_script(path)

    def _run_script(self, path: str) -> None:
        """The hotplug script: a vif's sets the frontend's MTU first (Xen's vif-common.sh), in the `mtu`
        node libxl made this driver domain's; when it cannot, the script fails."""
        frontend = (self.xs.read(f"{path}/frontend") or b"").decode("ascii", "replace")
        if "/device/vif/" in frontend:
            try:
                self.xs.write(f"{frontend}/mtu", self.xs.read(f"{path}/mtu") or VIF_MTU.encode())
            except XsError:
                self.xs.write(f"{path}/hotplug-status", b"error")
                return
        self.xs.write(f"{path}/hotplug-status", b"connected")


class FrontendKernel(Kernel):
    """netfront + blkfront of a guest."""

    def __init__(self, engine: Xenstored, domid: int) -> None:
        super().__init__(engine, domid)
        # device → (its backend, the token of the watch on that backend's state): as netfront's xenbus
        # does, the watch goes with the device (removed, or re-added with another backend)
        self._watching: dict[str, tuple[str, str]] = {}

    def start(self) -> None:
        self.xs.watch(f"{self.home}/device", self._guarded)

    def handle(self, path: str) -> None:
        parts = path.split("/")
        base = self.home.split("/")
        if path.startswith(self.home + "/device/") and len(parts) >= len(base) + 3:
            self._step("/".join(parts[: len(base) + 3]))
            return
        for device, (backend, _token) in list(self._watching.items()):
            if path == backend or path.startswith(backend + "/"):
                self._step(device)
                return
        self.rescan()

    def rescan(self) -> None:
        for kind in self.xs.directory(f"{self.home}/device"):
            for devid in self.xs.directory(f"{self.home}/device/{kind}"):
                self._step(f"{self.home}/device/{kind}/{devid}")

    def _step(self, path: str) -> None:
        state = self._state(path)
        backend = (self.xs.read(f"{path}/backend") or b"").decode("ascii", "replace")
        if not backend.startswith("/local/domain/") or state is None:
            backend = ""  # the device is gone (or its backend is nonsense): so is its watch
        watched = self._watching.get(path)
        if watched is not None and watched[0] != backend:
            del self._watching[path]
            self.xs.unwatch(f"{watched[0]}/state", watched[1])
        if not backend:
            return
        if path not in self._watching:
            self._watching[path] = (backend, self.xs.watch(f"{backend}/state", self._guarded))
        back_state = self._state(backend)
        if back_state is None:
            return  # backend vanished: netfront keeps its last state, as on real Xen
        if back_state in (CLOSING, CLOSED) and state not in (CLOSED, None):
            self.xs.write(f"{path}/state", str(CLOSED))
        elif state == INITIALISING and back_state == INIT_WAIT:
            self.xs.write(f"{path}/tx-ring-ref", b"8")
            self.xs.write(f"{path}/event-channel", b"12")
            self.xs.write(f"{path}/state", str(INITIALISED))
        elif state == INITIALISED and back_state == CONNECTED:
            self.xs.write(f"{path}/state", str(CONNECTED))
