"""A domain writing bad nodes over and over costs dom0 a few log lines, not one per write."""

from __future__ import annotations

import logging

import pytest

from xenddd.registry.complaints import BURST, WINDOW, Complaints

log = logging.getLogger("test.complaints")


def test_a_flood_from_one_domain_is_cut_to_a_burst_and_one_summary_and_others_still_heard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    complaints = Complaints(log, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.complaints"):
        for i in range(3000):
            complaints.warn(7, "bad mac %d", i)
        complaints.warn(8, "another domain's trouble")
        complaints.flush()  # the window has not ended: nothing to summarise yet
        now[0] = WINDOW
        complaints.flush()

    assert [r.getMessage() for r in caplog.records] == [
        *(f"bad mac {i}" for i in range(BURST)),
        "another domain's trouble",
        f"domain 7: {3000 - BURST} more warning(s) about its xenstore nodes suppressed in the last 60 s",
    ]


def test_a_new_window_speaks_again_after_summarising_the_last(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    complaints = Complaints(log, burst=1, window=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.complaints"):
        complaints.warn(7, "one")
        complaints.warn(7, "two")
        now[0] = 10
        complaints.warn(7, "three")
    assert [r.getMessage() for r in caplog.records] == [
        "one",
        "domain 7: 1 more warning(s) about its xenstore nodes suppressed in the last 10 s",
        "three",
    ]


def test_the_recovery_line_names_a_few_untrusted_backends_and_counts_the_rest() -> None:
    from xenddd.recovery.reconciler import _ignored

    rejected = {f"/local/domain/1/backend/vif/junk{i:04}": "not a guest domid" for i in range(3000)}
    line = _ignored(rejected)
    assert line.endswith("junk0004 and 2995 more)") and len(line) < 300
    assert _ignored({}) == ""
