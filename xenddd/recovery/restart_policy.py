"""When to restart a crashed driver domain, and when to stop trying.

A crash after a healthy run (`healthy_uptime`) is restarted at once: waiting then only lengthens the outage.
Backoff is for crash loops, as in systemd's `RestartSteps` or Kubernetes' CrashLoopBackOff (which also
resets after a healthy run): the n-th restart of a loop waits base · 2^(n-1), capped, with ±20 % jitter so
that several driver domains that died together do not restart in lock-step; at most `max_restarts` within
a sliding `window`, after which the domain is `failed` until an operator runs `xenddd restart NAME` (a crash
loop must not eat the host).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from xenddd.config.spec import RestartPolicy

JITTER = 0.2


@dataclass(frozen=True)
class RestartDecision:
    """`delay` seconds from now, or `failed` (no more automatic restarts)."""

    failed: bool
    delay: float = 0.0


def crash_loop_restarts(
    policy: RestartPolicy, restart_times: Sequence[float], uptime: float | None
) -> list[float]:
    """The restarts that still count after a crash: none once the instance ran healthy for long enough
    (or its uptime is unknown: an instance xenddd did not start), else those of the loop so far."""
    if uptime is None or uptime >= policy.healthy_uptime_seconds:
        return []
    return list(restart_times)


def decide_restart(
    policy: RestartPolicy, previous_restarts: Sequence[float], now: float, rng: random.Random | None = None
) -> RestartDecision:
    """Decide on one more restart, given the crash loop's earlier automatic restarts (same clock as `now`)."""
    recent = [t for t in previous_restarts if now - t < policy.window_seconds]
    if len(recent) >= policy.max_restarts:
        return RestartDecision(failed=True)
    return RestartDecision(failed=False, delay=backoff_delay(policy, len(recent), rng))


def backoff_delay(policy: RestartPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """The wait before restart number `attempt` (0-based) of a crash loop: none for the first, then
    base · 2^(attempt-1), jittered, never above the cap."""
    if attempt == 0 or policy.backoff_base_seconds <= 0:
        return 0.0
    raw = min(policy.backoff_cap_seconds, policy.backoff_base_seconds * float(2 ** min(attempt - 1, 32)))
    factor = 1.0 + JITTER * (2 * (rng or random).random() - 1)
    return min(policy.backoff_cap_seconds, raw * factor)
