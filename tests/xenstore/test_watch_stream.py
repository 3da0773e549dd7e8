"""The adapter against the simulated xenstored: plain operations, watches, transactions, and what happens
when xenstored restarts under a watching client."""

from __future__ import annotations

import pytest

from xenddd.adapters.xenstore import Reconnected, WatchEvent, Xenstore
from xenddd.sim.xenstored import SocketServer


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


def test_a_transaction_commits_what_its_body_wrote(xs: Xenstore) -> None:
    def body(tx: object) -> str:
        assert hasattr(tx, "write")
        tx.write("/local/domain/3/data/x", "1")  # type: ignore[attr-defined]
        tx.write("/local/domain/3/data/y", "2")  # type: ignore[attr-defined]
        return "done"

    assert xs.transaction(body) == "done"
    assert xs.read_many(["/local/domain/3/data/x", "/local/domain/3/data/y"]) == [b"1", b"2"]


def test_an_exception_in_the_transaction_body_aborts_it(xs: Xenstore) -> None:
    def body(tx: object) -> None:
        tx.write("/local/domain/3/data/z", "1")  # type: ignore[attr-defined]
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        xs.transaction(body)


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
