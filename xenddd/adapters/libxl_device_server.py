"""A guest's vif or disk attached or detached by libxl in a process that keeps its libxl context between
requests: `python3 -m xenddd.adapters.libxl_device_server`, one JSON request a line on standard input,
one JSON reply a line on standard output (`libxl_devices` is its client). It also lists the domains as
`xl list -v` does (libxl_list_vm, then each one's libxl_dominfo as libxl's JSON, and its name), for the
daemon's passes over xl's driver domains.

Why not `xl network-attach` and the like, one process per call: each loads libxl and its score of
libraries and looks the guest up before its first write, and on the test bed under emulation that took
0.5 to 1.9 s of every detach and attach of a recovery, before libxl did anything. What this does is xl's
own (tools/xl/xl_nic.c, xl_block.c): the guest named as xl names it (libxl_domain_qualifier_to_domid);
a vif from xl.conf's `vif.default.*` (set_default_nic_values) overridden by what the request gives, as
libxl's JSON of a libxl_device_nic (the client writes what libxl recorded of the device); a disk from
xl's own disk syntax, parsed by libxlutil (xlu_disk_parse); a vif removed as `xl network-detach` does
(libxl_devid_to_device_nic, libxl_device_nic_remove), a disk as `xl block-detach` does
(libxl_vdev_to_device_disk, libxl_device_disk_safe_remove). A device that xl
would call unknown or not connected is `gone` in the reply. libxl's own messages go to standard error,
the daemon's journal.

A process of its own for the reasons adapters/libxl_create gives: libxl takes SIGCHLD while it has
children, and a fault in C must not take the daemon down.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from xenddd.adapters.libxl_ctypes import BUFFER, Context, LibxlError, library, open_context

XL_CONF = "/etc/xen/xl.conf"
# xl.conf's keys for a vif's defaults, in the order xl reads them (a later one wins), and the field each sets
NIC_DEFAULTS = (
    ("vifscript", "script"),
    ("vif.default.script", "script"),
    ("defaultbridge", "bridge"),
    ("vif.default.bridge", "bridge"),
    ("vif.default.gatewaydev", "gatewaydev"),
    ("vif.default.backend", "backend_domname"),
)
# What a listing gives of each domain's libxl_dominfo (xl list -v's columns), with each field's default:
# libxl's JSON leaves out a field that has its type's default value (dom0's domid 0, a false flag, a nil
# uuid), and the listing puts it back.
DOMINFO_DEFAULTS: dict[str, object] = {
    "uuid": "00000000-0000-0000-0000-000000000000",
    "running": False,
    "blocked": False,
    "paused": False,
    "shutdown": False,
    "shutdown_reason": None,
    "dying": False,
    "current_memkb": 0,
    "vcpu_online": 0,
    "cpu_time": 0,
}
_P = ctypes.c_void_p


class VmInfo(ctypes.Structure):
    """libxl_vminfo, whose layout every Xen since 4.1 shares: a libxl_uuid (16 bytes) and the domid."""

    _fields_ = [("uuid", ctypes.c_uint8 * 16), ("domid", ctypes.c_uint32)]


class DeviceCalls:
    """The calls on one open context; `lib` and `xlu` are libxenlight and libxlutil (or, in tests,
    objects with the same functions)."""

    def __init__(self, lib: Any, ctx: Any, xlu: Any, nic_defaults: dict[str, str]) -> None:
        self._lib, self._ctx, self._xlu = lib, ctx, xlu
        self._nic_defaults = nic_defaults

    def attach_nic(self, guest: str, nic: dict[str, Any]) -> None:
        domid = self._domid(guest)
        with self._made("device_nic") as buffer:
            spec = json.dumps({**self._nic_defaults, **nic}).encode()
            if self._lib.libxl_device_nic_from_json(self._ctx, buffer, spec) != 0:
                raise LibxlError(f"libxl cannot read the vif {spec.decode()}")
            if self._lib.libxl_device_nic_add(self._ctx, domid, buffer, None) != 0:
                raise LibxlError("libxl_device_nic_add failed")

    def detach_nic(self, guest: str, devid: int) -> bool:
        """False: libxl has no such vif (xl's "Unknown device")."""
        domid = self._domid(guest)
        with self._made("device_nic") as buffer:
            if self._lib.libxl_devid_to_device_nic(self._ctx, domid, devid, buffer) != 0:
                return False
            if self._lib.libxl_device_nic_remove(self._ctx, domid, buffer, None) != 0:
                raise LibxlError("libxl_device_nic_remove failed")
            return True

    def attach_disk(self, guest: str, spec: str) -> None:
        domid = self._domid(guest)
        with self._made("device_disk") as buffer:
            config = self._xlu.xlu_cfg_init(_stderr(), b"command line")
            if not config:
                raise LibxlError("libxlutil cannot make a config")
            try:
                specs = (ctypes.c_char_p * 1)(spec.encode())
                if self._xlu.xlu_disk_parse(config, 1, specs, buffer) != 0:
                    raise LibxlError(f"bad disk spec {spec!r} (libxlutil's message above)")
                if self._lib.libxl_device_disk_add(self._ctx, domid, buffer, None) != 0:
                    raise LibxlError("libxl_device_disk_add failed")
            finally:
                self._xlu.xlu_cfg_destroy(config)

    def detach_disk(self, guest: str, vdev: str) -> bool:
        """False: libxl has no such disk (xl's "Device ... not connected")."""
        domid = self._domid(guest)
        with self._made("device_disk") as buffer:
            if self._lib.libxl_vdev_to_device_disk(self._ctx, domid, vdev.encode(), buffer) != 0:
                return False
            if self._json("device_disk", buffer).get("specification") == "virtio":
                raise LibxlError("hot-unplug is not supported for a virtio disk")
            if self._lib.libxl_device_disk_safe_remove(self._ctx, domid, buffer, None) != 0:
                raise LibxlError("libxl_device_disk_safe_remove failed")
            return True

    def domains(self) -> list[dict[str, object]]:
        """Every domain but stub domains (libxl_list_vm), each as its libxl_dominfo's fields (those of
        DOMINFO_DEFAULTS), its domid and its name; one that went, or lost its name, between the listing
        and its own look is left out."""
        count = ctypes.c_int()
        listed = self._lib.libxl_list_vm(self._ctx, ctypes.byref(count))
        if not listed:
            raise LibxlError("libxl_list_vm failed")
        try:
            domids = [vm.domid for vm in (VmInfo * count.value).from_address(listed)]
        finally:
            self._lib.libxl_vminfo_list_free(listed, count.value)
        found: list[dict[str, object]] = []
        for domid in domids:
            with self._made("dominfo") as buffer:
                if self._lib.libxl_domain_info(self._ctx, buffer, domid) != 0:
                    continue
                info = self._json("dominfo", buffer)
            name = self._lib.libxl_domid_to_name(self._ctx, domid)
            if not name:
                continue
            try:
                text = ctypes.string_at(name).decode()
            finally:
                _libc().free(name)
            fields = {field: info.get(field, default) for field, default in DOMINFO_DEFAULTS.items()}
            found.append({"name": text, "domid": domid, **fields})
        return found

    @contextlib.contextmanager
    def _made(self, kind: str) -> Iterator[ctypes.Array[ctypes.c_char]]:
        """A libxl_<kind> (device_nic, device_disk, dominfo), made by libxl's own _init and disposed of by
        its _dispose whatever happens in between."""
        buffer = ctypes.create_string_buffer(BUFFER)
        getattr(self._lib, f"libxl_{kind}_init")(buffer)
        try:
            yield buffer
        finally:
            getattr(self._lib, f"libxl_{kind}_dispose")(buffer)

    def _domid(self, guest: str) -> int:
        domid = ctypes.c_uint32()
        if self._lib.libxl_domain_qualifier_to_domid(self._ctx, guest.encode(), ctypes.byref(domid)) != 0:
            raise LibxlError(f"{guest} is an invalid domain identifier")
        return domid.value

    def _json(self, kind: str, buffer: Any) -> dict[str, object]:
        """A libxl_<kind> as libxl's own JSON of it."""
        text = getattr(self._lib, f"libxl_{kind}_to_json")(self._ctx, buffer)
        if not text:
            raise LibxlError(f"libxl cannot describe the {kind}")
        try:
            described = json.loads(ctypes.string_at(text).decode())
        finally:
            _libc().free(text)
        if not isinstance(described, dict):
            raise LibxlError(f"libxl described the {kind} as {described!r:.80}")
        return described


def serve(calls: DeviceCalls, requests: Iterable[str], replies: IO[str]) -> None:
    """One reply a request, in order; a request that is not one gets an error reply, and the next is
    read as ever."""
    for line in requests:
        try:
            request = json.loads(line)
            reply = _answer(calls, request)
        except (LibxlError, ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def _answer(calls: DeviceCalls, request: dict[str, Any]) -> dict[str, object]:
    op = request["op"]
    if op == "domains":
        return {"ok": True, "domains": calls.domains()}
    guest = str(request["guest"])
    if op == "attach-nic":
        calls.attach_nic(guest, dict(request["nic"]))
    elif op == "attach-disk":
        calls.attach_disk(guest, str(request["spec"]))
    elif op == "detach-nic":
        return {"ok": True, "gone": not calls.detach_nic(guest, int(request["devid"]))}
    elif op == "detach-disk":
        return {"ok": True, "gone": not calls.detach_disk(guest, str(request["vdev"]))}
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"ok": True}


def nic_defaults(xlu: Any, path: str = XL_CONF) -> dict[str, str]:
    """xl.conf's vif defaults, read by libxlutil as xl reads them; none without the file."""
    config = xlu.xlu_cfg_init(_stderr(), path.encode())
    if not config:
        raise LibxlError("libxlutil cannot make a config")
    try:
        if xlu.xlu_cfg_readfile(config, path.encode()) != 0:
            return {}
        defaults: dict[str, str] = {}
        for key, field in NIC_DEFAULTS:
            value = ctypes.c_char_p()
            if xlu.xlu_cfg_get_string(config, key.encode(), ctypes.byref(value), 1) == 0 and value.value:
                defaults[field] = value.value.decode()
        return defaults
    finally:
        xlu.xlu_cfg_destroy(config)


def _declare(lib: ctypes.CDLL, xlu: ctypes.CDLL) -> None:
    for kind in ("device_nic", "device_disk", "dominfo"):
        getattr(lib, f"libxl_{kind}_init").argtypes = [_P]
        getattr(lib, f"libxl_{kind}_dispose").argtypes = [_P]
    for kind in ("device_disk", "dominfo"):
        getattr(lib, f"libxl_{kind}_to_json").argtypes = [_P, _P]
        getattr(lib, f"libxl_{kind}_to_json").restype = _P
    for kind, call in (("nic", "remove"), ("disk", "safe_remove")):
        for name in (f"libxl_device_{kind}_add", f"libxl_device_{kind}_{call}"):
            getattr(lib, name).argtypes = [_P, ctypes.c_uint32, _P, _P]
    lib.libxl_device_nic_from_json.argtypes = [_P, _P, ctypes.c_char_p]
    lib.libxl_list_vm.argtypes = [_P, ctypes.POINTER(ctypes.c_int)]
    lib.libxl_list_vm.restype = _P
    lib.libxl_vminfo_list_free.argtypes = [_P, ctypes.c_int]
    lib.libxl_domain_info.argtypes = [_P, _P, ctypes.c_uint32]
    lib.libxl_domid_to_name.argtypes = [_P, ctypes.c_uint32]
    lib.libxl_domid_to_name.restype = _P
    lib.libxl_devid_to_device_nic.argtypes = [_P, ctypes.c_uint32, ctypes.c_int, _P]
    lib.libxl_vdev_to_device_disk.argtypes = [_P, ctypes.c_uint32, ctypes.c_char_p, _P]
    lib.libxl_domain_qualifier_to_domid.argtypes = [_P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32)]
    xlu.xlu_cfg_init.argtypes = [_P, ctypes.c_char_p]
    xlu.xlu_cfg_init.restype = _P
    xlu.xlu_cfg_readfile.argtypes = [_P, ctypes.c_char_p]
    xlu.xlu_cfg_destroy.argtypes = [_P]
    xlu.xlu_cfg_get_string.argtypes = [_P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
    xlu.xlu_disk_parse.argtypes = [_P, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), _P]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fdopen.restype = _P
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.free.argtypes = [_P]
    return libc


@functools.cache
def _stderr() -> int:
    """A stdio stream on standard error, which libxlutil reports a bad spec to."""
    stream: int = _libc().fdopen(2, b"w")
    return stream


def main() -> int:
    context: Context | None = None
    try:
        context = open_context()
        xlu = library("xlutil")
        _declare(context.lib, xlu)
        calls = DeviceCalls(context.lib, context.ctx, xlu, nic_defaults(xlu))
    except (LibxlError, AttributeError) as exc:
        print(json.dumps({"ok": False, "error": f"libxl: {exc}"}), flush=True)
        if context is not None:
            context.close()
        return 1
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    try:
        serve(calls, sys.stdin, sys.stdout)
    finally:
        context.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
