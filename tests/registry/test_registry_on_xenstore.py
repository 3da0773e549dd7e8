"""The frontend registry against the simulated xenstored: it knows which guest device each driver domain
serves, keeps that knowledge through driver-domain crashes and daemon restarts, and believes nothing a
driver domain or guest invents."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.registry.libxl_nodes import add_vbd, add_vif, create_domain, destroy_domain, remove_device
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.model import DeviceKind, FrontendKey, VbdParams, VifParams, XenbusState
from xenddd.registry.complaints import BURST
from xenddd.registry.frontends import FrontendRegistry
from xenddd.state import Damage

NETDD, BLKDD = 1, 2


class Host:
    """Two driver domains and three guests, each with one vif on netdd and one vbd on blkdd."""

    def __init__(self, xs: Xenstore) -> None:
        self.xs = xs
        self.uuids = {0: create_domain(xs, 0, "Domain-0")}
        self.uuids[NETDD] = create_domain(xs, NETDD, "netdd")
        self.uuids[BLKDD] = create_domain(xs, BLKDD, "blkdd")
        for guest in (5, 6, 7):
            self.uuids[guest] = create_domain(xs, guest, f"guest{guest}")
            add_vif(xs, NETDD, guest, 0, f"00:16:3e:00:00:0{guest}")
            add_vbd(xs, BLKDD, guest, 51712, "xvda", f"/dev/vg/guest{guest}")

    def destroy_guest(self, guest: int) -> None:
        remove_device(self.xs, NETDD, guest, "vif", 0)
        remove_device(self.xs, BLKDD, guest, "vbd", 51712)
        destroy_domain(self.xs, guest, self.uuids[guest])

    def crash_driver_domain(self, domid: int) -> None:
        """A crashed DD's home vanishes with its backends; its clients' frontend and /libxl nodes stay."""
        destroy_domain(self.xs, domid, self.uuids[domid])


@pytest.fixture
def host(xs: Xenstore) -> Host:
    return Host(xs)


def registry(xs: Xenstore, state_dir: Path, **kwargs: object) -> FrontendRegistry:
    return FrontendRegistry(xs, ["netdd", "blkdd"], state_dir=state_dir, **kwargs)  # type: ignore[arg-type]


def test_vif_and_vbd_backends_in_two_driver_domains_are_recorded(host: Host, tmp_path: Path) -> None:
    reg = registry(host.xs, tmp_path)
    reg.resync()

    vifs = reg.frontends(DeviceKind.VIF)
    assert [(f.guest_name, f.backend_name, f.backend_domid, f.devid) for f in vifs] == [
        (f"guest{g}", "netdd", NETDD, 0) for g in (5, 6, 7)
    ]
    assert vifs[0].params == VifParams(
        mac="00:16:3e:00:00:05", bridge="xenbr0", script="vif-bridge", type="vif"
    )
    assert vifs[0].guest_uuid == host.uuids[5]
    assert (vifs[0].backend_state, vifs[0].frontend_state) == (XenbusState.CONNECTED, XenbusState.CONNECTED)
    vbds = reg.served_by("blkdd")
    assert [f.params for f in vbds] == [
        VbdParams("xvda", f"/dev/vg/guest{g}", "w", "disk", backend_type="phy") for g in (5, 6, 7)
    ]
    assert reg.rejected() == {}


def test_destroying_a_guest_removes_its_entries(host: Host, tmp_path: Path) -> None:
    reg = registry(host.xs, tmp_path)
    reg.resync()
    host.destroy_guest(6)
    reg.refresh(f"/local/domain/{NETDD}/backend/vif/6/0")
    reg.refresh(f"/local/domain/{BLKDD}/backend/vbd/6")
    reg.refresh("@releaseDomain")
    assert {f.guest_name for f in reg.frontends()} == {"guest5", "guest7"}


def test_destroying_a_driver_domain_keeps_its_entries_marked_orphaned(host: Host, tmp_path: Path) -> None:
    reg = registry(host.xs, tmp_path)
    reg.resync()
    host.crash_driver_domain(NETDD)
    reg.refresh("@releaseDomain")

    vifs = reg.served_by("netdd")
    assert [(f.guest_name, f.orphaned) for f in vifs] == [(f"guest{g}", True) for g in (5, 6, 7)]
    assert all(not f.orphaned for f in reg.served_by("blkdd"))


def test_a_restarted_daemon_reloads_the_registry_even_if_the_driver_domain_died_meanwhile(
    host: Host, tmp_path: Path
) -> None:
    registry(host.xs, tmp_path).resync()
    host.crash_driver_domain(NETDD)

    restarted = registry(host.xs, tmp_path)
    restarted.load()
    restarted.resync()

    assert [(f.guest_name, f.orphaned) for f in restarted.served_by("netdd")] == [
        (f"guest{g}", True) for g in (5, 6, 7)
    ]
    assert [f.params for f in restarted.served_by("netdd")] == [
        VifParams(mac=f"00:16:3e:00:00:0{g}", bridge="xenbr0", script="vif-bridge", type="vif")
        for g in (5, 6, 7)
    ]


def test_a_damaged_registry_file_is_moved_aside_by_the_daemon_and_rebuilt_from_xenstore(
    host: Host, tmp_path: Path
) -> None:
    registry(host.xs, tmp_path).resync()
    path = tmp_path / "registry.json"
    damaged = path.read_bytes()[:100]
    path.write_bytes(damaged)

    viewer = registry(host.xs, tmp_path, read_only=True)  # the CLI while the daemon runs: only warns
    viewer.load()
    assert viewer.frontends() == [] and path.read_bytes() == damaged

    reports: list[Damage] = []
    restarted = registry(host.xs, tmp_path, on_damage=reports.append)
    restarted.load()
    restarted.resync()
    assert [d.path for d in reports] == [path] and reports[0].moved_to is not None
    assert reports[0].moved_to.read_bytes() == damaged
    assert len(restarted.frontends()) == 6 and path.exists()


def test_entries_follow_a_driver_domain_restarted_under_a_new_domid(host: Host, tmp_path: Path) -> None:
    reg = registry(host.xs, tmp_path)
    reg.resync()
    host.crash_driver_domain(NETDD)
    reg.refresh("@releaseDomain")
    create_domain(host.xs, 9, "netdd")
    add_vif(host.xs, 9, 5, 0, "00:16:3e:00:00:05")  # recovery reattached guest5 only so far
    reg.refresh("/local/domain/9/backend/vif/5/0")

    assert [(f.guest_name, f.backend_domid, f.orphaned) for f in reg.served_by("netdd")] == [
        ("guest5", 9, False),
        ("guest6", NETDD, True),
        ("guest7", NETDD, True),
    ]


def test_a_backend_forged_for_another_guests_disk_is_rejected_and_logged_once(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # netdd pretends to serve guest6's disk from a new backend, without the toolstack ever creating it
    forged = f"/local/domain/{NETDD}/backend/vbd/6/51728"
    host.xs.write_many(
        [
            (f"{forged}/params", "/dev/vg/guest5"),
            (f"{forged}/dev", "xvdb"),
            (f"{forged}/frontend", "/local/domain/6/device/vbd/51728"),
            (f"{forged}/state", "4"),
        ]
    )
    reg = registry(host.xs, tmp_path)
    with caplog.at_level(logging.WARNING, logger="xenddd.registry.frontends"):
        reg.resync()
        reg.refresh(forged)
        reg.resync()

    assert all(f.backend_name == "blkdd" for f in reg.frontends(DeviceKind.VBD))
    assert "no toolstack record" in reg.rejected()[forged]
    assert sum(forged in r.getMessage() for r in caplog.records) == 1


def test_a_driver_domain_rewriting_a_mac_thousands_of_times_costs_a_burst_of_warnings(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry(host.xs, tmp_path)
    reg.resync()
    mac = f"/local/domain/{NETDD}/backend/vif/5/0/mac"
    with caplog.at_level(logging.WARNING, logger="xenddd.registry.frontends"):
        for i in range(300):
            host.xs.write(mac, f"00:16:3e:00:{i // 256:02x}:{i % 256:02x}")
            reg.refresh(mac)
    assert len(caplog.records) == BURST
    assert reg.frontends(DeviceKind.VIF)[0].params.mac == "00:16:3e:00:00:05"  # the toolstack's copy


def test_a_driver_domain_spends_its_own_complaints_not_the_budget_of_the_guests_it_serves(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """netdd rewrites guest6's backend `mac` until its warnings are suppressed; guest6's own nonsense in
    its frontend nodes must still be said: each domain's complaints count against its own budget."""
    reg = registry(host.xs, tmp_path)
    reg.resync()
    backend = f"/local/domain/{NETDD}/backend/vif/6/0"
    with caplog.at_level(logging.WARNING, logger="xenddd.registry.frontends"):
        for i in range(2 * BURST):
            host.xs.write(f"{backend}/mac", f"00:16:3e:00:01:{i:02x}")
            reg.refresh(f"{backend}/mac")
        assert len(caplog.records) == BURST
        host.xs.write("/local/domain/6/device/vif/0/state", "99")
        reg.refresh(backend)
    assert "frontend state" in caplog.records[-1].getMessage()


