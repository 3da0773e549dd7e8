"""The bounded, persisted history of what xenddd saw and did (`xenddd events`).

Every record is a flat JSON object with a sequence number and a wall-clock timestamp; recoveries are
recorded phase by phase under one `incident` id, so the time from `detected` to the last `reattached` (MTTR)
can be read per incident. The newest `limit` records are kept, persisted atomically after each append.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xenddd import state

HISTORY_FILE = "history.json"
DEFAULT_LIMIT = 2000

Record = dict[str, Any]


class History:
    def __init__(self, state_dir: Path | None, limit: int = DEFAULT_LIMIT) -> None:
        self._path = state_dir / HISTORY_FILE if state_dir is not None else None
        self._limit = limit
        self._lock = threading.Condition()
        loaded = state.read_json(self._path, default=[]) if self._path else []
        self._records: list[Record] = [r for r in loaded if isinstance(r, dict)][-limit:]
        self._seq = max((int(r.get("seq", 0)) for r in self._records), default=0)
        self._listeners: list[Callable[[Record], None]] = []

    def record(self, event: str, **fields: Any) -> Record:
        with self._lock:
            self._seq += 1
            entry: Record = {"seq": self._seq, "ts": time.time(), "event": event, **fields}
            self._records.append(entry)
            del self._records[: -self._limit]
            if self._path is not None:
                state.write_json(self._path, self._records)
            listeners = list(self._listeners)
            self._lock.notify_all()
        for listener in listeners:
            listener(entry)
        return entry

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


def mttr(records: list[Record]) -> float | None:
    """Seconds from `detected` to `recovered` of one incident, or None while it is not recovered."""
    detected = next((r["ts"] for r in records if r["event"] == "detected"), None)
    recovered = next((r["ts"] for r in records if r["event"] == "recovered"), None)
    if detected is None or recovered is None:
        return None
    return float(recovered - detected)
