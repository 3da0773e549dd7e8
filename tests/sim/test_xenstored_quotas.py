"""The simulated xenstored's quotas are C xenstored's: per domain, counted as it counts them (owned nodes,
watches over every connection), refused with its errno, settable per domain in Xen 4.22 — and reported."""

from __future__ import annotations

import pytest

from xenddd.sim.domain_client import DomainClient
from xenddd.sim.quotas import XEN_4_22, QuotaBook, Quotas
from xenddd.sim.store import XsError
from xenddd.sim.xenstored import Xenstored
from xenddd.sim.xenstored_ops import GET_QUOTA, SET_QUOTA


def a_domain(engine: Xenstored, domid: int) -> DomainClient:
    dom0 = DomainClient(engine, 0)
    dom0.mkdir(f"/local/domain/{domid}")
    dom0.set_perms(f"/local/domain/{domid}", [f"n{domid}"])
    return DomainClient(engine, domid)


def test_nodes_dom0_hands_to_a_driver_domain_count_against_its_node_quota() -> None:
    engine = Xenstored(QuotaBook(defaults=Quotas(nodes=10)))
    dd = a_domain(engine, 5)  # owns its home: 1 node
    dom0 = DomainClient(engine, 0)
    for devid in range(8):  # libxl creates backends as dom0, then gives them to the driver domain
        dom0.mkdir(f"/local/domain/5/backend/vif/3/{devid}")
    assert engine.store.tree.owned_by(5) == 1 + 3 + 8  # home, backend, vif, vif/3, one per device
    with pytest.raises(XsError, match="ENOSPC"):
        dd.write("backend/vif/3/0/hotplug-status", "connected")  # what a stalled backend meets
    assert [(h.domid, h.quota, h.errno_name) for h in engine.quotas.hits] == [(5, "nodes", "ENOSPC")]
    for devid in (5, 6, 7):
        dom0.rm(f"/local/domain/5/backend/vif/3/{devid}")
    dd.write("backend/vif/3/0/hotplug-status", "connected")  # 10 of 10: 4.17 refuses at `>= quota`
    assert engine.store.tree.owned_by(5) == 10


def test_a_domain_s_watches_count_over_all_its_connections_and_4_17_refuses_with_e2big() -> None:
    engine = Xenstored(QuotaBook(defaults=Quotas(watches=3)))
    first, second = a_domain(engine, 5), DomainClient(engine, 5)
    first.watch("data/a", lambda _p: None)
    first.watch("data/b", lambda _p: None)
    second.watch("data/c", lambda _p: None)
    second.watch("data/d", lambda _p: None)  # `> quota`: one more than the quota fits in Xen <= 4.21
    with pytest.raises(XsError, match="E2BIG"):
        first.watch("data/e", lambda _p: None)
    assert engine.quotas.hits[0].quota == "watches"


def test_xen_4_22_sets_quotas_per_domain_and_refuses_watches_with_enospc() -> None:
    engine = Xenstored(QuotaBook(version=XEN_4_22))
    dom0, dd, guest = DomainClient(engine, 0), a_domain(engine, 5), a_domain(engine, 6)
    assert dom0._call(GET_QUOTA, b"") == b"nodes watches transactions node-size\0"
    dom0._call(SET_QUOTA, b"5\0watches\0002\0")  # xl xenstore-quota-set domnet watches=2
    assert dom0._call(GET_QUOTA, b"5\0watches\0") == b"2\0"
    assert dom0._call(GET_QUOTA, b"watches\0") == b"128\0"
    dd.watch("data/a", lambda _p: None)  # `count + 1 >= quota`: one fits under 2
    with pytest.raises(XsError, match="ENOSPC"):
        dd.watch("data/b", lambda _p: None)
    guest.watch("data/a", lambda _p: None)
    guest.watch("data/b", lambda _p: None)
    with pytest.raises(XsError, match="EACCES"):
        dd._call(SET_QUOTA, b"5\0watches\0001000\0")


def test_quota_operations_do_not_exist_before_xen_4_22() -> None:
    dom0 = DomainClient(Xenstored(), 0)
    with pytest.raises(XsError, match="ENOSYS"):
        dom0._call(GET_QUOTA, b"")


def test_a_transaction_sees_nodes_as_it_first_touched_them_and_counts_its_own_creations() -> None:
    engine = Xenstored(QuotaBook(defaults=Quotas(nodes=4)))
    dd, dom0 = a_domain(engine, 5), DomainClient(engine, 0)
    dom0.write("/local/domain/5/data/x", "1")

    def body(tx: int) -> None:
        assert dd.read("data/x", tx) == b"1"
        dd.write("data/a", "1", tx)  # data/ and data/x were made by dom0 under n5: 3 owned, 4 now
        with pytest.raises(XsError, match="ENOSPC"):
            dd.write("data/b", "1", tx)
        assert dd.read("data/a", tx) == b"1"
        assert dd.read("data/a") is None  # not before the commit

    dd.transaction(body)
    assert dd.read("data/a") == b"1"
    assert engine.store.tree.owned_by(5) == 4
