"""The in-daemon rename of a running domain (adapters/domain_rename) against the simulated xenstored: the
nodes libxl_domain_rename writes, its refusals, and the transaction that re-reads when another writer
takes a name meanwhile."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from xenddd.adapters.domain_rename import rename_domain
from xenddd.adapters.hypervisor_api import DomainState
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.errors import XendddError
from xenddd.sim.xenstored_socket import SocketServer

STANDBY_UUID = "6b0b1f3c-2a52-4c1e-9f0e-0d1c7e6f5a41"


def domain(xs: Xenstore, domid: int, name: str | None, uuid: str, vcpus: int = 1) -> None:
    """What libxl writes of a domain that these nodes matter to (libxl__domain_make and its build)."""
    home = f"/local/domain/{domid}"
    xs.write(f"{home}/vm", f"/vm/{uuid}")
    if name is not None:
        xs.write(f"{home}/name", name)
        xs.write(f"/vm/{uuid}/name", name)
    xs.write(f"{home}/memory/target", "262144")
    for cpu in range(vcpus):
        xs.write(f"{home}/cpu/{cpu}/availability", "online")


@pytest.fixture
def host(xs: Xenstore) -> Xenstore:
    domain(xs, 0, "Domain-0", "00000000-0000-0000-0000-000000000000")
    domain(xs, 3, "web", "11111111-2222-3333-4444-555555555555")
    domain(xs, 7, "domnet-standby", STANDBY_UUID, vcpus=2)
    return xs


def names(xs: Xenstore) -> dict[str, bytes | None]:
    paths = ["/local/domain/3/name", "/local/domain/7/name", f"/vm/{STANDBY_UUID}/name"]
    return dict(zip(paths, xs.read_many(paths), strict=True))


def test_both_name_nodes_change_and_the_domain_is_described_as_xenstore_has_it(host: Xenstore) -> None:
    info = rename_domain(host, "domnet-standby", "domnet")
    assert names(host) == {
        "/local/domain/3/name": b"web",
        "/local/domain/7/name": b"domnet",
        f"/vm/{STANDBY_UUID}/name": b"domnet",
    }
    assert (info.name, info.domid, info.uuid, info.state) == ("domnet", 7, STANDBY_UUID, DomainState.RUNNING)
    assert (info.memory_kib, info.vcpus) == (262144, 2)


def test_the_remains_of_a_dead_instance_without_their_name_do_not_hold_it(host: Xenstore) -> None:
    domain(host, 6, None, "99999999-8888-7777-6666-555555555555")  # libxl's destroy removed the name first
    assert rename_domain(host, "domnet-standby", "domnet").domid == 7


def test_remains_named_by_domid_are_renamed_only_while_they_have_the_name(host: Xenstore) -> None:
    """The remains of a dead `domnet` go out of its standby's way by domid: a new instance somebody
    started under the name meanwhile is never the one renamed."""
    domain(host, 6, "domnet", "99999999-8888-7777-6666-555555555555")
    with pytest.raises(XendddError, match='domid 5 is not the domain called "domnet" \\(domid 6 is\\)'):
        rename_domain(host, "domnet", "domnet-dead-5", 5)
    assert host.read("/local/domain/6/name") == b"domnet"
    assert rename_domain(host, "domnet", "domnet-dead-6", 6).domid == 6
    assert host.read("/local/domain/6/name") == b"domnet-dead-6"
    assert rename_domain(host, "domnet-standby", "domnet").domid == 7


def test_a_name_another_domain_has_is_refused_and_nothing_is_written(host: Xenstore) -> None:
    domain(host, 6, "domnet", "99999999-8888-7777-6666-555555555555")
    before = names(host)
    with pytest.raises(
        XendddError, match='renaming domnet-standby to domnet failed: a domain called "domnet"'
    ):
        rename_domain(host, "domnet-standby", "domnet")
    assert names(host) == before


@pytest.mark.parametrize(
    ("extra", "said"),
    [(None, 'no domain is called "domnet-standby"'), (9, "more than one domain is called")],
)
def test_an_old_name_that_is_not_one_domain_s_is_refused(xs: Xenstore, extra: int | None, said: str) -> None:
    domain(xs, 3, "web", "11111111-2222-3333-4444-555555555555")
    if extra is not None:
        domain(xs, 7, "domnet-standby", STANDBY_UUID)
        domain(xs, extra, "domnet-standby", "99999999-8888-7777-6666-555555555555")
    with pytest.raises(XendddError, match=said):
        rename_domain(xs, "domnet-standby", "domnet")


def test_a_domain_with_a_stub_device_model_or_no_vm_path_is_refused(host: Xenstore) -> None:
    host.write("/local/domain/7/image/device-model-domid", "8")
    with pytest.raises(XendddError, match="stub domain"):
        rename_domain(host, "domnet-standby", "domnet")
    host.rm("/local/domain/7/image")
    host.write("/local/domain/7/vm", "/vm/../local/domain/0")
    with pytest.raises(XendddError, match="no /vm/<uuid> path"):
        rename_domain(host, "domnet-standby", "domnet")
    assert names(host)["/local/domain/7/name"] == b"domnet-standby"


def test_a_domain_that_takes_the_name_while_the_transaction_reads_makes_it_read_again(
    host: Xenstore, sim_xenstored: SocketServer
) -> None:
    """libxl looks for the new name before its transaction; here the look is part of it, so a writer that
    gets in between makes the commit conflict, and the second reading refuses."""
    other = Xenstore(sim_xenstored.path)
    reads = host.read_many
    attempts = []

    def read_many(paths: Sequence[str], tx_id: int = 0) -> list[bytes | None]:
        values = reads(paths, tx_id)
        if tx_id and not attempts:
            attempts.append(tx_id)
            domain(other, 6, "domnet", "99999999-8888-7777-6666-555555555555")  # outside the transaction
        return values

    host.read_many = read_many  # type: ignore[method-assign]
    try:
        with pytest.raises(XendddError, match='a domain called "domnet" already exists'):
            rename_domain(host, "domnet-standby", "domnet")
    finally:
        other.close()
    assert attempts and names(host)["/local/domain/7/name"] == b"domnet-standby"
