"""The bounded, persisted history of what xenddd saw and did (`xenddd events`).

Every record is a flat JSON object with a sequence number and a wall-clock timestamp; recoveries are
recorded phase by phase under one `incident` id, so the time from `detected` to the last `reattached` (MTTR)
can be read per incident. Records are appended to a JSON-lines file (one write per record, so a recovery of
hundreds of frontends does not rewrite the history hundreds of times); when the file holds twice `limit`
records it is rewritten atomically with the newest `limit`. A torn last line (power loss mid-append) or a
damaged one is skipped on load.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xenddd import state

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
DEFAULT_LIMIT = 2000

Record = dict[str, Any]


class History:
    def __init__(self, state_dir: Path | None, limit: int = DEFAULT_LIMIT) -> None:
        self._path = state_dir / HISTORY_FILE if state_dir is not None else None
        self._limit = limit
        self._lock = threading.Condition()
        self._records: list[Record] = _load(self._path)[-limit:] if self._path else []
        self._lines_on_disk = len(self._records)
        self._seq = max((int(r.get("seq", 0)) for r in self._records), default=0)
        self._listeners: list[Callable[[Record], None]] = []

    def record(self, event: str, **fields: Any) -> Record:
        with self._lock:
            self._seq += 1
            entry: Record = {"seq": self._seq, "ts": time.time(), "event": event, **fields}
            self._records.append(entry)
            del self._records[: -self._limit]
            if self._path is not None:
                self._persist(entry)
            listeners = list(self._listeners)
            self._lock.notify_all()
        for listener in listeners:
            listener(entry)
        return entry

    def _persist(self, entry: Record) -> None:
        assert self._path is not None
        if self._lines_on_disk >= 2 * self._limit:
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records)
            state.write_text(self._path, text)
            self._lines_on_disk = len(self._records)
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
        self._lines_on_disk += 1

    def since(self, ts: float | None = None, after_seq: int = 0) -> list[Record]:
        with self._lock:
            return [dict(r) for r in self._records if r["seq"] > after_seq and (ts is None or r["ts"] >= ts)]

    def wait_after(self, seq: int, timeout: float) -> list[Record]:
        """Records newer than `seq`, waiting up to `timeout` for one to arrive (`events --follow`)."""
        with self._lock:
            self._lock.wait_for(lambda: self._seq > seq, timeout)
        return self.since(after_seq=seq)

    def subscribe(self, listener: Callable[[Record], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def incidents(self) -> dict[str, list[Record]]:
        """Records grouped by incident id, oldest first."""
        grouped: dict[str, list[Record]] = {}
        with self._lock:
            for r in self._records:
                if "incident" in r:
                    grouped.setdefault(str(r["incident"]), []).append(dict(r))
        return grouped


def _load(path: Path) -> list[Record]:
    """The records of the history file. A line that is not a record — torn by a power loss mid-append,
    or damaged (a byte that is not UTF-8, a bad sector) — is skipped: the rest of the history is still
    worth having, and a history must never keep the daemon from starting. Damage beyond a torn last line
    is said once."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    records = []
    damaged = 0
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            damaged += number < len(lines)  # a torn last append is expected after a power loss
            continue
        if _well_formed(record):
            records.append(record)
        else:
            damaged += 1
    if damaged:
        log.warning("%s: skipped %d damaged line(s) of the history", path, damaged)
    return records


def _well_formed(record: object) -> bool:
    """What readers of a record rely on: an integer seq, a numeric ts, a string event."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("seq"), int)
        and isinstance(record.get("ts"), (int, float))
        and isinstance(record.get("event"), str)
    )


def mttr(records: list[Record]) -> float | None:
    """Seconds from `detected` to `recovered` of one incident, or None while it is not recovered."""
    detected = next((r["ts"] for r in records if r["event"] == "detected"), None)
    recovered = next((r["ts"] for r in records if r["event"] == "recovered"), None)
    if detected is None or recovered is None:
        return None
    return float(recovered - detected)
