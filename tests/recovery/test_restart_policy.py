"""A crash after a healthy run restarts at once; a crash loop backs off, jittered and capped, and ends in
`failed` instead of eating the host."""

from __future__ import annotations

import random

from xenddd.config.spec import RestartPolicy
from xenddd.recovery.restart_policy import JITTER, backoff_delay, crash_loop_restarts, decide_restart

POLICY = RestartPolicy(
    max_restarts=3,
    window_seconds=60.0,
    backoff_base_seconds=1.0,
    backoff_cap_seconds=4.0,
    healthy_uptime_seconds=30.0,
)


def test_the_first_restart_of_a_loop_is_immediate_then_backoff_doubles_within_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    assert backoff_delay(POLICY, 0, rng) == 0.0
    for attempt, nominal in enumerate([1.0, 2.0, 4.0, 4.0, 4.0], start=1):
        delay = backoff_delay(POLICY, attempt, rng)
        assert nominal * (1 - JITTER) <= delay <= min(POLICY.backoff_cap_seconds, nominal * (1 + JITTER))


def test_a_domain_that_ran_healthy_before_crashing_is_restarted_at_once_whatever_came_before() -> None:
    earlier = [100.0, 110.0, 115.0]  # a loop that would otherwise be at its limit
    counted = crash_loop_restarts(POLICY, earlier, uptime=45.0)
    assert counted == []
    decision = decide_restart(POLICY, counted, now=160.0)
    assert not decision.failed and decision.delay == 0.0


def test_a_domain_that_crashes_soon_after_its_restart_is_in_a_loop_and_waits() -> None:
    counted = crash_loop_restarts(POLICY, [100.0], uptime=5.0)
    assert counted == [100.0]
    delay = decide_restart(POLICY, counted, now=105.0, rng=random.Random(2)).delay
    assert 1.0 * (1 - JITTER) <= delay <= 1.0 * (1 + JITTER)


def test_an_instance_of_unknown_uptime_counts_as_healthy() -> None:
    assert crash_loop_restarts(POLICY, [100.0, 110.0], uptime=None) == []


def test_jitter_spreads_domains_that_died_together() -> None:
    rng = random.Random(1)
    assert len({backoff_delay(POLICY, 2, rng) for _ in range(20)}) > 1


def test_fourth_restart_within_the_window_is_refused() -> None:
    assert not decide_restart(POLICY, [100.0, 110.0], now=120.0).failed
    assert decide_restart(POLICY, [100.0, 110.0, 115.0], now=120.0).failed


def test_restarts_outside_the_window_no_longer_count() -> None:
    decision = decide_restart(POLICY, [0.0, 1.0, 2.0], now=200.0, rng=random.Random(3))
    assert not decision.failed
    assert decision.delay == 0.0


def test_zero_base_means_restart_at_once() -> None:
    instant = RestartPolicy(
        max_restarts=2, window_seconds=10.0, backoff_base_seconds=0.0, backoff_cap_seconds=0.0
    )
    assert decide_restart(instant, [4.0], now=5.0).delay == 0.0
