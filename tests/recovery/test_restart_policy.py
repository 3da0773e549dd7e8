"""Backoff grows, is jittered and capped; a crash loop ends in `failed` instead of eating the host."""

from __future__ import annotations

import random

from xenddd.config.spec import RestartPolicy
from xenddd.recovery.restart_policy import JITTER, backoff_delay, decide_restart

POLICY = RestartPolicy(max_restarts=3, window_seconds=60.0, backoff_base_seconds=1.0, backoff_cap_seconds=4.0)


def test_backoff_doubles_within_jitter_and_never_exceeds_the_cap() -> None:
    rng = random.Random(7)
    for attempt, nominal in enumerate([1.0, 2.0, 4.0, 4.0, 4.0]):
        delay = backoff_delay(POLICY, attempt, rng)
        assert nominal * (1 - JITTER) <= delay <= min(POLICY.backoff_cap_seconds, nominal * (1 + JITTER))


def test_jitter_spreads_domains_that_died_together() -> None:
    rng = random.Random(1)
    assert len({backoff_delay(POLICY, 1, rng) for _ in range(20)}) > 1


def test_fourth_restart_within_the_window_is_refused() -> None:
    assert not decide_restart(POLICY, [100.0, 110.0], now=120.0).failed
    assert decide_restart(POLICY, [100.0, 110.0, 115.0], now=120.0).failed


def test_restarts_outside_the_window_no_longer_count() -> None:
    decision = decide_restart(POLICY, [0.0, 1.0, 2.0], now=200.0, rng=random.Random(3))
    assert not decision.failed
    assert decision.delay <= POLICY.backoff_base_seconds * (1 + JITTER)


def test_zero_base_means_restart_at_once() -> None:
    instant = RestartPolicy(
        max_restarts=1, window_seconds=10.0, backoff_base_seconds=0.0, backoff_cap_seconds=0.0
    )
    assert decide_restart(instant, [], now=5.0).delay == 0.0
