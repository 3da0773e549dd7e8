"""Everything a driver domain or a guest writes is hostile: the judging functions take any bytes and
answer with a trusted Frontend or a Rejection, never an exception, and never believe a backend that dom0's
toolstack did not create."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenddd.adapters.xenstore.paths import InvalidXenstorePath, xs_join
from xenddd.errors import InputError
from xenddd.model import DeviceKind, Frontend, VbdParams, VifParams, XenbusState, validate_domain_name
from xenddd.registry.persistence import frontend_from_json, frontend_to_json
from xenddd.registry.records import (
    BackendLocation,
    DeviceNodes,
    GuestIdentity,
    InvalidValue,
    Judgement,
    Rejection,
    judge_device,
    parse_backend_path,
    parse_devid,
    parse_domid,
    parse_guest_identity,
    parse_state,
    vbd_params,
    vif_params,
)

GUEST = GuestIdentity("web1", "0f0e0d0c-0b0a-0908-0706-050403020100")
DD, G, DEVID = 3, 7, 0
NODE_KEYS = st.sampled_from(
    [
        "frontend",
        "backend",
        "frontend-id",
        "backend-id",
        "state",
        "hotplug-status",
        "mac",
        "bridge",
        "script",
        "type",
        "ip",
        "rate",
        "mtu",
        "params",
        "dev",
        "mode",
        "device-type",
    ]
)
HOSTILE_NODES = st.dictionaries(NODE_KEYS, st.one_of(st.none(), st.binary(max_size=5000)), max_size=12)


def toolstack(kind: DeviceKind = DeviceKind.VIF, dd: int = DD, **extra: bytes) -> dict[str, bytes | None]:
    return {
        "backend": f"/local/domain/{dd}/backend/{kind.value}/{G}/{DEVID}".encode(),
        "frontend": f"/local/domain/{G}/device/{kind.value}/{DEVID}".encode(),
        **extra,
    }


def vif_backend(**overrides: bytes) -> dict[str, bytes | None]:
    nodes: dict[str, bytes | None] = {
        "frontend": f"/local/domain/{G}/device/vif/{DEVID}".encode(),
        "frontend-id": str(G).encode(),
        "state": b"4",
        "hotplug-status": b"connected",
        "mac": b"00:16:3E:5A:01:02",
        "bridge": b"xenbr0",
        "script": b"vif-bridge",
        "type": b"vif",
    }
    nodes.update(overrides)
    return nodes


def judge(kind: DeviceKind, nodes: DeviceNodes) -> Judgement | Rejection:
    return judge_device("netdd", DD, kind, G, DEVID, GUEST, nodes)


@given(st.one_of(st.binary(max_size=40), st.text(max_size=40), st.none()))
def test_domid_devid_and_state_parsers_accept_only_canonical_values(raw: bytes | str | None) -> None:
    domid, devid = parse_domid(raw), parse_devid(raw)
    state = parse_state(raw if not isinstance(raw, str) else raw.encode("utf-8", "replace"))
    assert domid is None or (0 <= domid < 0x7FF0 and str(domid).encode() in (raw, str(raw).encode()))
    assert devid is None or 0 <= devid < 2**31
    assert state is None or XenbusState.INITIALISING <= state <= XenbusState.CLOSED


@given(st.one_of(st.binary(max_size=120), st.text(max_size=120)))
def test_any_path_is_located_in_a_backend_tree_or_not_at_all(path: bytes | str) -> None:
    location = parse_backend_path(path)
    if location is not None:
        text = path.decode() if isinstance(path, bytes) else path
        assert text.startswith(f"/local/domain/{location.driver_domid}/backend/{location.kind.value}")


def test_a_device_path_and_deeper_paths_locate_the_device() -> None:
    location = parse_backend_path("/local/domain/3/backend/vbd/7/51712/state")
    assert location is not None
    assert (location.driver_domid, location.kind, location.guest_domid, location.devid) == (
        3,
        DeviceKind.VBD,
        7,
        51712,
    )


@given(st.one_of(st.none(), st.binary(max_size=300)), st.one_of(st.none(), st.binary(max_size=300)))
def test_guest_identity_is_read_only_from_a_well_formed_name_and_vm_path(
    name: bytes | None, vm: bytes | None
) -> None:
    identity = parse_guest_identity(name, vm)
    if identity is not None:
        assert vm is not None and identity.uuid.encode() in vm


@given(HOSTILE_NODES, HOSTILE_NODES, HOSTILE_NODES, st.sampled_from(DeviceKind))
def test_judging_arbitrary_nodes_never_raises(
    ts: dict[str, bytes | None], be: dict[str, bytes | None], fe: dict[str, bytes | None], kind: DeviceKind
) -> None:
    verdict = judge(kind, DeviceNodes(ts, be, fe))
    assert isinstance(verdict, (Judgement, Rejection))


@given(HOSTILE_NODES, HOSTILE_NODES, st.sampled_from(DeviceKind))
def test_hostile_backend_and_frontend_nodes_can_never_make_a_backend_without_a_toolstack_record_trusted(
    be: dict[str, bytes | None], fe: dict[str, bytes | None], kind: DeviceKind
) -> None:
    assert isinstance(judge(kind, DeviceNodes({}, be, fe)), Rejection)


def test_a_vif_created_by_the_toolstack_is_recorded_with_what_it_takes_to_recreate_it() -> None:
    verdict = judge(DeviceKind.VIF, DeviceNodes(toolstack(), vif_backend(), {"state": b"4"}))
    assert isinstance(verdict, Judgement), verdict
    frontend = verdict.frontend
    assert frontend.params == VifParams(
        mac="00:16:3e:5a:01:02", bridge="xenbr0", script="vif-bridge", type="vif"
    )
    assert (frontend.guest_name, frontend.guest_uuid, frontend.backend_name) == ("web1", GUEST.uuid, "netdd")
    assert (frontend.backend_state, frontend.frontend_state) == (XenbusState.CONNECTED, XenbusState.CONNECTED)
    assert frontend.hotplug_status == "connected"
    assert verdict.warnings == ()


def test_a_driver_domain_inventing_a_backend_for_another_driver_domains_device_is_rejected() -> None:
    verdict = judge(DeviceKind.VIF, DeviceNodes(toolstack(dd=4), vif_backend(), {}))
    assert isinstance(verdict, Rejection)
    assert "/local/domain/4/backend" in verdict.reason


def test_the_toolstack_copy_of_a_parameter_wins_over_the_driver_domains_and_the_clash_is_reported() -> None:
    nodes = DeviceNodes(toolstack(mac=b"00:16:3e:00:00:01"), vif_backend(mac=b"00:16:3e:66:66:66"), {})
    verdict = judge(DeviceKind.VIF, nodes)
    assert isinstance(verdict, Judgement)
    assert isinstance(verdict.frontend.params, VifParams)
    assert verdict.frontend.params.mac == "00:16:3e:00:00:01"
    assert any("mac" in w for w in verdict.warnings)


def test_oversized_or_nul_carrying_identity_values_are_rejected_if_only_the_driver_domain_has_them() -> None:
    for forged in (b"00:16:3e:00:00:01" + b"x" * 5000, b"00:16:3e:00:00:01\0", b"not-a-mac"):
        verdict = judge(DeviceKind.VIF, DeviceNodes(toolstack(), vif_backend(mac=forged), {}))
        assert isinstance(verdict, Rejection), forged


def test_a_malformed_optional_vif_key_is_ignored_alone_and_a_trusted_copy_still_counts() -> None:
    backend = vif_backend(ip=b"10.0.0.300", mtu=b"99999999", rate=b"fast", vifname=b"x" * 40)
    verdict = judge(DeviceKind.VIF, DeviceNodes(toolstack(rate=b"12500,50000"), backend, {}))
    assert isinstance(verdict, Judgement), verdict
    params = verdict.frontend.params
    assert isinstance(params, VifParams)
    assert (params.mac, params.ip, params.mtu, params.rate, params.vifname) == (
        "00:16:3e:5a:01:02",
        None,
        None,
        "12500,50000",
        None,
    )
    assert sorted(w.split()[0] for w in verdict.warnings) == ["ip", "mtu", "rate", "vifname"]


def test_a_malformed_disk_mode_rejects_the_disk_rather_than_guess_it_writable() -> None:
    ts = toolstack(DeviceKind.VBD, params=b"/dev/vg/web1", dev=b"xvda", type=b"phy")
    verdict = judge(DeviceKind.VBD, DeviceNodes(ts, {"mode": b"rw!"}, {}))
    assert isinstance(verdict, Rejection)
    assert "mode" in verdict.reason


def test_a_guest_writing_a_nonsense_state_only_loses_its_displayed_state() -> None:
    verdict = judge(DeviceKind.VIF, DeviceNodes(toolstack(), vif_backend(), {"state": b"99"}))
    assert isinstance(verdict, Judgement)
    assert verdict.frontend.frontend_state is XenbusState.UNKNOWN
    assert any("frontend state" in w for w in verdict.guest_warnings)
    assert verdict.warnings == ()  # nothing charged to the driver domain


def test_a_qdisk_vbd_keeps_its_format_target_vdev_and_mode() -> None:
    ts = toolstack(DeviceKind.VBD, params=b"qcow2:/srv/web1.qcow2", dev=b"xvda", mode=b"r", type=b"qdisk") | {
        "device-type": b"disk"
    }
    verdict = judge(DeviceKind.VBD, DeviceNodes(ts, {"state": b"4"}, {}))
    assert isinstance(verdict, Judgement), verdict
    assert verdict.frontend.params == VbdParams(
        vdev="xvda",
        target="/srv/web1.qcow2",
        mode="r",
        device_type="disk",
        format="qcow2",
        backend_type="qdisk",
    )


def test_a_persisted_entry_round_trips() -> None:
    verdict = judge(DeviceKind.VIF, DeviceNodes(toolstack(), vif_backend(ip=b"10.0.0.2", mtu=b"1400"), {}))
    assert isinstance(verdict, Judgement)
    restored = frontend_from_json(json.loads(json.dumps(frontend_to_json(verdict.frontend))))
    assert restored is not None
    assert restored.key == verdict.frontend.key
    assert restored.params == verdict.frontend.params


VALID_ENTRY = {
    "guest_uuid": GUEST.uuid,
    "guest_name": "web1",
    "guest_domid": G,
    "kind": "vbd",
    "devid": 51712,
    "backend_name": "blkdd",
    "backend_domid": DD,
    "orphaned": True,
    "params": {"vdev": "xvda", "target": "/dev/vg/web1", "mode": "w", "device_type": "disk", "format": None},
    "extra": {},
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


@given(st.sampled_from(sorted(VALID_ENTRY)), JSON)
def test_a_corrupted_state_file_entry_is_ignored_not_raised(field: str, junk: object) -> None:
    restored = frontend_from_json(VALID_ENTRY | {field: junk})
    assert restored is None or isinstance(restored, Frontend)
    assert frontend_from_json(junk) is None


# A `$`-anchored pattern also matches before a final newline: "5\n" was domid 5. Every validator of
# hostile input must refuse a value with anything around it.
AROUND = st.sampled_from(["\n", " ", "\r\n", "\t", "\x00"])


@given(st.integers(0, 32751), AROUND)
def test_a_domid_or_devid_with_a_trailing_character_is_refused(number: int, suffix: str) -> None:
    assert parse_domid(str(number)) == number and parse_devid(str(number)) == number
    for text in (str(number) + suffix, suffix + str(number)):
        assert parse_domid(text) is None and parse_domid(text.encode()) is None
        assert parse_devid(text) is None and parse_devid(text.encode()) is None


GOOD_VIF = {"mac": "00:16:3e:00:00:01", "bridge": "xenbr0", "script": "vif-bridge", "type": "vif",
            "rate": "100,50", "mtu": "1500"}  # fmt: skip


@pytest.mark.parametrize("key", sorted(GOOD_VIF))
@pytest.mark.parametrize("suffix", ["\n", " "])
def test_a_vif_parameter_with_a_trailing_character_is_refused(key: str, suffix: str) -> None:
    vif_params(GOOD_VIF)
    with pytest.raises(InvalidValue):
        vif_params({**GOOD_VIF, key: GOOD_VIF[key] + suffix})


@pytest.mark.parametrize("suffix", ["\n", " "])
def test_a_vdev_with_a_trailing_character_is_refused(suffix: str) -> None:
    good = {"dev": "xvda", "params": "/dev/vg/web"}
    vbd_params(good)
    with pytest.raises(InvalidValue):
        vbd_params({**good, "dev": "xvda" + suffix})


def test_a_backend_path_or_guest_identity_with_a_trailing_newline_is_refused() -> None:
    assert parse_backend_path("/local/domain/1/backend/vif/5/0") == BackendLocation(1, DeviceKind.VIF, 5, 0)
    # not devid 0: a hint for the whole guest directory, whose listing is then judged name by name
    assert parse_backend_path("/local/domain/1/backend/vif/5/0\n") == BackendLocation(1, DeviceKind.VIF, 5)
    assert parse_backend_path("/local/domain/1\n/backend/vif") is None
    vm = b"/vm/0a6b1c1e-1d2b-4c57-9a47-6e1d1c3b5a01"
    assert parse_guest_identity(b"web", vm) is not None
    assert parse_guest_identity(b"web", vm + b"\n") is None


@pytest.mark.parametrize("component", ["5\n", "backend\n", "vif "])
def test_a_xenstore_path_component_with_a_trailing_character_is_refused(component: str) -> None:
    with pytest.raises(InvalidXenstorePath):
        xs_join("/local/domain", component)


def test_a_domain_name_with_a_trailing_newline_is_refused() -> None:
    assert validate_domain_name("domnet") == "domnet"
    with pytest.raises(InputError):
        validate_domain_name("domnet\n")
