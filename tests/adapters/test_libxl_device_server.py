"""The device helper's side: xl's sequence of libxl calls for each request (tools/xl/xl_nic.c,
xl_block.c), xl.conf's vif defaults under what the request gives, and a bad request answered, not fatal —
against stand-ins for libxenlight and libxlutil that record the calls (libxl itself needs Xen)."""

from __future__ import annotations

import ctypes
import io
import json
from typing import Any

import pytest

from xenddd.adapters.libxl_device_server import DeviceCalls, VmInfo, nic_defaults, serve

DOMIDS = {b"fe": 5, b"7": 7}


class FakeLibxl:
    """libxenlight's functions the helper calls, each recorded by name; `fail` names the ones that fail."""

    def __init__(self, fail: tuple[str, ...] = (), specification: str = "xen") -> None:
        self.calls: list[str] = []
        self.nic_json: dict[str, Any] = {}
        self.fail = fail
        self.specification = specification
        self.described = ctypes.create_string_buffer(0)
        self.domains: dict[int, dict[str, Any]] = {}
        self.strings: list[ctypes.Array[ctypes.c_char]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> int:
            self.calls.append(name)
            return self._do(name, args)

        return call

    def _do(self, name: str, args: tuple[Any, ...]) -> int:
        if name in self.fail:
            return 0 if name == "libxl_list_vm" else -3  # (a pointer: NULL)
        if name in LISTING:
            return self._listing(name, args)
        if name == "libxl_domain_qualifier_to_domid":
            domid = DOMIDS.get(args[1])
            if domid is None:
                return -6
            args[2]._obj.value = domid
        if name == "libxl_device_nic_from_json":
            self.nic_json = json.loads(args[2])
        if name == "libxl_device_disk_to_json":  # a C string, which the caller frees (see no_real_free)
            self.described = ctypes.create_string_buffer(
                json.dumps({"specification": self.specification}).encode()
            )
            return ctypes.addressof(self.described)
        return 0

    def _listing(self, name: str, args: tuple[Any, ...]) -> int:
        """libxl_list_vm's array, each domain's libxl_dominfo (its domid kept in the buffer) as JSON, and
        its name; `self.domains` is what each says (a domain without `name` has none in xenstore, one
        without `info` went before its own look)."""
        if name == "libxl_list_vm":
            self.vms = (VmInfo * len(self.domains))(*(VmInfo(domid=d) for d in self.domains))
            args[1]._obj.value = len(self.domains)
            return ctypes.addressof(self.vms)
        if name == "libxl_domain_info":
            if "info" not in self.domains[args[2]]:
                return -3
            ctypes.c_uint32.from_buffer(args[1]).value = args[2]
            return 0
        if name == "libxl_dominfo_to_json":  # as libxl writes it: a field with its type's default is left out
            domid = ctypes.c_uint32.from_buffer(args[1]).value
            info = {"domid": domid, **self.domains[domid]["info"]}
            nil = "00000000-0000-0000-0000-000000000000"
            return self._c_string(
                json.dumps({k: v for k, v in info.items() if v not in (False, 0, None, nil)})
            )
        if name == "libxl_domid_to_name":
            known = self.domains[args[1]].get("name")
            return self._c_string(known) if known else 0
        return 0

    def _c_string(self, text: str) -> int:
        self.strings.append(ctypes.create_string_buffer(text.encode()))  # kept alive: see no_real_free
        return ctypes.addressof(self.strings[-1])


LISTING = ("libxl_list_vm", "libxl_domain_info", "libxl_dominfo_to_json", "libxl_domid_to_name")


class FakeXlu:
    def __init__(self, conf: dict[bytes, bytes] | None = None, parse_fails: bool = False) -> None:
        self.conf = conf
        self.parse_fails = parse_fails
        self.calls: list[str] = []

    def xlu_cfg_init(self, _report: Any, _name: bytes) -> int:
        self.calls.append("xlu_cfg_init")
        return 1

    def xlu_cfg_readfile(self, _config: int, _path: bytes) -> int:
        return 0 if self.conf is not None else 2

    def xlu_cfg_get_string(self, _config: int, key: bytes, value: Any, _dont_warn: int) -> int:
        if self.conf is None or key not in self.conf:
            return 2
        value._obj.value = self.conf[key]
        return 0

    def xlu_disk_parse(self, _config: int, nspecs: int, specs: Any, _disk: Any) -> int:
        self.calls.append(f"xlu_disk_parse {specs[0].decode()}")
        return 22 if self.parse_fails else 0

    def xlu_cfg_destroy(self, _config: int) -> None:
        self.calls.append("xlu_cfg_destroy")


@pytest.fixture(autouse=True)
def no_real_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in's JSON is Python's memory: libc must not free it."""
    import xenddd.adapters.libxl_device_server as server

    class Libc:
        def free(self, _pointer: int) -> None:
            pass

        def fdopen(self, _fd: int, _mode: bytes) -> int:
            return 1

    monkeypatch.setattr(server, "_libc", lambda: Libc())
    monkeypatch.setattr(server, "_stderr", lambda: 1)


def test_a_vif_is_added_as_xl_adds_it_with_xl_conf_defaults_under_the_request() -> None:
    lib = FakeLibxl()
    calls = DeviceCalls(
        lib, None, FakeXlu(), {"script": "vif-default", "gatewaydev": "eth9", "bridge": "xenbr0"}
    )
    calls.attach_nic(
        "fe", {"devid": 0, "mac": "00:16:3e:00:00:02", "bridge": "br0", "backend_domname": "domnet"}
    )
    assert lib.calls == [
        "libxl_domain_qualifier_to_domid",
        "libxl_device_nic_init",
        "libxl_device_nic_from_json",
        "libxl_device_nic_add",
        "libxl_device_nic_dispose",
    ]
    assert lib.nic_json == {
        "script": "vif-default",
        "gatewaydev": "eth9",
        "bridge": "br0",
        "devid": 0,
        "mac": "00:16:3e:00:00:02",
        "backend_domname": "domnet",
    }


def test_a_failed_add_is_an_error_and_the_vif_is_disposed_of() -> None:
    lib = FakeLibxl(fail=("libxl_device_nic_add",))
    with pytest.raises(Exception, match="libxl_device_nic_add failed"):
        DeviceCalls(lib, None, FakeXlu(), {}).attach_nic("fe", {"devid": 0})
    assert lib.calls[-1] == "libxl_device_nic_dispose"


def test_an_unknown_vif_is_gone_and_nothing_is_removed() -> None:
    lib = FakeLibxl(fail=("libxl_devid_to_device_nic",))
    assert DeviceCalls(lib, None, FakeXlu(), {}).detach_nic("fe", 1) is False
    assert "libxl_device_nic_remove" not in lib.calls


def test_a_known_vif_is_removed() -> None:
    lib = FakeLibxl()
    assert DeviceCalls(lib, None, FakeXlu(), {}).detach_nic("7", 1) is True
    assert lib.calls[-2:] == ["libxl_device_nic_remove", "libxl_device_nic_dispose"]


def test_a_disk_is_parsed_by_libxlutil_then_added() -> None:
    lib, xlu = FakeLibxl(), FakeXlu()
    DeviceCalls(lib, None, xlu, {}).attach_disk("fe", "vdev=xvdb,access=rw,backend=domstore,target=/dev/x")
    assert xlu.calls == [
        "xlu_cfg_init",
        "xlu_disk_parse vdev=xvdb,access=rw,backend=domstore,target=/dev/x",
        "xlu_cfg_destroy",
    ]
    assert lib.calls[-2:] == ["libxl_device_disk_add", "libxl_device_disk_dispose"]


def test_a_disk_spec_libxlutil_refuses_is_not_added() -> None:
    lib = FakeLibxl()
    with pytest.raises(Exception, match="bad disk spec"):
        DeviceCalls(lib, None, FakeXlu(parse_fails=True), {}).attach_disk("fe", "vdev=")
    assert "libxl_device_disk_add" not in lib.calls


@pytest.mark.parametrize(("specification", "removed"), [("xen", True), ("virtio", False)])
def test_a_disk_is_removed_safely_unless_virtio_which_xl_cannot_unplug(
    specification: str, removed: bool
) -> None:
    lib = FakeLibxl(specification=specification)
    calls = DeviceCalls(lib, None, FakeXlu(), {})
    if removed:
        assert calls.detach_disk("fe", "51728") is True
    else:
        with pytest.raises(Exception, match="virtio"):
            calls.detach_disk("fe", "51728")
    assert ("libxl_device_disk_safe_remove" in lib.calls) is removed
    assert lib.calls[-1] == "libxl_device_disk_dispose"


def test_an_unknown_domain_is_named_in_the_error() -> None:
    with pytest.raises(Exception, match="nosuch is an invalid domain identifier"):
        DeviceCalls(FakeLibxl(), None, FakeXlu(), {}).detach_nic("nosuch", 0)


def test_xl_conf_defaults_the_later_key_winning_as_xl_reads_them() -> None:
    conf = {b"vifscript": b"old", b"vif.default.script": b"new", b"defaultbridge": b"xenbr1"}
    assert nic_defaults(FakeXlu(conf)) == {"script": "new", "bridge": "xenbr1"}
    assert nic_defaults(FakeXlu(None)) == {}  # no xl.conf


def test_each_request_gets_one_reply_and_a_bad_one_does_not_stop_the_helper() -> None:
    lib = FakeLibxl(fail=("libxl_devid_to_device_nic",))
    lines = [
        json.dumps({"op": "detach-nic", "guest": "fe", "devid": 0}),
        "not json",
        json.dumps({"op": "reboot", "guest": "fe"}),
        json.dumps({"op": "attach-nic", "guest": "fe", "nic": {"devid": 0}}),
    ]
    out = io.StringIO()
    serve(DeviceCalls(lib, None, FakeXlu(), {}), lines, out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert replies[0] == {"ok": True, "gone": True}
    assert replies[1]["ok"] is False and replies[2] == {"ok": False, "error": "unknown op 'reboot'"}
    assert replies[3] == {"ok": True}


DOM0_INFO = {
    "uuid": "00000000-0000-0000-0000-000000000000",
    "running": True,
    "blocked": False,
    "paused": False,
    "shutdown": False,
    "shutdown_reason": None,
    "dying": False,
    "current_memkb": 2097152,
    "vcpu_online": 2,
    "cpu_time": 1234500000000,
    "ssidref": 0,  # (fields the listing does not pass on)
    "max_memkb": 2097152,
}


def test_the_domains_are_listed_as_libxl_describes_them_each_disposed_of() -> None:
    lib = FakeLibxl()
    crashed = {**DOM0_INFO, "running": False, "shutdown": True, "shutdown_reason": "crash"}
    lib.domains = {
        0: {"name": "Domain-0", "info": DOM0_INFO},
        3: {"name": "domnet", "info": crashed},
        4: {"info": DOM0_INFO},  # no name (yet, or any more)
        5: {"name": "gone"},  # went between the listing and its own look
    }
    found = DeviceCalls(lib, None, FakeXlu(), {}).domains()
    assert [d["name"] for d in found] == ["Domain-0", "domnet"]
    # what libxl's JSON left out, its default value, is put back
    assert {k: found[0][k] for k in ("domid", "uuid", "blocked", "shutdown", "shutdown_reason")} == {
        "domid": 0,
        "uuid": "00000000-0000-0000-0000-000000000000",
        "blocked": False,
        "shutdown": False,
        "shutdown_reason": None,
    }
    passed_on = {k: v for k, v in crashed.items() if k not in ("ssidref", "max_memkb")}
    assert found[1] == {"name": "domnet", "domid": 3, **passed_on}
    assert lib.calls.count("libxl_dominfo_init") == lib.calls.count("libxl_dominfo_dispose") == 4
    assert lib.calls[-1] == "libxl_dominfo_dispose" and "libxl_vminfo_list_free" in lib.calls


def test_a_listing_libxl_refuses_is_an_error_reply() -> None:
    replies = io.StringIO()
    serve(
        DeviceCalls(FakeLibxl(fail=("libxl_list_vm",)), None, FakeXlu(), {}), ['{"op": "domains"}'], replies
    )
    assert json.loads(replies.getvalue()) == {"ok": False, "error": "libxl_list_vm failed"}


def test_a_listing_is_answered_with_the_domains() -> None:
    lib = FakeLibxl()
    lib.domains = {0: {"name": "Domain-0", "info": DOM0_INFO}}
    replies = io.StringIO()
    serve(DeviceCalls(lib, None, FakeXlu(), {}), ['{"op": "domains"}'], replies)
    reply = json.loads(replies.getvalue())
    assert reply["ok"] and [d["domid"] for d in reply["domains"]] == [0]
