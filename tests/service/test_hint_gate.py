"""Hints about one domain's nodes make at most a few passes a second; other hints are never held."""

from __future__ import annotations

from xenddd.hints import CallReturned, DomainHint, XenstoreHint
from xenddd.service.hint_gate import HintGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(domid: int, value: int = 0) -> XenstoreHint:
    return XenstoreHint(f"/local/domain/{domid}/device/vif/{value}/state")


def test_a_domain_past_its_burst_is_held_coalesced_and_released_when_its_bucket_refills() -> None:
    clock = Clock()
    gate = HintGate(rate=4.0, burst=2.0, clock=clock)
    assert gate.admit([state(7)]) == [state(7)]
    assert gate.admit([state(7)]) == [state(7)]
    assert gate.admit([state(7), state(7), state(7, 1)]) == []  # held, coalesced by path
    assert gate.next_release() == 0.25
    clock.now += 0.25
    assert gate.admit([]) == [state(7), state(7, 1)]
    assert gate.next_release() is None


def test_one_domain_held_does_not_hold_another_nor_hints_about_no_domain() -> None:
    clock = Clock()
    gate = HintGate(rate=1.0, burst=1.0, clock=clock)
    assert gate.admit([state(7)]) == [state(7)]
    other = [state(8), DomainHint("libvirt", name="domnet"), CallReturned(), XenstoreHint("@releaseDomain")]
    assert gate.admit([state(7), *other]) == [*other[1:], state(8)]
