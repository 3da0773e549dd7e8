"""One damaged state file costs what it held, never the daemon: it is moved aside, reported once, and
rebuilt from what xenstore and libvirt show, while every driver domain stays supervised."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.recovery.conftest import RunningDaemon, wait_until
from tests.recovery.test_intent_log import VIF
from xenddd.recovery.history import History
from xenddd.recovery.intent import DomainRecord, Incident, IntentLog
from xenddd.state import Damage

FIVE_DEVICES = 5


def saved_record(state_dir: Path) -> dict[str, object]:
    record = DomainRecord("domnet", domid=1, crashes=1)
    record.incident = Incident.new(1, 30.0, "gone", [VIF])
    IntentLog(state_dir).save(record)
    document: dict[str, object] = json.loads((state_dir / "domains/domnet.json").read_text())
    return document


def with_incident(**fields: object) -> Callable[[dict[str, object]], bytes]:
    def damage(doc: dict[str, object]) -> bytes:
        incident = doc["incident"]
        assert isinstance(incident, dict)
        return json.dumps({**doc, "incident": {**incident, **fields}}).encode()

    return damage


DAMAGES: dict[str, Callable[[dict[str, object]], bytes]] = {
    "truncated": lambda doc: json.dumps(doc).encode()[:40],
    "empty": lambda _doc: b"",
    "not UTF-8": lambda doc: json.dumps(doc).encode().replace(b'"gone"', b'"g\xffne"'),
    "deeply nested": lambda _doc: b"[" * 100_000 + b"]" * 100_000,
    "not an object": lambda _doc: b"[1, 2]",
    "another version": lambda doc: json.dumps({**doc, "version": 99}).encode(),
    "crashes a string": lambda doc: json.dumps({**doc, "crashes": "many"}).encode(),
    "restart_times not a list": lambda doc: json.dumps({**doc, "restart_times": 5}).encode(),
    "unknown phase": with_incident(phase="exploding"),
    "frontends an object": with_incident(frontends={"a": 1}),
    "a frontend unreadable": with_incident(frontends=[{"frontend": {"kind": "vif"}}]),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_domain_record_is_moved_aside_reported_once_and_read_as_none(
    tmp_path: Path, damage: Callable[[dict[str, object]], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "domains/domnet.json"
    path.write_bytes(damage(saved_record(tmp_path)))
    original = path.read_bytes()
    reports: list[Damage] = []

    with caplog.at_level(logging.WARNING):
        assert IntentLog(tmp_path, on_damage=reports.append).load("domnet") == DomainRecord("domnet")
        assert IntentLog(tmp_path, on_damage=reports.append).load("domnet") == DomainRecord("domnet")

    assert not path.exists()
    [aside] = (tmp_path / "domains").glob("domnet.json.corrupt-*")
    assert aside.read_bytes() == original
    assert [(d.path, d.moved_to) for d in reports] == [(path, aside)]
    assert len([r for r in caplog.records if "damaged" in r.getMessage()]) == 1


def test_a_sound_domain_record_is_not_taken_for_damage(tmp_path: Path) -> None:
    saved_record(tmp_path)
    reports: list[Damage] = []
    loaded = IntentLog(tmp_path, on_damage=reports.append).load("domnet")
    assert loaded.incident is not None and [p.key for p in loaded.incident.frontends] == [VIF.key]
    assert reports == [] and not list((tmp_path / "domains").glob("*.corrupt-*"))


def test_history_lines_that_cannot_be_decoded_are_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    history = History(tmp_path)
    for event in ("detected", "restarted", "recovered"):
        history.record(event, incident="a")
    path = tmp_path / "history.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b"detected", b"detect\xff\xfe")
    lines.insert(1, b'{"seq": 9, "ts": "yesterday", "event": "x"}\n')
    path.write_bytes(b"".join(lines) + b'{"seq": 4, "ts"')  # and a torn last append

    with caplog.at_level(logging.WARNING):
        reloaded = History(tmp_path)

    assert [r["event"] for r in reloaded.since()] == ["restarted", "recovered"]
    assert reloaded.record("started")["seq"] == 4
    assert [r.getMessage() for r in caplog.records] == [f"{path}: skipped 2 damaged line(s) of the history"]


def test_a_daemon_with_damaged_records_starts_adopts_its_driver_domains_and_rebuilds_the_registry(
    start_daemon: Callable[..., RunningDaemon],
) -> None:
    first = start_daemon()
    sim = first.sim
    wait_until(lambda: first.settled(FIVE_DEVICES), what="guests connected at start")
    domids = {name: sim.host.domains[name].domid for name in ("domnet", "domstore")}
    first.stop()
    last_seq = first.daemon.history.since()[-1]["seq"]
    state_dir = first.config.settings.state_dir
    (state_dir / "domains/domnet.json").write_bytes(b'{"version": 1, "domid": ')
    (state_dir / "registry.json").write_bytes(b'{"version": 1, "frontends": [{"kind": "vif"')
    with open(state_dir / "history.jsonl", "ab") as history:
        history.write(b'{"seq": 999, "ts": 1, "event": "\xff"}\n')

    second = start_daemon(sim=sim)
    wait_until(lambda: second.settled(FIVE_DEVICES), what="the registry rebuilt from xenstore")
    wait_until(
        lambda: any(r["event"] == "daemon-started" for r in second.daemon.history.since(after_seq=last_seq)),
        what="the second daemon ready",
    )

    assert {name: sim.host.domains[name].domid for name in domids} == domids  # adopted, not restarted
    since_restart = second.daemon.history.since(after_seq=last_seq)
    damaged = [r for r in since_restart if r["event"] == "state-damaged"]
    assert sorted(Path(str(r["file"])).name for r in damaged) == ["domnet.json", "registry.json"]
    assert all(Path(str(r["moved_to"])).exists() for r in damaged)
    assert [r["event"] for r in since_restart if r["event"] != "state-damaged"] == ["daemon-started"]


@pytest.mark.parametrize("damaged", ["registry.json", "domains/domnet.json"])
def test_a_driver_domain_that_died_while_the_daemon_was_down_is_recovered_whichever_file_was_damaged(
    start_daemon: Callable[..., RunningDaemon], damaged: str
) -> None:
    """The registry's memory of domnet's clients (registry.json) or the record of the instance that
    served them (domains/domnet.json) is lost, and domnet died meanwhile, its backends with it: dom0's
    toolstack records and the registry's orphans still say what to recover."""
    first = start_daemon()
    sim = first.sim
    wait_until(lambda: first.settled(FIVE_DEVICES), what="guests connected at start")
    first.stop()
    sim.host.crash("domnet")
    (first.config.settings.state_dir / damaged).write_bytes(b'{"version": 1, "fron')

    second = start_daemon(sim=sim)

    def reattached() -> list[str]:
        return sorted(str(r["guest"]) for r in second.daemon.history.since() if r["event"] == "reattached")

    wait_until(lambda: reattached() == ["cache", "db", "web"], timeout=30, what="domnet's three vifs")
    wait_until(lambda: second.settled(FIVE_DEVICES), what="every frontend back")
