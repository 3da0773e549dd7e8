"""`xenddd demo`: the real daemon on a simulated host; each driver domain is crashed and brought back.

Nothing here is scripted output: the live lines are the daemon's own history records as they are written,
and the summary compares every guest device as its own xenstore nodes show it before the crash and after
the recovery (same devid, MAC or vdev, both ends Connected). A device that did not come back is "lost",
and then the demo fails.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xenddd.adapters.systemd import configure_logging
from xenddd.config.loader import load_config
from xenddd.config.spec import Config
from xenddd.recovery.history import Record
from xenddd.service.daemon import Daemon
from xenddd.service.simulated import simulated_runtime
from xenddd.sim.socket_host import SimulatedHost

DEMO_CONFIG = Path(__file__).with_name("demo.toml")
RECOVERY_TIMEOUT = 60.0

DeviceKey = tuple[str, str, str]  # guest, kind, devid


@dataclass
class DomainSummary:
    name: str
    crashes: int = 0
    restarts: int = 0
    mttr_seconds: float | None = None
    frontends_reattached: int = 0
    frontends_lost: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "crashes": self.crashes,
            "restarts": self.restarts,
            "mttr_seconds": None if self.mttr_seconds is None else round(self.mttr_seconds, 3),
            "frontends_reattached": self.frontends_reattached,
            "frontends_lost": self.frontends_lost,
        }


def run_demo(say: Callable[[str], None], config_path: Path = DEMO_CONFIG) -> list[DomainSummary]:
    scratch = Path(tempfile.mkdtemp(prefix="xenddd-demo-"))
    config = load_config(config_path)
    config = replace(
        config,
        settings=replace(
            config.settings, state_dir=scratch / "state", control_socket=scratch / "control.sock"
        ),
    )
    configure_logging(config.settings.log_level)
    sim = SimulatedHost.start(scratch / "xenstored.sock")
    daemon = Daemon(config, simulated_runtime(sim, config))
    daemon.history.subscribe(lambda record: say(_live_line(record)))
    thread = threading.Thread(target=daemon.run, name="xenddd-demo-daemon", daemon=True)
    say(f"simulated host up; xenstored on {sim.server.path}; starting the daemon")
    thread.start()
    summaries = []
    try:
        expected = sum(len(g.vif) + len(g.vbd) for g in config.sim_guests)
        _wait(lambda: _settled(sim, daemon, expected), "the guests' frontends to connect")
        say(f"{expected} frontends connected across {len(config.sim_guests)} guests")
        for spec in config.driver_domains:
            summaries.append(_crash_and_recover(sim, daemon, config, spec.name, say))
    finally:
        daemon.stop()
        thread.join(10)
        sim.stop()
    return summaries


def _crash_and_recover(
    sim: SimulatedHost, daemon: Daemon, config: Config, name: str, say: Callable[[str], None]
) -> DomainSummary:
    before = {k: v for k, v in _devices(sim, config).items() if v["backend"] == name}
    recovered_before = len(_records(daemon, "recovered", name))
    domid = sim.host.domains[name].domid
    say(f"--- crashing {name} (domid {domid}), which serves {len(before)} frontends ---")
    sim.host.crash(name)
    summary = DomainSummary(name, crashes=1)
    try:
        _wait(lambda: len(_records(daemon, "recovered", name)) > recovered_before, f"{name} to recover")
        _wait(lambda: _all_back(sim, config, before), f"{name}'s frontends to reconnect")
    except TimeoutError as exc:
        say(f"!!! {exc}")
    after = _devices(sim, config)
    back = [k for k, v in before.items() if _same_device(v, after.get(k))]
    summary.frontends_reattached = len(back)
    summary.frontends_lost = len(before) - len(back)
    summary.restarts = len(_records(daemon, "restarted", name))
    recovered = _records(daemon, "recovered", name)
    if len(recovered) > recovered_before:
        incident = recovered[-1]["incident"]
        detected = next(r for r in _records(daemon, "detected", name) if r["incident"] == incident)
        summary.mttr_seconds = recovered[-1]["ts"] - detected["ts"]
    return summary


def _devices(sim: SimulatedHost, config: Config) -> dict[DeviceKey, dict[str, str | None]]:
    dom0 = sim.host.dom0
    found: dict[DeviceKey, dict[str, str | None]] = {}
    for guest in config.sim_guests:
        domain = sim.host.domains.get(guest.name)
        if domain is None or domain.domid is None:
            continue
        for kind in ("vif", "vbd"):
            for devid in dom0.directory(f"/local/domain/{domain.domid}/device/{kind}"):
                front = f"/local/domain/{domain.domid}/device/{kind}/{devid}"
                back = (dom0.read(f"{front}/backend") or b"").decode()
                backend_id = (dom0.read(f"{front}/backend-id") or b"").decode()
                backend_name = (
                    (dom0.read(f"/local/domain/{backend_id}/name") or b"").decode() if backend_id else ""
                )
                found[(guest.name, kind, devid)] = {
                    "backend": backend_name or None,
                    "identity": _text(
                        dom0.read(f"{front}/mac") if kind == "vif" else dom0.read(f"{back}/dev")
                    ),
                    "state": _text(dom0.read(f"{front}/state")),
                    "backend_state": _text(dom0.read(f"{back}/state")) if back else None,
                }
    return found


def _same_device(before: dict[str, str | None], after: dict[str, str | None] | None) -> bool:
    return (
        after is not None
        and after["identity"] == before["identity"]
        and after["backend"] == before["backend"]
        and after["state"] == "4"
        and after["backend_state"] == "4"
    )


def _all_back(sim: SimulatedHost, config: Config, before: dict[DeviceKey, dict[str, str | None]]) -> bool:
    after = _devices(sim, config)
    return all(_same_device(v, after.get(k)) for k, v in before.items())


def _settled(sim: SimulatedHost, daemon: Daemon, expected: int) -> bool:
    devices = _devices(sim, daemon.config)
    connected = [d for d in devices.values() if d["state"] == "4" and d["backend_state"] == "4"]
    wiring = daemon._wiring
    return len(connected) == expected and wiring is not None and len(wiring.registry.frontends()) == expected


def _records(daemon: Daemon, event: str, name: str) -> list[Record]:
    return [r for r in daemon.history.since() if r["event"] == event and r.get("driver_domain") == name]


def _wait(condition: Callable[[], bool], what: str, timeout: float = RECOVERY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.01)


def _live_line(record: Record) -> str:
    when = dt.datetime.fromtimestamp(record["ts"]).strftime("%H:%M:%S.%f")[:-3]
    details = " ".join(
        f"{k}={v}" for k, v in record.items() if k not in ("seq", "ts", "event", "driver_domain", "incident")
    )
    return f"{when}  {record['event']:<18} {record.get('driver_domain') or '':<9} {details}"


def _text(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw is not None else None
