"""Per-driver-domain records, written to the state directory before every step that changes the host.

A record holds what xenddd intends for the domain (planned stop, failed) and, during a recovery, the
incident: its phase and the frontends still to detach and reattach. It is rewritten atomically *before*
each destructive step, so a daemon SIGKILLed at any point finds on its next start exactly where the recovery
stood and finishes it, without duplicating a device (attach checks xenstore first) or losing one (the list of
frontends lives here, not only in the registry, whose entries go away when a stale frontend is detached).
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xenddd import state
from xenddd.model import Frontend, FrontendKey
from xenddd.registry.persistence import frontend_from_json, frontend_to_json

RECORD_DIR = "domains"
_FILE_VERSION = 1
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

ATTACH_RETRY_BASE = 1.0
ATTACH_RETRY_CAP = 60.0


def attach_backoff(attempts: int) -> float:
    """Seconds before the next attach after `attempts` (≥ 1) of them: doubling from 1 s, at most a minute."""
    return min(ATTACH_RETRY_CAP, ATTACH_RETRY_BASE * 2.0 ** min(attempts - 1, 16))


class Phase(enum.Enum):
    DETECTED = "detected"  # the restart not decided yet (stale frontends are detached in every phase)
    WAITING_RESTART = "waiting-restart"  # backoff before the next start, or the start under way
    WAITING_READY = "waiting-ready"  # started; waiting for the readiness condition
    REATTACHING = "reattaching"  # attaching and confirming the frontends on the new instance
    FAILED = "failed"  # restart policy exhausted; waits for `xenddd restart NAME`


@dataclass
class PendingFrontend:
    """One frontend of an incident and how far it got; `not_before` backs off failed attaches, and
    `confirm_deadline` bounds the handshake of a successful one."""

    frontend: Frontend
    detached: bool = False
    attached: bool = False
    attempts: int = 0
    not_before: float = 0.0
    last_error: str | None = None
    confirm_deadline: float = 0.0  # once attached: when a handshake still not Connected counts as failed
    # reconnected in place (its backend written again for the dead instance's domid), not detached and
    # attached; False once that failed and the device went the detach/attach way
    restore: bool = False

    @property
    def key(self) -> FrontendKey:
        return self.frontend.key

    def describe(self) -> str:
        f = self.frontend
        return f"{f.guest_name} {f.kind.value} {f.devid}"

    def event_fields(self) -> dict[str, object]:
        f = self.frontend
        return {"guest": f.guest_name, "kind": f.kind.value, "devid": f.devid}

    def retry_delay(self) -> float:
        """Backoff before the next attach after a failure: doubling from 1 s, at most a minute."""
        return attach_backoff(max(self.attempts, 1))


@dataclass
class Incident:
    """One recovery of one driver domain, from detection to the last frontend reattached."""

    id: str
    dead_domid: int | None
    detected_at: float
    phase: Phase
    reason: str
    planned: bool = False
    by_operator: bool = False  # `xenddd restart` or `create`: its restart is counted apart from crashes
    frontends: list[PendingFrontend] = field(default_factory=list)
    not_before: float = 0.0
    ready_deadline: float = 0.0
    new_domid: int | None = None
    dropped: list[str] = field(default_factory=list)
    dead_uptime: float | None = None  # how long the dead instance ran (None: unknown); decides the backoff
    detached_reported: bool = False
    # reconnecting in place: the new instance gets the dead one's domid and the guests' backend
    # directories back, nothing is detached (see phases); False again once that failed
    in_place: bool = False
    # a promoted standby's writable disks, attached beside the guests' reattach (see phases): the
    # incident is not over until they are Connected in it
    disks_pending: bool = False
    # a restored saved instance, used as it returned (see phases): its init has not written its readiness
    # key again yet, and one that does not by `ready_deadline` (or says why in `<key>-error`) is dead
    key_pending: bool = False

    @classmethod
    def new(
        cls,
        dead_domid: int | None,
        now: float,
        reason: str,
        frontends: list[Frontend],
        dead_uptime: float | None = None,
    ) -> Incident:
        return cls(
            id=uuid.uuid4().hex[:12],
            dead_domid=dead_domid,
            detected_at=now,
            phase=Phase.DETECTED,
            reason=reason,
            frontends=[PendingFrontend(f) for f in frontends],
            dead_uptime=dead_uptime,
        )


@dataclass
class DomainRecord:
    name: str
    domid: int | None = None
    stopped_by_request: bool = False
    failed: bool = False
    restart_times: list[float] = field(default_factory=list)
    started_at: float | None = None  # when xenddd started the running instance (None: not by xenddd)
    crashes: int = 0
    restarts: int = 0  # automatic: after the domain died
    manual_restarts: int = 0  # asked for by an operator
    reattach_failures: int = 0
    incident: Incident | None = None
    last_incident: dict[str, Any] | None = None
    # What `destroy --force` detached: `create` attaches them again, as a recovery would.
    detached_by_destroy: list[Frontend] = field(default_factory=list)
    # frontends that never connected within their attempts: out of any incident, retried on their own
    parked: list[PendingFrontend] = field(default_factory=list)
    # its own devices an upstream serves, being detached and attached again (see `own_devices`): saved
    # before the detach, so that one whose attach failed is not forgotten with a daemon restart
    own_reattaching: list[PendingFrontend] = field(default_factory=list)
    # its instance handed to a save (saved_instance): away until the restore, which is no death, and
    # what a daemon killed meanwhile must finish (see reconciler._finish_a_cut_save)
    saving: bool = False
    # the domid of a dead instance whose remains a promotion renamed out of the standby's way: destroyed
    # once the recovery is over (phases.Recovery.idle), not during it, where their destroy takes dom0's
    # processors from the guests' handshakes; kept until then, so that a daemon killed meanwhile is
    # followed by one that destroys them
    remains: int | None = None


class IntentLog:
    """Loads and atomically saves the DomainRecord of each driver domain (one JSON file per domain).

    A damaged record is moved aside and reported through `on_damage` (see `state.read_json_or_quarantine`);
    the domain then starts with no record, as a domain xenddd never ran: the reconciler adopts the running
    instance, or starts one.
    """

    def __init__(
        self,
        state_dir: Path | None,
        *,
        on_damage: state.DamageReport | None = None,
        read_only: bool = False,  # the CLI reading the daemon's records: a damaged one is left in place
    ) -> None:
        self._dir = state_dir / RECORD_DIR if state_dir is not None else None
        self._on_damage = on_damage
        self._read_only = read_only

    def load(self, name: str) -> DomainRecord:
        if self._dir is None or not _SAFE_NAME.fullmatch(name):
            return DomainRecord(name)
        record = state.read_json_or_quarantine(
            self._dir / f"{name}.json",
            lambda doc: _record_from_json(name, doc),
            on_damage=self._on_damage,
            move_aside=not self._read_only,
        )
        return record if record is not None else DomainRecord(name)

    def save(self, record: DomainRecord) -> None:
        if self._dir is not None:
            state.write_json(self._dir / f"{record.name}.json", _record_to_json(record))


def _record_to_json(record: DomainRecord) -> dict[str, Any]:
    incident = record.incident
    return {
        "version": _FILE_VERSION,
        "domid": record.domid,
        "stopped_by_request": record.stopped_by_request,
        "failed": record.failed,
        "restart_times": record.restart_times,
        "started_at": record.started_at,
        "crashes": record.crashes,
        "restarts": record.restarts,
        "manual_restarts": record.manual_restarts,
        "reattach_failures": record.reattach_failures,
        "last_incident": record.last_incident,
        "detached_by_destroy": [frontend_to_json(f) for f in record.detached_by_destroy],
        "remains": record.remains,
        "incident": None
        if incident is None
        else {
            "id": incident.id,
            "dead_domid": incident.dead_domid,
            "detected_at": incident.detected_at,
            "phase": incident.phase.value,
            "reason": incident.reason,
            "planned": incident.planned,
            "by_operator": incident.by_operator,
            "not_before": incident.not_before,
            "ready_deadline": incident.ready_deadline,
            "new_domid": incident.new_domid,
            "dropped": incident.dropped,
            "dead_uptime": incident.dead_uptime,
            "detached_reported": incident.detached_reported,
            "in_place": incident.in_place,
            "disks_pending": incident.disks_pending,
            "key_pending": incident.key_pending,
            "frontends": [_pending_to_json(p) for p in incident.frontends],
        },
        "parked": [_pending_to_json(p) for p in record.parked],
        "own_reattaching": [_pending_to_json(p) for p in record.own_reattaching],
        "saving": record.saving,
    }


def _pending_to_json(pending: PendingFrontend) -> dict[str, Any]:
    return {
        "frontend": frontend_to_json(pending.frontend),
        "detached": pending.detached,
        "attached": pending.attached,
        "attempts": pending.attempts,
        "not_before": pending.not_before,
        "last_error": pending.last_error,
        "confirm_deadline": pending.confirm_deadline,
        "restore": pending.restore,
    }


def _record_from_json(name: str, doc: object) -> DomainRecord:
    """The record as saved; ValueError for anything else (a wrong version, type or phase), which the
    caller treats as damage. A field of the wrong type is damage, not a default: the record is then not
    what xenddd wrote, and acting on half of it could restart a domain or skip a guest."""
    if not isinstance(doc, dict) or doc.get("version") != _FILE_VERSION:
        raise ValueError(f"not a version {_FILE_VERSION} domain record")
    last_incident = doc.get("last_incident")
    if last_incident is not None and not isinstance(last_incident, dict):
        raise ValueError("last_incident is not an object")
    record = DomainRecord(
        name=name,
        domid=_opt_int(doc, "domid"),
        stopped_by_request=_bool(doc, "stopped_by_request"),
        failed=_bool(doc, "failed"),
        restart_times=[_number(t, "restart_times") for t in _list(doc, "restart_times")],
        started_at=_opt_number(doc, "started_at"),
        crashes=_int(doc, "crashes"),
        restarts=_int(doc, "restarts"),
        manual_restarts=_int(doc, "manual_restarts"),
        reattach_failures=_int(doc, "reattach_failures"),
        last_incident=last_incident,
        parked=[_pending_from_json(item) for item in _list(doc, "parked")],
        own_reattaching=[_pending_from_json(item) for item in _list(doc, "own_reattaching")],
        saving=_bool(doc, "saving"),
        remains=_opt_int(doc, "remains"),
    )
    for item in _list(doc, "detached_by_destroy"):
        frontend = frontend_from_json(item)
        if frontend is None:
            raise ValueError(f"detached frontend {item!r:.100} is not valid")
        record.detached_by_destroy.append(frontend)
    raw = doc.get("incident")
    if raw is None:
        return record
    if not isinstance(raw, dict):
        raise ValueError("incident is not an object")
    pending = [_pending_from_json(item) for item in _list(raw, "frontends")]
    record.incident = Incident(
        id=str(raw.get("id", uuid.uuid4().hex[:12])),
        dead_domid=_opt_int(raw, "dead_domid"),
        detected_at=_number(raw.get("detected_at", 0.0), "detected_at"),
        phase=_phase(raw.get("phase")),
        reason=str(raw.get("reason", "")),
        planned=_bool(raw, "planned"),
        by_operator=_bool(raw, "by_operator"),
        frontends=pending,
        not_before=_number(raw.get("not_before", 0.0), "not_before"),
        ready_deadline=_number(raw.get("ready_deadline", 0.0), "ready_deadline"),
        new_domid=_opt_int(raw, "new_domid"),
        dropped=[str(d) for d in _list(raw, "dropped")],
        dead_uptime=_opt_number(raw, "dead_uptime"),
        detached_reported=_bool(raw, "detached_reported"),
        in_place=_bool(raw, "in_place"),
        disks_pending=_bool(raw, "disks_pending"),
        key_pending=_bool(raw, "key_pending"),
    )
    return record


def _pending_from_json(item: object) -> PendingFrontend:
    frontend = frontend_from_json(item.get("frontend")) if isinstance(item, dict) else None
    if frontend is None:
        raise ValueError(f"incident frontend {item!r:.100} is not valid")
    assert isinstance(item, dict)
    last_error = item.get("last_error")
    if last_error is not None and not isinstance(last_error, str):
        raise ValueError("last_error is not a string")
    return PendingFrontend(
        frontend,
        detached=_bool(item, "detached"),
        attached=_bool(item, "attached"),
        attempts=_int(item, "attempts"),
        not_before=_number(item.get("not_before", 0.0), "not_before"),
        last_error=last_error,
        confirm_deadline=_number(item.get("confirm_deadline", 0.0), "confirm_deadline"),
        restore=_bool(item, "restore"),
    )


def _phase(value: object) -> Phase:
    """A record saved before detaches ran beside the restart says "detaching" for "detected"; any other
    unknown phase is damage (ValueError)."""
    return Phase.DETECTED if value in (None, "detaching") else Phase(value)


def _opt_number(doc: dict[str, Any], key: str) -> float | None:
    value = doc.get(key)
    return None if value is None else _number(value, key)


def _opt_int(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} is not an integer")
    return value


def _int(doc: dict[str, Any], key: str) -> int:
    value = _opt_int(doc, key)
    return 0 if value is None else value


def _bool(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} is not true or false")
    return value


def _number(value: object, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{what} is not a number")
    return float(value)


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} is not a list")
    return value
