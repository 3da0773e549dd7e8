"""The handshake window: none until a stall, then halved on each stall, one wider per device connected,
never below one, and none again once back at the lane's width."""

from __future__ import annotations

from xenddd.recovery.handshake_window import HandshakeWindow


def test_the_window_halves_on_each_stall_grows_by_one_per_connection_and_keeps_one_open() -> None:
    window = HandshakeWindow(widest=8)
    assert window.room("domnet", in_handshake=30) is None  # never stalled: the lane's limit only
    for _ in range(5):
        window.stalled("domnet")
    assert window.room("domnet", in_handshake=0) == 1  # 4, 2, 1, 1, 1: one handshake always may run
    assert window.room("domnet", in_handshake=1) == 0
    assert window.room("domstore", in_handshake=0) is None  # each driver domain its own
    for expected in (2, 3, 4, 5, 6, 7):
        window.connected("domnet")
        assert window.room("domnet", in_handshake=0) == expected
    window.connected("domnet")
    assert window.room("domnet", in_handshake=0) is None
