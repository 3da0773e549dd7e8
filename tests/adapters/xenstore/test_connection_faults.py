"""pyxs's defects, contained: hung replies end in a deadline error, dropped connections fail fast,
request ids wrap at 2**32, and the adapter reconnects afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adapters.xenstore.raw_peer import CLOSE, HANG, RawPeer
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xenstore.errors import XenstoreTimeout, XenstoreUnavailable

READ = 2


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "xenstored.sock"


def test_a_hung_reply_ends_in_a_deadline_error_not_a_hang(socket_path: Path) -> None:
    peer = RawPeer(socket_path, lambda op, payload: HANG)
    xs = Xenstore(socket_path, call_timeout=0.2)
    try:
        with pytest.raises(XenstoreTimeout):
            xs.read("/local/domain/0/name")
    finally:
        xs.close()
        peer.close()


def test_a_connection_dropped_mid_request_fails_the_call_without_waiting_for_the_deadline(
    socket_path: Path,
) -> None:
    peer = RawPeer(socket_path, lambda op, payload: CLOSE)
    # A deadline far beyond pytest's timeout: only dead-router detection can end this call in time.
    xs = Xenstore(socket_path, call_timeout=3600)
    try:
        with pytest.raises(XenstoreUnavailable) as raised:
            xs.read("/local/domain/0/name")
        assert not isinstance(raised.value, XenstoreTimeout)
    finally:
        xs.close()
        peer.close()


def test_after_a_hung_reply_the_next_call_reconnects_and_succeeds(socket_path: Path) -> None:
    answers = iter([HANG, b"dom0"])
    peer = RawPeer(socket_path, lambda op, payload: next(answers))
    xs = Xenstore(socket_path, call_timeout=0.2)
    try:
        with pytest.raises(XenstoreTimeout):
            xs.read("/local/domain/0/name")
        xs.call_timeout = 3600
        assert xs.read("/local/domain/0/name") == b"dom0"
    finally:
        xs.close()
        peer.close()


def test_request_ids_wrap_at_two_to_the_thirty_second(socket_path: Path) -> None:
    peer = RawPeer(socket_path, lambda op, payload: b"value")
    xs = Xenstore(socket_path, call_timeout=3600)
    try:
        xs.connect()
        xs.set_next_request_id(2**32 - 2)
        values = [xs.read(f"/data/{i}") for i in range(4)]
        assert values == [b"value"] * 4
        assert peer.request_ids[-4:] == [2**32 - 2, 2**32 - 1, 0, 1]
    finally:
        xs.close()
        peer.close()


def test_no_server_is_an_unavailable_error_naming_the_socket(socket_path: Path) -> None:
    xs = Xenstore(socket_path, call_timeout=1)
    with pytest.raises(XenstoreUnavailable, match=r"xenstored\.sock"):
        xs.read("/local")


def test_a_listing_too_long_for_one_reply_is_fetched_in_parts(socket_path: Path) -> None:
    names = b"".join(f"{domid}\0".encode() for domid in range(1, 1500))
    generation = b"42"
    parts_asked: list[int] = []

    def respond(op: int, payload: bytes) -> object:
        if op == 1:
            return (16, b"E2BIG\0")  # what xenstored answers when the listing exceeds 4096 bytes
        assert op == 22
        offset = int(payload.split(b"\0")[1])
        parts_asked.append(offset)
        chunk = names[offset : offset + 2000]
        last = offset + 2000 >= len(names)
        return generation + b"\0" + chunk + (b"\0" if last else b"")

    peer = RawPeer(socket_path, respond)
    xs = Xenstore(socket_path, call_timeout=3600)
    try:
        assert xs.directory("/local/domain") == [str(d) for d in range(1, 1500)]
        assert len(parts_asked) > 1
    finally:
        xs.close()
        peer.close()


def test_an_oversized_reply_from_a_lenient_server_does_not_kill_the_connection(socket_path: Path) -> None:
    peer = RawPeer(socket_path, lambda op, payload: b"x" * 10000)
    xs = Xenstore(socket_path, call_timeout=3600)
    try:
        assert xs.read("/big") == b"x" * 10000
        assert xs.read("/big") == b"x" * 10000
    finally:
        xs.close()
        peer.close()
