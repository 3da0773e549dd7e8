"""Toolstack calls run beside the loop: results are taken once, lanes bound their concurrency, a queued
call is not taken for a hung one, and a bug inside a call surfaces on the loop's thread."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from xenddd.errors import XendddError
from xenddd.recovery.toolstack_calls import ToolstackCalls


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_result_is_taken_once_and_each_return_wakes_the_loop() -> None:
    woken = threading.Event()
    calls = ToolstackCalls(woken.set, workers=2)
    calls.submit("start", "domnet: start", lambda: 7)
    wait_for(woken.is_set)
    result = calls.take("start")
    assert result is not None and result.value == 7 and result.error is None
    assert calls.take("start") is None and not calls.busy("start")
    calls.close()


def test_a_toolstack_refusal_is_a_result_and_a_bug_is_raised_on_the_loops_thread() -> None:
    returned = threading.Semaphore(0)
    calls = ToolstackCalls(returned.release, workers=2)

    def refused() -> None:
        raise XendddError("libxenlight failed to detach network device")

    def buggy() -> None:
        raise KeyError("bug")

    calls.submit("detach", "detach", refused)
    calls.submit("attach", "attach", buggy)
    assert returned.acquire(timeout=5) and returned.acquire(timeout=5)
    refusal = calls.take("detach")
    assert refusal is not None and isinstance(refusal.error, XendddError)
    with pytest.raises(KeyError):
        calls.take("attach")
    calls.close()


def test_a_lane_runs_at_most_its_workers_and_a_queued_call_is_not_the_oldest() -> None:
    release = threading.Event()
    running = []
    lock = threading.Lock()

    def slow(n: int) -> int:
        with lock:
            running.append(n)
        release.wait(5)
        return n

    calls = ToolstackCalls(lambda: None, workers=2)
    for n in range(5):
        calls.submit(("domnet", n), f"attach {n}", lambda n=n: slow(n), lane="domnet")
    calls.submit("start", "domnet: start", lambda: "up", lane="start")
    wait_for(lambda: len(running) == 2)
    wait_for(lambda: calls.busy("start") and calls.take("start") is not None)  # its own lane: not queued
    time.sleep(0.05)
    assert len(running) == 2  # the other three wait in the lane
    oldest = calls.oldest()
    assert oldest is not None and oldest[0] in ("attach 0", "attach 1")
    release.set()
    wait_for(lambda: len(running) == 5)
    calls.close()


def test_a_slow_call_is_logged_with_its_duration() -> None:
    ticks = iter([0.0, 3.5])  # taken up at 0, returned at 3.5
    calls = ToolstackCalls(lambda: None, workers=1, clock=lambda: next(ticks, 3.5))
    logger = logging.getLogger("xenddd.recovery.toolstack_calls")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        calls.submit("start", "domnet: start", lambda: None)
        wait_for(lambda: calls.take("start") is not None)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        calls.close()
    assert any(r.getMessage() == "domnet: start took 3.5 s" for r in records)
