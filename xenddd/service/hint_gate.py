"""Hints caused by one domain's nodes are rate-limited per domain before they make a pass.

A guest can write its own nodes as fast as xenstored takes them, and a watched node (a frontend's state
during a reattach, a driver domain's backend tree) turns each write into a hint: one pass each, and each
pass asks libvirtd for its domains. So every domain whose nodes a hint is about (`/local/domain/<domid>/…`:
the guest for its frontends, the driver domain for its backends) gets a token bucket of passes: a few a
second, with a small burst for a reattach's handshake. Hints beyond it are held, coalesced by path, and
let through together when the bucket refills; hints about no domain's nodes (lifecycle events, toolstack
calls returning, reconnects, operator requests, `@introduceDomain`) always pass at once. Holding a hint
loses nothing: hints carry no authority, the pass re-reads what they point at.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from xenddd.hints import Hint, XenstoreHint

PASSES_PER_SECOND = 5.0  # per domain whose nodes the hints are about
BURST = 5.0


class HintGate:
    def __init__(
        self,
        rate: float = PASSES_PER_SECOND,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # domid → (tokens, when counted)
        self._held: dict[int, dict[str, XenstoreHint]] = {}

    def admit(self, hints: Sequence[Hint]) -> list[Hint]:
        """The hints that may make a pass now: those about no domain's nodes, and those of each domain
        with a pass left in its bucket (held ones of that domain included); the rest are held."""
        now = self._clock()
        passed: list[Hint] = []
        for hint in hints:
            source = _source(hint)
            if source is None:
                passed.append(hint)
            else:
                assert isinstance(hint, XenstoreHint)
                self._held.setdefault(source, {})[hint.path] = hint
        for source in list(self._held):
            tokens = self._level(source, now)
            if tokens >= 1.0:
                self._buckets[source] = (tokens - 1.0, now)
                passed.extend(self._held.pop(source).values())
        self._forget_full(now)
        return passed

    def next_release(self) -> float | None:
        """Seconds until some held hints may pass; None when none are held."""
        if not self._held:
            return None
        now = self._clock()
        return max(0.0, min((1.0 - self._level(s, now)) / self._rate for s in self._held))

    def _level(self, source: int, now: float) -> float:
        tokens, counted = self._buckets.get(source, (self._burst, now))
        return min(self._burst, tokens + (now - counted) * self._rate)

    def _forget_full(self, now: float) -> None:
        """A domain whose bucket has refilled is forgotten: domains that come and go cost no memory."""
        for source in [
            s for s in self._buckets if s not in self._held and self._level(s, now) >= self._burst
        ]:
            del self._buckets[source]


def _source(hint: Hint) -> int | None:
    """The domain whose nodes a xenstore hint is about: `/local/domain/<domid>/…`."""
    if not isinstance(hint, XenstoreHint):
        return None
    parts = hint.path.split("/", 4)
    if len(parts) < 4 or parts[:3] != ["", "local", "domain"] or not parts[3].isdigit():
        return None
    return int(parts[3])