def test_rejections_of_nodes_that_are_gone_are_forgotten_on_resync(host: Host, tmp_path: Path) -> None:
    junk = [f"/local/domain/{NETDD}/backend/vif/junk{i}" for i in range(50)]
    host.xs.write_many([(f"{path}/0/state", "4") for path in junk])
    reg = registry(host.xs, tmp_path)
    reg.resync()
    assert set(reg.rejected()) == set(junk)
    for path in junk:
        host.xs.rm(path)
    reg.resync()
    assert reg.rejected() == {}


def test_oversized_malformed_and_misplaced_backend_nodes_are_rejected(host: Host, tmp_path: Path) -> None:
    base = f"/local/domain/{NETDD}/backend/vif"
    host.xs.write_many(
        [
            (f"{base}/99999/0/mac", "00:16:3e:00:00:01"),  # not a domid
            (f"{base}/6/abc/mac", "00:16:3e:00:00:01"),  # not a devid
            (f"{base}/42/0/mac", "00:16:3e:00:00:01"),  # a guest that does not exist
        ]
    )
    # guest7's real vif: the toolstack copy lacks the MAC, and the one netdd offers is hostile
    host.xs.rm("/libxl/7/device/vif/0/mac")
    host.xs.write(f"{base}/7/0/mac", b"00:16:3e:00:00:07\0" + b"A" * 3000)
    reg = registry(host.xs, tmp_path)
    reg.resync()

    assert [f.guest_name for f in reg.served_by("netdd")] == ["guest5", "guest6"]
    rejected = reg.rejected()
    assert set(rejected) == {f"{base}/99999", f"{base}/6/abc", f"{base}/42/0", f"{base}/7/0"}
    assert "control characters" in rejected[f"{base}/7/0"]
    assert "not running" in rejected[f"{base}/42/0"]


