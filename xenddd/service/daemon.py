"""`xenddd daemon`: connects the adapters, feeds every event source into one queue, and runs the reconciler.

Threads, not asyncio: pyxs, libvirt-python's event loop and pyudev are all blocking, thread-based libraries;
wrapping each in an executor would add a second concurrency model without removing a thread. Each event
source has its own thread and does nothing but put hints on the queue; the reconciler runs on the main
thread, the only one that changes the host, so no two actions ever race. WATCHDOG=1 is sent from that loop
itself: if the reconciler wedges, systemd notices and restarts the daemon.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from xenddd.adapters.hypervisor_api import Hypervisor, LifecycleEvent
from xenddd.adapters.systemd import Notifier, watchdog_interval
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xenstore.errors import XenstoreError
from xenddd.config.loader import load_config
from xenddd.config.spec import Config
from xenddd.errors import XendddError
from xenddd.hints import CallReturned, ControlRequest, DomainHint, Hint, Recheck, ResyncHint, domain_gone
from xenddd.recovery.history import History
from xenddd.recovery.intent import IntentLog
from xenddd.recovery.phases import PrepareDomain
from xenddd.recovery.reconciler import Reconciler
from xenddd.registry.backend_watcher import BackendWatcher
from xenddd.registry.frontends import FrontendRegistry
from xenddd.registry.guest_view import GuestView
from xenddd.service.control import ControlServer
from xenddd.service.daemon_load import PassCount, threads_cpu_seconds
from xenddd.service.hint_gate import HintGate
from xenddd.service.metrics import write_metrics
from xenddd.state import Damage

log = logging.getLogger(__name__)

SAFETY_RESYNC = 30.0  # look at everything at least this often, whatever the events said
CONTROL_TIMEOUT = 120.0
# What one driver domain's turn in the first pass may take (prepare, libvirt create, xl pci-attach).
STEP_TIMEOUT = 300.0
SIGNAL_LATENCY = 0.5  # seconds at most between a signal's arrival and its handling (see _drain)
COALESCE = 0.02  # seconds a pass waits for more hints after the first (well below readiness's 50 ms)
SLOW_CALL_SHOWN = 15.0  # `status` names a toolstack call running longer (libxl's device limit is 10 s)
STALLED_CALL = 120.0  # xl's own limit for a device operation: a toolstack call this old is hung


@dataclass
class Runtime:
    """The connected adapters a daemon runs on: real Xen (libvirt + xenstored) or the simulated host."""

    xenstore: Xenstore
    hypervisor: Hypervisor
    prepare: PrepareDomain
    after_ready: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    description: str = "Xen"


@dataclass
class _Wiring:
    registry: FrontendRegistry
    watcher: BackendWatcher
    reconciler: Reconciler


@dataclass
class Daemon:
    config: Config
    runtime: Runtime
    config_path: Path | None = None
    notifier: Notifier = field(default_factory=Notifier)
    # A SimpleQueue: its put is reentrant, and the signal handlers put on it from the main thread, which
    # may be inside a get (a Queue's put would wait for the lock its own get holds: the daemon hung so)
    hints: queue.SimpleQueue[Hint] = field(default_factory=queue.SimpleQueue)
    started_at: float = field(default_factory=time.time)
    # What this run changes in every config it loads, a reload's too: a simulation's paths.
    local_settings: Callable[[Config], Config] = lambda config: config

    def __post_init__(self) -> None:
        self._stop = threading.Event()  # the main thread only reads it (no lock), so its handler may set it
        self._reload_asked = False  # by SIGHUP; a flag, not an Event, whose clear() takes a lock
        self.history = History(self.config.settings.state_dir)
        self._wiring: _Wiring | None = None
        self._control: ControlServer | None = None
        self.last_error: str | None = None
        self.reload_error: str | None = None  # why the last `systemctl reload` kept the running config
        self._ready = False
        self._last_ping = 0.0
        self._watch_changes: dict[str, bool] = {}  # path → watch (True) or unwatch, for the pass's end
        self._gate = HintGate()
        self._passes = PassCount()
        self._status_sent: str | None = None  # the last status line systemd received

    # -- life cycle ------------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (returns 0) or an unexpected error (returns 1)."""
        self._install_signal_handlers()
        self.notifier.status("starting: connecting to xenstored")
        self.runtime.hypervisor.watch_lifecycle(self._on_lifecycle, self._on_libvirt_reconnect)
        self._wiring = self._wire(self.config)
        self._control = ControlServer(
            self.config.settings.control_socket, self._on_control, group=self.config.settings.control_group
        )
        self._control.start()
        try:
            self.notifier.status("initial reconcile: hiding PCI devices, starting driver domains")
            wake = self._reconcile([ResyncHint("daemon start")])
            self.history.record("daemon-started", mode=self.runtime.description, pid=os.getpid())
            self.notifier.ready(self._status_line())
            self._ready = True
            log.info("ready: %s", self._status_line())
            self.runtime.after_ready()
            self._serve(wake)
        except Exception:
            log.exception("xenddd daemon failed")
            return 1
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self._stop.set()
        self.hints.put(ResyncHint("stopping"))

    def _serve(self, wake: float | None) -> None:
        """Passes for admitted hints (see `HintGate`), for the last pass's wake-up (a quiet moment
        re-checks what it asked for), and a full resync every SAFETY_RESYNC seconds on its own clock: a
        steady stream of hints must not starve it."""
        interval = watchdog_interval()
        now = time.monotonic()
        wake_at = None if wake is None else now + wake
        resync_at = now + SAFETY_RESYNC
        while not self._stop.is_set():
            now = time.monotonic()
            deadlines = [t - now for t in (wake_at, resync_at) if t is not None]
            timeout = min(t for t in (*deadlines, interval, self._gate.next_release()) if t is not None)
            hints = self._gate.admit(self._drain(max(0.0, timeout)))
            if self._stop.is_set():
                break
            if self._reload_asked:
                self._reload_asked = False
                self._reload_config()
                hints.append(ResyncHint("config reloaded"))
            now = time.monotonic()
            if now >= resync_at:
                hints.append(ResyncHint("timer"))
            elif not hints and wake_at is not None and now >= wake_at:
                hints.append(Recheck())
            if not hints:
                self._ping_watchdog()  # woken for the watchdog, or for held hints not yet due
                continue
            if any(isinstance(h, ResyncHint) for h in hints):
                resync_at = now + SAFETY_RESYNC
            wake = self._reconcile(hints)
            wake_at = None if wake is None else time.monotonic() + wake
            self._ping_watchdog()
            self._report_status()

    def _reconcile(self, hints: list[Hint]) -> float | None:
        assert self._wiring is not None
        started = time.monotonic()
        try:
            wake = self._wiring.reconciler.reconcile(hints)
            self._apply_watch_changes()
            self.last_error = None
        except XendddError as exc:
            # Expected trouble (xenstored or libvirtd restarting): say it once per pass, try again soon.
            self.last_error = str(exc)
            log.error("reconcile: %s", exc)
            for hint in hints:
                if isinstance(hint, ControlRequest):
                    hint.reply({"ok": False, "error": str(exc), "exit_code": 1})
            wake = 2.0
        self._passes.add(time.monotonic() - started)
        self._write_metrics()
        return wake

    def _drain(self, timeout: float) -> list[Hint]:
        """The first hint, and whatever else comes within COALESCE of it: a recovery's calls return and
        its backends change state in bursts, and one pass for the burst does the work of many. An
        operator's request or a domain's event (`@releaseDomain` among them) ends the wait at once: a
        crash is detected when it is seen, and the xenstore hints that came before it are taken with it
        (a dying driver domain's nodes go first, its lifecycle event follows).

        The wait is cut into slices of at most SIGNAL_LATENCY: a signal that the kernel hands to another
        of the daemon's threads runs its Python handler only when the main thread next wakes, and a
        blocked `get` would hold SIGTERM for up to SAFETY_RESYNC."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                first = self.hints.get(timeout=max(0.0, min(SIGNAL_LATENCY, deadline - time.monotonic())))
                break
            except queue.Empty:
                if self._stop.is_set() or self._reload_asked or time.monotonic() >= deadline:
                    return []
        batch = [first]
        until = time.monotonic() + COALESCE
        while True:
            if isinstance(batch[-1], ControlRequest | DomainHint) or domain_gone(batch[-1]):
                until = 0.0  # what is queued already comes along; nothing more is waited for
            try:
                batch.append(self.hints.get(timeout=max(0.0, until - time.monotonic())))
            except queue.Empty:
                return batch

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self._control is not None:
            self._control.stop()
        if self._wiring is not None:
            self._wiring.watcher.stop()
            self._wiring.reconciler.calls.close()
        self.history.record("daemon-stopped", driver_domains="left running")
        self.runtime.close()
        log.info("stopped; driver domains are left running")

    # -- wiring ----------------------------------------------------------------------------------------

    def _wire(self, config: Config) -> _Wiring:
        xs = self.runtime.xenstore
        names = [spec.name for spec in config.driver_domains]
        registry = FrontendRegistry(
            xs, names, state_dir=config.settings.state_dir, on_damage=self._state_damaged
        )
        registry.load()
        watcher = BackendWatcher(xs, names, self.hints.put, domains=registry.domains)
        watcher.start()
        reconciler = Reconciler(
            config,
            self.runtime.hypervisor,
            registry,
            self.history,
            guests=GuestView(xs, registry.domains),
            intents=IntentLog(config.settings.state_dir, on_damage=self._state_damaged),
            prepare=self.runtime.prepare,
            watch=self._watch,
            unwatch=self._unwatch,
            wake=lambda: self.hints.put(CallReturned()),
            progress=self._progress,
        )
        return _Wiring(registry, watcher, reconciler)

    def _state_damaged(self, damage: Damage) -> None:
        """A damaged state file was moved aside (and warned about): keep a trace in the history, which
        outlives the journal and is what `xenddd events` shows."""
        self.history.record(
            "state-damaged",
            file=str(damage.path),
            moved_to=str(damage.moved_to) if damage.moved_to else None,
            reason=damage.reason,
        )

    def _progress(self, driver_domain: str) -> None:
        """Between driver domains within a pass. Starting one can take a minute on a loaded or emulated
        host, so a pass over several may outlast TimeoutStartSec (the first pass) or WatchdogSec while
        making progress: extend the start timeout per domain, and ping the watchdog once ready."""
        if self._ready:
            interval = watchdog_interval()
            if interval is not None and time.monotonic() - self._last_ping >= interval:
                self._ping_watchdog()
        else:
            self.notifier.extend_timeout(STEP_TIMEOUT, f"initial reconcile: {driver_domain}")

    def _ping_watchdog(self) -> None:
        """Passes no longer wait for the toolstack (its calls run on workers), so a pass that returns
        proves only the loop alive: a toolstack call hung beyond STALLED_CALL stops the pings, and systemd
        restarts the daemon, which takes the recovery up again from its intent log."""
        oldest = self._wiring.reconciler.calls.oldest() if self._wiring is not None else None
        if oldest is not None and oldest[1] > STALLED_CALL:
            if self.last_error is None or "hung" not in self.last_error:
                log.error("toolstack call %r hung for %.0f s; no longer pinging the watchdog", *oldest)
            self.last_error = f"toolstack call {oldest[0]!r} hung for {oldest[1]:.0f} s"
            return
        self.notifier.watchdog()
        self._last_ping = time.monotonic()

    def _watch(self, path: str) -> None:
        self._watch_changes[path] = True

    def _unwatch(self, path: str) -> None:
        self._watch_changes[path] = False

    def _apply_watch_changes(self) -> None:
        """The watches a pass asked for, armed (or removed) together once it ends: one round trip, not one
        per reattached frontend. Arming a watch fires it once, so nothing between is missed."""
        changes, self._watch_changes = self._watch_changes, {}
        xenstore = self.runtime.xenstore
        try:
            xenstore.unwatch_many([path for path, on in changes.items() if not on])
            for path, exc in xenstore.watch_many([path for path, on in changes.items() if on]).items():
                log.warning("cannot watch %s: %s", path, exc)
        except XenstoreError as exc:
            log.warning("cannot change %d xenstore watches: %s", len(changes), exc)

    def _reload_config(self) -> None:
        """systemd holds the unit in "reloading" (and `systemctl reload` waits) from RELOADING=1 until the
        next READY=1, so READY=1 follows whatever the reload's outcome."""
        if self.config_path is None:
            return
        self.notifier.reloading()
        try:
            self._apply_new_config(self.config_path)
        finally:
            self.notifier.ready(self._status_line())
            self._status_sent = None  # RELOADING's own status line came between

    def _apply_new_config(self, path: Path) -> None:
        try:
            new = self.local_settings(load_config(path))
        except XendddError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc)
            self.reload_error = str(exc)
            self.history.record("reload-failed", error=str(exc))
            return
        self.reload_error = None
        old_names = {d.name for d in self.config.driver_domains}
        new_names = {d.name for d in new.driver_domains}
        for gone in sorted(old_names - new_names):
            log.warning("%s is no longer configured: left running, no longer managed", gone)
        assert self._wiring is not None
        self._wiring.watcher.stop()
        self._wiring.reconciler.calls.close()  # calls under way finish; the new wiring reads their effects
        self.config = new
        self._wiring = self._wire(new)
        self.history.record(
            "config-reloaded", added=sorted(new_names - old_names), removed=sorted(old_names - new_names)
        )

    # -- event sources (their own threads: only enqueue) ----------------------------------------------

    def _on_lifecycle(self, event: LifecycleEvent) -> None:
        self.hints.put(DomainHint("libvirt", name=event.name, domid=event.domid))

    def _on_libvirt_reconnect(self) -> None:
        self.hints.put(ResyncHint("reconnected to libvirt; lifecycle events may have been lost"))

    def _on_control(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "events":
            return self._events(args)
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        done = threading.Event()
        answer: dict[str, Any] = {}

        def reply(result: dict[str, Any]) -> None:
            answer.update(result)
            done.set()

        self.hints.put(ControlRequest(op, args, reply))
        if not done.wait(CONTROL_TIMEOUT):
            return {"ok": False, "error": f"the daemon is busy; {op!r} not answered in time", "exit_code": 1}
        if op == "status" and answer.get("ok"):
            answer["daemon"] = self._health()
        return answer

    def _events(self, args: dict[str, Any]) -> dict[str, Any]:
        since = args.get("since")
        after = args.get("after_seq", 0)
        wait = args.get("wait", 0)
        if not isinstance(after, int) or not isinstance(wait, (int, float)):
            return {"ok": False, "error": "after_seq must be an integer and wait a number", "exit_code": 2}
        if wait:
            records = self.history.wait_after(after, min(float(wait), 30.0))
        else:
            records = self.history.since(float(since) if isinstance(since, (int, float)) else None, after)
        return {"ok": True, "events": records}

    def _install_signal_handlers(self) -> None:
        def on_term(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping (driver domains stay up)", signum)
            self.stop()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self._reload_asked = True
            self.hints.put(ResyncHint("SIGHUP"))

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
            signal.signal(signal.SIGINT, on_term)
            signal.signal(signal.SIGHUP, on_hup)

    # -- reporting -------------------------------------------------------------------------------------

    def _health(self) -> dict[str, Any]:
        oldest = self._wiring.reconciler.calls.oldest() if self._wiring is not None else None
        return {
            # the toolstack call running longest, once it is slow: what a recovery that does not end waits on
            "slow_call": None
            if oldest is None or oldest[1] < SLOW_CALL_SHOWN
            else {"what": oldest[0], "seconds": round(oldest[1], 1)},
            "pid": os.getpid(),
            "mode": self.runtime.description,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "xenstore": "connected" if self.last_error is None else f"trouble: {self.last_error}",
            "last_error": self.last_error,
            "reload_error": self.reload_error,
            "xenstore_socket": str(self.config.settings.xenstore_socket),
            "state_dir": str(self.config.settings.state_dir),
            "passes": self._passes.passes,
            "pass_seconds": round(self._passes.seconds, 3),
            "cpu_seconds": round(time.process_time(), 3),
            "threads_cpu_seconds": threads_cpu_seconds(),
            "pass_cpu_seconds": {}
            if self._wiring is None
            else {k: round(v, 3) for k, v in self._wiring.reconciler.pass_cpu.seconds.items()},
            "xenstore_requests": self.runtime.xenstore.requests_sent,
            "watch_events": self.runtime.xenstore.events_received,
        }

    def _report_status(self) -> None:
        """systemd's status line, sent when it changes: after every pass it would be the same line many
        times a second while a recovery's watch events come in, each a datagram for PID 1 to parse."""
        line = self._status_line()
        if line != self._status_sent and self.notifier.status(line):
            self._status_sent = line

    def _status_line(self) -> str:
        """From the records alone: `status`'s snapshot would read each standby's readiness key in
        xenstore, on every pass."""
        if self._wiring is None:
            return "starting"
        configured, recovering, failed = self._wiring.reconciler.summary()
        text = f"{configured} driver domain(s)"
        if recovering:
            text += f", recovering {','.join(recovering)}"
        if failed:
            text += f", FAILED {','.join(failed)}"
        return text

    def _write_metrics(self) -> None:
        target = self.config.settings.metrics_textfile
        if target is None or self._wiring is None:
            return
        try:
            write_metrics(target, self._wiring.reconciler.snapshot(fresh=False), self.history)
        except (OSError, XendddError) as exc:
            log.warning("metrics not written to %s: %s", target, exc)
