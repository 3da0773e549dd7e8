"""The intent log survives a daemon restart with every detail of an unfinished recovery."""

from __future__ import annotations

from pathlib import Path

from xenddd.model import DeviceKind, Frontend, VbdParams, VifParams
from xenddd.recovery.history import History, mttr
from xenddd.recovery.intent import DomainRecord, Incident, IntentLog, PendingFrontend, Phase

VIF = Frontend(
    3,
    "web",
    "0a6b1c1e-1d2b-4c57-9a47-6e1d1c3b5a01",
    DeviceKind.VIF,
    0,
    "domnet",
    1,
    VifParams(mac="00:16:3e:00:00:01", bridge="br0"),
)
VBD = Frontend(
    3,
    "web",
    "0a6b1c1e-1d2b-4c57-9a47-6e1d1c3b5a01",
    DeviceKind.VBD,
    51712,
    "domstore",
    2,
    VbdParams(vdev="xvda", target="/dev/vg/web", mode="w"),
)


def test_parked_frontends_survive_a_daemon_restart_outside_any_incident(tmp_path: Path) -> None:
    record = DomainRecord("domnet", domid=7)
    record.parked = [PendingFrontend(VIF, detached=True, attempts=5, not_before=90.0, last_error="stalled")]
    IntentLog(tmp_path).save(record)

    loaded = IntentLog(tmp_path).load("domnet")
    assert loaded.incident is None
    (parked,) = loaded.parked
    assert (parked.frontend, parked.attempts, parked.not_before, parked.last_error) == (
        VIF,
        5,
        90.0,
        "stalled",
    )


def test_an_incident_round_trips_through_the_state_directory(tmp_path: Path) -> None:
    log = IntentLog(tmp_path)
    record = DomainRecord("domnet", domid=None, crashes=2, restart_times=[10.0, 20.0], remains=1)
    record.incident = Incident.new(1, 30.0, "gone", [VIF, VBD])
    record.incident.phase = Phase.REATTACHING
    record.incident.new_domid = 7
    record.incident.key_pending, record.incident.ready_deadline = True, 150.0  # a restored instance's
    record.incident.frontends[0].detached = True
    record.incident.frontends[0].attached = True
    log.save(record)

    loaded = IntentLog(tmp_path).load("domnet")
    assert loaded.crashes == 2 and loaded.restart_times == [10.0, 20.0] and loaded.remains == 1
    assert loaded.incident is not None
    assert loaded.incident.phase is Phase.REATTACHING and loaded.incident.new_domid == 7
    assert loaded.incident.key_pending and loaded.incident.ready_deadline == 150.0
    assert [p.frontend.key for p in loaded.incident.frontends] == [VIF.key, VBD.key]
    assert loaded.incident.frontends[0].frontend.params == VIF.params
    assert loaded.incident.frontends[1].frontend.params == VBD.params
    assert (loaded.incident.frontends[0].attached, loaded.incident.frontends[1].attached) == (True, False)


def test_unknown_domain_and_unsafe_names_start_empty(tmp_path: Path) -> None:
    assert IntentLog(tmp_path).load("domnet") == DomainRecord("domnet")
    assert IntentLog(tmp_path).load("../etc") == DomainRecord("../etc")


def test_history_is_bounded_persisted_and_gives_mttr(tmp_path: Path) -> None:
    history = History(tmp_path, limit=3)
    history.record("detected", incident="a")
    history.record("restarted", incident="a")
    history.record("recovered", incident="a")
    history.record("started", driver_domain="x")
    reloaded = History(tmp_path, limit=3)
    assert [r["event"] for r in reloaded.since()] == ["restarted", "recovered", "started"]
    assert [r["seq"] for r in reloaded.since()] == [2, 3, 4]
    full = History(None)
    full.record("detected", incident="b")
    full.record("recovered", incident="b")
    duration = mttr(full.incidents()["b"])
    assert duration is not None and duration >= 0


def test_an_incident_saved_by_the_previous_version_in_its_detaching_phase_resumes_as_detected(
    tmp_path: Path,
) -> None:
    """Before detaches ran beside the restart, a new incident was "detaching"; a daemon upgraded in the
    middle of one must take it up, not call the record damaged."""
    log = IntentLog(tmp_path)
    record = DomainRecord("domnet", domid=None, started_at=5.0)
    record.incident = Incident.new(1, 30.0, "gone", [VIF], dead_uptime=25.0)
    log.save(record)
    path = tmp_path / "domains" / "domnet.json"
    path.write_text(path.read_text().replace('"phase": "detected"', '"phase": "detaching"'))
    loaded = log.load("domnet")
    assert loaded.incident is not None
    assert loaded.incident.phase is Phase.DETECTED
    assert loaded.incident.dead_uptime == 25.0 and loaded.started_at == 5.0
