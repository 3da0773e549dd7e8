"""Driver domains are hostile too: whatever one does to its own xenstore nodes stays its own trouble, and
never holds up another driver domain's recovery. Each attack is written as the driver domain would make
it, through the simulated xenstored, against a real daemon."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.recovery.conftest import (
    RunningDaemon,
    all_connected,
    domid,
    events,
    wait_until,
)
from xenddd.hints import ResyncHint
from xenddd.sim.domain_client import DomainClient
from xenddd.sim.xenstored import Xenstored
from xenddd.sim.xenstored_ops import DIRECTORY_PART, HANDLERS

FIVE_DEVICES = 5


@contextmanager
def churning_backend_listing(engine: Xenstored, dd: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The driver domain keeps its vif backend listing longer than one 4 KiB reply and changing, and
    (the worst timing it can hope for, made certain here) changes it between any two parts of a
    listing: a lister fetching it with DIRECTORY_PART never sees the same generation twice."""
    client = DomainClient(engine, dd)
    base = f"/local/domain/{dd}/backend/vif"
    for i in range(120):
        client.write(f"{base}/{'x' * 32}{i:03d}", "")
    serve_part = HANDLERS[DIRECTORY_PART]

    def churned_part(xs: Xenstored, conn: Any, tx: Any, tree: Any, args: list[bytes], raw: bytes) -> bytes:
        if args and args[0].decode(errors="replace").startswith(base):
            churn = f"{base}/churn"
            client.rm(churn) if client.read(churn) is not None else client.write(churn, "")
        return serve_part(xs, conn, tx, tree, args, raw)

    monkeypatch.setitem(HANDLERS, DIRECTORY_PART, churned_part)
    try:
        yield
    finally:
        monkeypatch.setitem(HANDLERS, DIRECTORY_PART, serve_part)
        client.close()


def test_a_driver_domain_whose_backend_listing_keeps_changing_does_not_hold_up_another_recovery(
    start_daemon: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    registry = handle.daemon._wiring.registry  # type: ignore[union-attr]
    with churning_backend_listing(sim.engine, domid(sim.host.domains["domnet"]), monkeypatch):
        sim.host.crash("domstore")
        wait_until(lambda: events(handle, "recovered"), timeout=15, what="domstore's recovery")
        wait_until(lambda: all_connected(sim, FIVE_DEVICES), what="the vbds back")
        time.sleep(1.0)  # several passes, each finding domnet's listing unreadable
        assert len(registry.served_by("domnet")) == 3  # what was known of domnet is kept
        troubles = [e for e in events(handle, "registry-error") if e["driver_domain"] == "domnet"]
        assert len(troubles) == 1 and "kept changing" in str(troubles[0]["error"])
        assert not [e for e in events(handle, "registry-error") if e["driver_domain"] == "domstore"]
        assert handle.daemon.last_error is None  # no pass was given up
    assert handle.thread.is_alive()


def test_a_malformed_optional_key_from_a_driver_domain_costs_its_guest_nothing(
    start_daemon: Callable[..., RunningDaemon], caplog: pytest.LogCaptureFixture
) -> None:
    """web's second vif has an `ip` and a `rate` that dom0's toolstack recorded, and an `mtu` only its
    backend holds; domnet writes nonsense over all three, then crashes. The device is still believed
    (its identity is intact) and reattached: `ip` and `rate` from the toolstack's record (the driver
    domain's copies are not even asked), the bad `mtu` left out with one warning — not the whole device
    rejected, and web left without its vif while the incident says `recovered`."""
    caplog.set_level(logging.WARNING, logger="xenddd.registry.frontends")  # whatever root's level is now
    handle = start_daemon()
    sim = handle.sim
    wait_until(lambda: handle.settled(FIVE_DEVICES))
    recorded = {"ip": "192.0.2.5", "rate": "1250000,50000"}  # rate as libxl writes it
    sim.host.attach("web", "vif", 1, "domnet", {"mac": "00:16:3e:0a:0b:0c", "mtu": "1400", **recorded})
    wait_until(lambda: handle.settled(FIVE_DEVICES + 1))
    net, web = domid(sim.host.domains["domnet"]), domid(sim.host.domains["web"])
    sim.host.dom0.rm(f"/libxl/{web}/device/vif/1/mtu")
    dd = DomainClient(sim.engine, net)
    for key, bad in (("ip", "192.0.2.5; rm -rf /"), ("rate", "fast"), ("mtu", "99999999")):
        dd.write(f"/local/domain/{net}/backend/vif/{web}/1/{key}", bad)
    dd.close()
    handle.daemon.hints.put(ResyncHint("test"))  # a status change re-reads the status only: judge it all
    said = lambda: [r.getMessage() for r in caplog.records if f"/vif/{web}/1: " in r.getMessage()]  # noqa: E731
    wait_until(lambda: len(said()) == 1, what="the bad mtu said")
    sim.host.crash("domnet")
    wait_until(lambda: events(handle, "recovered"), what="domnet's recovery")
    wait_until(lambda: all_connected(sim, FIVE_DEVICES + 1), what="both of web's vifs back")
    back = f"/local/domain/{domid(sim.host.domains['domnet'])}/backend/vif/{web}/1"
    given_back = {key: sim.host.dom0.read(f"{back}/{key}") for key in ("ip", "rate", "mtu")}
    assert given_back == {"ip": b"192.0.2.5", "rate": b"1250000,50000", "mtu": None}
    assert not events(handle, "dropped") and not events(handle, "parked")
    assert len(said()) == 1 and "mtu" in said()[0]
