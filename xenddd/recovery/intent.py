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
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

ATTACH_RETRY_BASE = 1.0
ATTACH_RETRY_CAP = 60.0


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
        return min(ATTACH_RETRY_CAP, ATTACH_RETRY_BASE * 2.0 ** min(max(self.attempts, 1) - 1, 16))


@dataclass
class Incident:
    """One recovery of one driver domain, from detection to the last frontend reattached."""

    id: str
    dead_domid: int | None
    detected_at: float
    phase: Phase
    reason: str
    planned: bool = False
    frontends: list[PendingFrontend] = field(default_factory=list)
    not_before: float = 0.0
    ready_deadline: float = 0.0
    new_domid: int | None = None
    dropped: list[str] = field(default_factory=list)
    dead_uptime: float | None = None  # how long the dead instance ran (None: unknown); decides the backoff
    detached_reported: bool = False

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
    restarts: int = 0
    reattach_failures: int = 0
    incident: Incident | None = None
    last_incident: dict[str, Any] | None = None


class IntentLog:
    """Loads and atomically saves the DomainRecord of each driver domain (one JSON file per domain)."""

    def __init__(self, state_dir: Path | None) -> None:
        self._dir = state_dir / RECORD_DIR if state_dir is not None else None

    def load(self, name: str) -> DomainRecord:
        if self._dir is None or not _SAFE_NAME.match(name):
            return DomainRecord(name)
        document = state.read_json(self._dir / f"{name}.json", default=None)
        if not isinstance(document, dict) or document.get("version") != _FILE_VERSION:
            return DomainRecord(name)
        return _record_from_json(name, document)

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
        "reattach_failures": record.reattach_failures,
        "last_incident": record.last_incident,
        "incident": None
        if incident is None
        else {
            "id": incident.id,
            "dead_domid": incident.dead_domid,
            "detected_at": incident.detected_at,
            "phase": incident.phase.value,
            "reason": incident.reason,
            "planned": incident.planned,
            "not_before": incident.not_before,
            "ready_deadline": incident.ready_deadline,
            "new_domid": incident.new_domid,
            "dropped": incident.dropped,
            "dead_uptime": incident.dead_uptime,
            "detached_reported": incident.detached_reported,
            "frontends": [
                {
                    "frontend": frontend_to_json(p.frontend),
                    "detached": p.detached,
                    "attached": p.attached,
                    "attempts": p.attempts,
                    "not_before": p.not_before,
                    "last_error": p.last_error,
                    "confirm_deadline": p.confirm_deadline,
                }
                for p in incident.frontends
            ],
        },
    }


def _record_from_json(name: str, doc: dict[str, Any]) -> DomainRecord:
    record = DomainRecord(
        name=name,
        domid=_opt_int(doc.get("domid")),
        stopped_by_request=bool(doc.get("stopped_by_request")),
        failed=bool(doc.get("failed")),
        restart_times=[float(t) for t in doc.get("restart_times", []) if isinstance(t, (int, float))],
        started_at=_opt_float(doc.get("started_at")),
        crashes=int(doc.get("crashes", 0)),
        restarts=int(doc.get("restarts", 0)),
        reattach_failures=int(doc.get("reattach_failures", 0)),
        last_incident=doc.get("last_incident") if isinstance(doc.get("last_incident"), dict) else None,
    )
    raw = doc.get("incident")
    if isinstance(raw, dict):
        pending = []
        for item in raw.get("frontends", []):
            frontend = frontend_from_json(item.get("frontend")) if isinstance(item, dict) else None
            if frontend is None:
                continue
            pending.append(
                PendingFrontend(
                    frontend,
                    detached=bool(item.get("detached")),
                    attached=bool(item.get("attached")),
                    attempts=int(item.get("attempts", 0)),
                    not_before=float(item.get("not_before", 0.0)),
                    last_error=item.get("last_error"),
                    confirm_deadline=float(item.get("confirm_deadline", 0.0)),
                )
            )
        record.incident = Incident(
            id=str(raw.get("id", uuid.uuid4().hex[:12])),
            dead_domid=_opt_int(raw.get("dead_domid")),
            detected_at=float(raw.get("detected_at", 0.0)),
            phase=_phase(raw.get("phase")),
            reason=str(raw.get("reason", "")),
            planned=bool(raw.get("planned")),
            frontends=pending,
            not_before=float(raw.get("not_before", 0.0)),
            ready_deadline=float(raw.get("ready_deadline", 0.0)),
            new_domid=_opt_int(raw.get("new_domid")),
            dropped=[str(d) for d in raw.get("dropped", [])],
            dead_uptime=_opt_float(raw.get("dead_uptime")),
            detached_reported=bool(raw.get("detached_reported")),
        )
    return record


def _phase(value: object) -> Phase:
    """A record saved before detaches ran beside the restart says "detaching" for "detected"."""
    return Phase.DETECTED if value in (None, "detaching") else Phase(value)


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