def test_a_guest_writing_garbage_into_its_frontend_only_loses_its_displayed_state(
    host: Host, tmp_path: Path
) -> None:
    host.xs.write("/local/domain/5/device/vif/0/state", b"4\0\xff")
    host.xs.write("/local/domain/5/device/vif/0/backend", "/local/domain/2/backend/vif/5/0")
    reg = registry(host.xs, tmp_path)
    reg.resync()
    entry = reg.get(FrontendKey(host.uuids[5], DeviceKind.VIF, 0))
    assert entry is not None
    assert (entry.backend_name, entry.frontend_state) == ("netdd", XenbusState.UNKNOWN)


def test_a_judged_backend_s_state_change_is_re_read_alone_and_any_other_change_re_judges_it(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recovery's backends each go through several states: re-judging the device each time (a dozen
    reads) made a recovery's registry cost several judgements per device."""
    reg = registry(host.xs, tmp_path)
    reg.resync()
    reads: list[int] = []
    read_many = host.xs.read_many

    def counted(paths: Sequence[str], tx_id: int = 0) -> list[bytes | None]:
        reads.append(len(paths))
        return read_many(paths, tx_id)

    monkeypatch.setattr(host.xs, "read_many", counted)
    state = f"/local/domain/{NETDD}/backend/vif/5/0/state"
    host.xs.write(state, "2")
    reg.refresh(state)
    assert reg.frontends(DeviceKind.VIF)[0].backend_state is XenbusState.INIT_WAIT
    assert reads == [2]  # state and hotplug-status
    reads.clear()
    host.xs.write(state, "junk")  # malformed: the full judgement says so
    reg.refresh(state)
    assert sum(reads) > 2
    reads.clear()
    reg.refresh(f"/local/domain/{NETDD}/backend/vif/5/0/mac")
    assert sum(reads) > 2
