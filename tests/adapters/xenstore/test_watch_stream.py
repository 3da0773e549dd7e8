"""The adapter against the simulated xenstored: plain operations, watches, transactions, and what happens
when xenstored restarts under a watching client."""

from __future__ import annotations

import threading
import time

import pytest

from xenddd.adapters.xenstore.client import Reconnected, WatchEvent, Xenstore
from xenddd.adapters.xenstore.errors import XenstoreConflict
from xenddd.adapters.xenstore.transaction import Transaction
from xenddd.sim.xenstored_socket import SocketServer


def next_watch_event(xs: Xenstore, path: str) -> WatchEvent:
    """The next event for `path` (skipping others), within a generous deadline."""
    for _ in range(100):
        event = xs.next_event(timeout=10)
        assert event is not None, f"no watch event for {path}"
        if isinstance(event, WatchEvent) and event.path == path:
            return event
    raise AssertionError(f"no watch event for {path} among 100 events")


def test_reads_writes_listings_and_removal(xs: Xenstore) -> None:
    xs.write("/local/domain/3/data/a", "1")
    xs.write("/local/domain/3/data/b", b"")
    assert xs.read("/local/domain/3/data/a") == b"1"
    assert xs.read("/local/domain/3/data/b") == b""
    assert xs.read("/local/domain/3/data/missing") is None
    assert sorted(xs.directory("/local/domain/3/data") or []) == ["a", "b"]
    assert xs.directory("/local/domain/3/nothing") is None
    assert xs.read_many(["/local/domain/3/data/a", "/nope"]) == [b"1", None]
    xs.rm("/local/domain/3/data")
    xs.rm("/local/domain/3/data")  # already gone: not an error
    assert xs.directory("/local/domain/3/data") is None


def test_a_watch_fires_once_when_set_and_again_on_each_change_below_it(xs: Xenstore) -> None:
    xs.watch("/local/domain/3/backend/vif")
    assert next_watch_event(xs, "/local/domain/3/backend/vif").watched == "/local/domain/3/backend/vif"
    xs.write("/local/domain/3/backend/vif/7/0/state", "4")
    assert (
        next_watch_event(xs, "/local/domain/3/backend/vif/7/0/state").watched == "/local/domain/3/backend/vif"
    )


def test_a_wait_for_events_ends_at_once_when_woken_and_the_events_still_come_after(xs: Xenstore) -> None:
    returned: list[object] = []
    waiting = threading.Thread(target=lambda: returned.append(xs.next_event(timeout=None)))
    started = time.monotonic()
    waiting.start()
    xs.wake()
    waiting.join(5)
    assert returned == [None] and time.monotonic() - started < 5
    xs.watch("/local/domain/3/data")
    assert next_watch_event(xs, "/local/domain/3/data").watched == "/local/domain/3/data"


def test_a_transaction_commits_what_its_body_wrote(xs: Xenstore) -> None:
    def body(tx: Transaction) -> str:
        tx.write("/local/domain/3/data/x", "1")
        tx.write("/local/domain/3/data/y", "2")
        return "done"

    assert xs.transaction(body) == "done"
    assert xs.read_many(["/local/domain/3/data/x", "/local/domain/3/data/y"]) == [b"1", b"2"]


def test_an_exception_in_the_transaction_body_aborts_it(xs: Xenstore) -> None:
    def body(tx: Transaction) -> None:
        tx.write("/local/domain/3/data/z", "1")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        xs.transaction(body)
    assert xs.read("/local/domain/3/data/z") is None


def test_after_xenstored_restarts_watches_are_registered_again_and_a_resync_is_signalled(
    xs: Xenstore, xenstored: SocketServer
) -> None:
    xs.watch("/local/domain/3/backend/vbd")
    next_watch_event(xs, "/local/domain/3/backend/vbd")

    xenstored.restart()

    for _ in range(100):
        event = xs.next_event(timeout=10)
        assert event is not None, "no Reconnected after the restart"
        if isinstance(event, Reconnected):
            break
    xs.write("/local/domain/3/backend/vbd/7/51712/state", "4")
    assert next_watch_event(xs, "/local/domain/3/backend/vbd/7/51712/state")


def test_a_transaction_that_races_another_writer_is_run_again_from_the_start(
    xs: Xenstore, xenstored: SocketServer
) -> None:
    other = Xenstore(xenstored.path, call_timeout=10)
    xs.write("/local/domain/3/data/counter", "1")
    attempts: list[bytes | None] = []

    def increment(tx: Transaction) -> None:
        value = tx.read("/local/domain/3/data/counter")
        attempts.append(value)
        if len(attempts) == 1:
            other.write("/local/domain/3/data/counter", "5")  # a concurrent writer commits first
        tx.write("/local/domain/3/data/counter", str(int(value or b"0") + 1))

    try:
        xs.transaction(increment)
    finally:
        other.close()
    assert attempts == [b"1", b"5"]
    assert xs.read("/local/domain/3/data/counter") == b"6"


def test_a_transaction_that_always_conflicts_gives_up_after_its_bound(
    xs: Xenstore, xenstored: SocketServer
) -> None:
    other = Xenstore(xenstored.path, call_timeout=10)
    xs.write("/local/domain/3/data/hot", "0")
    attempts = 0

    def always_raced(tx: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        tx.read("/local/domain/3/data/hot")
        other.write("/local/domain/3/data/hot", str(attempts))
        tx.write("/local/domain/3/data/hot", "mine")

    try:
        with pytest.raises(XenstoreConflict):
            xs.transaction(always_raced, attempts=3)
    finally:
        other.close()
    assert attempts == 3
    assert xs.read("/local/domain/3/data/hot") == b"3"
