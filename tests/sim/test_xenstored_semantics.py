"""The simulated xenstored follows docs/misc/xenstore.txt: permissions, transactions, watches, quotas."""

from __future__ import annotations

import queue

import pytest
from pyxs import Client
from pyxs.exceptions import PyXSError

from xenddd.sim.domain_client import DomainClient
from xenddd.sim.quotas import Quotas
from xenddd.sim.store import XsError
from xenddd.sim.xenstored import Xenstored
from xenddd.sim.xenstored_ops import READ, TRANSACTION_END, TRANSACTION_START, WRITE
from xenddd.sim.xenstored_socket import SocketServer


def test_pyxs_round_trip_transactions_and_domain_paths(sim_xenstored: SocketServer) -> None:
    with Client(unix_socket_path=str(sim_xenstored.path)) as client:
        client.write(b"/local/domain/5/name", b"guest")
        assert client.read(b"/local/domain/5/name") == b"guest"
        assert client.list(b"/local/domain") == [b"0", b"5"]
        assert client.get_domain_path(5) == b"/local/domain/5"
        assert client.is_domain_introduced(0) is True
        tx = client.transaction()
        client.write(b"/local/domain/5/data/x", b"1")  # pyxs writes in the open transaction
        client.commit()
        assert client.read(b"/local/domain/5/data/x") == b"1"
        with pytest.raises(PyXSError):
            client.read(b"/missing")
        del tx


def test_a_commit_that_raced_another_write_gets_eagain() -> None:
    engine = Xenstored()
    a, b = DomainClient(engine, 0), DomainClient(engine, 0)
    a.write("/x", "0")
    tx = int(engine.execute(a.conn, TRANSACTION_START, 0, b"\0")[:-1])
    assert engine.execute(a.conn, READ, tx, b"/x\0") == b"0"
    b.write("/x", "raced")
    engine.execute(a.conn, WRITE, tx, b"/y\0from-tx")
    with pytest.raises(XsError, match="EAGAIN"):
        engine.execute(a.conn, TRANSACTION_END, tx, b"T\0")
    assert a.read("/y") is None


def test_a_clean_transaction_commits_atomically_and_fires_watches_once_committed() -> None:
    engine = Xenstored()
    dom0 = DomainClient(engine, 0)
    seen: queue.Queue[str] = queue.Queue()
    dom0.watch("/t", seen.put)
    assert seen.get(timeout=5) == "/t"  # the initial event
    tx = int(engine.execute(dom0.conn, TRANSACTION_START, 0, b"\0")[:-1])
    engine.execute(dom0.conn, WRITE, tx, b"/t/a\0" + b"1")
    assert seen.empty() and dom0.read("/t/a") is None
    engine.execute(dom0.conn, TRANSACTION_END, tx, b"T\0")
    assert dom0.read("/t/a") == b"1"
    assert seen.get(timeout=5).startswith("/t")


def test_unprivileged_domains_obey_permissions() -> None:
    engine = Xenstored()
    dom0, guest, other = DomainClient(engine, 0), DomainClient(engine, 3), DomainClient(engine, 4)
    dom0.mkdir("/local/domain/3")
    dom0.set_perms("/local/domain/3", ["n3"])
    guest.write("device/vif/0/state", "1")  # relative to its home
    assert dom0.read("/local/domain/3/device/vif/0/state") == b"1"
    assert guest.get_perms("/local/domain/3/device/vif/0/state") == ["n3"]
    with pytest.raises(XsError, match="EACCES"):
        other.read("/local/domain/3/device/vif/0/state")
    with pytest.raises(XsError, match="EACCES"):
        other.write("/local/domain/3/device/vif/0/state", "6")
    guest.set_perms("/local/domain/3/device/vif/0/state", ["n3", "r4"])
    assert other.read("/local/domain/3/device/vif/0/state") == b"1"
    with pytest.raises(XsError, match="EPERM"):
        guest.set_perms("/local/domain/3/device/vif/0/state", ["n4"])


def test_quotas_apply_to_unprivileged_domains_only() -> None:
    engine = Xenstored()
    dom0, guest = DomainClient(engine, 0), DomainClient(engine, 3)
    dom0.mkdir("/local/domain/3")
    dom0.set_perms("/local/domain/3", ["n3"])
    with pytest.raises(XsError, match="ENOSPC"):
        guest.write("data/big", b"x" * (Quotas().node_size + 1))
    dom0.write("/local/domain/3/data/big", b"x" * (Quotas().node_size + 1))
    for i in range(Quotas().watches + 1):  # Xen 4.17 lets one more in than --watch-nb says
        guest.watch(f"data/w{i}", lambda _path: None)
    with pytest.raises(XsError, match="E2BIG"):
        guest.watch("data/one-too-many", lambda _path: None)


def test_removing_a_domain_tree_fires_watches_below_it_and_release_fires_the_special_watch() -> None:
    engine = Xenstored()
    dom0 = DomainClient(engine, 0)
    dom0.write("/local/domain/7/backend/vif/3/0/state", "4")
    events: queue.Queue[str] = queue.Queue()
    dom0.watch("/local/domain/7/backend/vif", events.put)
    dom0.watch("@releaseDomain", events.put)
    assert {events.get(timeout=5), events.get(timeout=5)} == {"/local/domain/7/backend/vif", "@releaseDomain"}
    engine.introduce(7)
    dom0.rm("/local/domain/7")
    assert events.get(timeout=5) == "/local/domain/7/backend/vif"
    engine.release(7)
    assert events.get(timeout=5) == "@releaseDomain"


def test_long_listings_are_refused_whole_and_served_in_parts_to_the_adapter(
    sim_xenstored: SocketServer,
) -> None:
    from xenddd.adapters.xenstore.client import Xenstore

    dom0 = DomainClient(sim_xenstored.engine, 0)
    names = [f"guest-with-a-rather-long-name-{i:04d}" for i in range(300)]  # ~11 KB of names
    for name in names:
        dom0.write(f"/many/{name}", "1")
    with pytest.raises(XsError, match="E2BIG"):
        dom0.directory("/many")
    with Xenstore(sim_xenstored.path) as xenstore:
        assert xenstore.directory("/many") == sorted(names)
