"""Judging one backend entry of a driver domain: parse hostile xenstore bytes into a trusted `Frontend`.

Who writes what decides what we believe. `/local/domain/<dd>/backend/...` is written by the driver domain and
`/local/domain/<guest>/device/...` by the guest; either may be compromised. `/libxl/<guest>/device/...` is
written only by dom0's toolstack. So a backend entry exists for us only if the toolstack record of that guest
device names exactly this backend path; identity parameters (MAC, disk target, vdev) come from the toolstack
copy when it has them, and only otherwise from the backend; a driver domain disagreeing with the toolstack is
reported, and its value ignored. Live status (states, hotplug-status) is always the domains' own word and is
therefore only displayed, never acted upon.

Everything here is pure and total: any bytes in, a `Frontend` or a `Rejection` out, never an exception.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from xenddd.errors import InputError
from xenddd.model import DeviceKind, Frontend, VbdParams, VifParams, XenbusState, normalise_mac

S = TypeVar("S")

MAX_VALUE_BYTES = 4096
MAX_DEVID = 2**31 - 1
DOMID_FIRST_RESERVED = 0x7FF0

_DECIMAL_RE = re.compile(r"(0|[1-9][0-9]{0,9})")
_UUID_VM_RE = re.compile(
    r"/vm/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:-[0-9]{1,5})?"
)
_BRIDGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_IFNAME_RE = _BRIDGE_RE  # a Linux interface name: IFNAMSIZ - 1 characters
_SCRIPT_RE = re.compile(r"[A-Za-z0-9_./+-]{1,255}")
_WORD_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_RATE_RE = re.compile(r"[0-9]{1,20},[0-9]{1,10}")
_VDEV_RE = re.compile(r"(?:(?:xvd|hd|sd)[a-z]{1,4}[0-9]{0,3}|d[0-9]{1,3}(?:p[0-9]{1,3})?)")
_FORMATS = ("raw", "qcow", "qcow2", "vhd", "qed", "aio")

VIF_PARAM_KEYS = ("mac", "bridge", "script", "type", "ip", "rate", "mtu", "vifname")
VBD_PARAM_KEYS = ("params", "dev", "mode", "device-type", "type", "script")
BACKEND_STATUS_KEYS = ("frontend", "state", "hotplug-status")
FRONTEND_KEYS = ("backend", "state")
TOOLSTACK_KEYS = ("frontend", "backend")
# Without a well-formed one of these the device cannot be recreated as the guest knows it (or, for `mode`,
# without the risk of giving a read-only disk back writable): a bad value of them rejects the device.
_IDENTITY_KEYS = {DeviceKind.VIF: ("mac",), DeviceKind.VBD: ("dev", "params", "mode", "device-type")}


class InvalidValue(Exception):
    """One field failed validation; `str(exc)` is the operator-readable reason."""


@dataclass(frozen=True)
class Rejection:
    """Why a backend entry is not believed; logged once and shown by `rejected()`."""

    reason: str


@dataclass(frozen=True)
class BackendLocation:
    """Where a path sits below `/local/domain/<dd>/backend/<kind>`; deeper parts are None when absent."""

    driver_domid: int
    kind: DeviceKind
    guest_domid: int | None = None
    devid: int | None = None


@dataclass(frozen=True)
class DeviceNodes:
    """The raw nodes read for one device, by owner: toolstack (dom0), backend (DD), frontend (guest)."""

    toolstack: Mapping[str, bytes | None]
    backend: Mapping[str, bytes | None]
    frontend: Mapping[str, bytes | None]


@dataclass(frozen=True)
class GuestIdentity:
    name: str
    uuid: str


@dataclass(frozen=True)
class Judgement:
    """The accepted frontend plus field-level complaints (logged once; the entry is still trusted), apart
    by whose nodes they are about: each domain's complaints count against its own budget (see the
    registry), so a driver domain cannot spend its guests' and a guest cannot spend its driver domain's."""

    frontend: Frontend
    warnings: tuple[str, ...] = field(default=())  # about the driver domain's backend nodes
    guest_warnings: tuple[str, ...] = field(default=())  # about the guest's frontend nodes


def backend_path(driver_domid: int, kind: DeviceKind, guest_domid: int, devid: int) -> str:
    return f"{guest_backends_path(driver_domid, kind, guest_domid)}/{devid}"


def guest_backends_path(driver_domid: int, kind: DeviceKind, guest_domid: int) -> str:
    """Where a driver domain keeps the backends of one guest's devices of a kind."""
    return f"/local/domain/{driver_domid}/backend/{kind.value}/{guest_domid}"


def frontend_path(guest_domid: int, kind: DeviceKind, devid: int) -> str:
    return f"/local/domain/{guest_domid}/device/{kind.value}/{devid}"


def toolstack_path(guest_domid: int, kind: DeviceKind, devid: int) -> str:
    return f"/libxl/{guest_domid}/device/{kind.value}/{devid}"


def parse_domid(raw: bytes | str | None) -> int | None:
    """A domid as xenstore spells it (canonical ASCII decimal, below the reserved range), else None."""
    text = _ascii(raw)
    if text is None or not _DECIMAL_RE.fullmatch(text):
        return None
    value = int(text)
    return value if value < DOMID_FIRST_RESERVED else None


def parse_devid(raw: bytes | str | None) -> int | None:
    text = _ascii(raw)
    if text is None or not _DECIMAL_RE.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_DEVID else None


def parse_state(raw: bytes | None) -> XenbusState | None:
    """A xenbus state between Initialising (1) and Closed (6); anything else is not a state."""
    text = _ascii(raw)
    if text is None or not re.fullmatch(r"[1-6]", text):
        return None
    return XenbusState(int(text))


def parse_backend_path(path: str | bytes) -> BackendLocation | None:
    """Locate `path` in a driver domain's backend tree, or None if it is not inside one."""
    text = _ascii(path)
    if text is None:
        return None
    parts = text.split("/")
    if len(parts) < 6 or parts[:3] != ["", "local", "domain"] or parts[4] != "backend":
        return None
    driver_domid = parse_domid(parts[3])
    kind = {"vif": DeviceKind.VIF, "vbd": DeviceKind.VBD}.get(parts[5])
    if driver_domid is None or kind is None:
        return None
    guest = parse_domid(parts[6]) if len(parts) > 6 else None
    devid = parse_devid(parts[7]) if len(parts) > 7 and guest is not None else None
    return BackendLocation(driver_domid, kind, guest, devid)


def parse_guest_identity(name: bytes | None, vm_path: bytes | None) -> GuestIdentity | None:
    """Name and UUID from dom0-owned `/local/domain/<id>/{name,vm}`; None if either is unusable."""
    try:
        text_name = _text(name, "name", 256)
        vm = _text(vm_path, "vm", 256)
    except InvalidValue:
        return None
    match = _UUID_VM_RE.fullmatch(vm or "")
    if not text_name or match is None:
        return None
    return GuestIdentity(text_name, match.group(1))


def judge_device(
    driver_name: str,
    driver_domid: int,
    kind: DeviceKind,
    guest_domid: int,
    devid: int,
    guest: GuestIdentity,
    nodes: DeviceNodes,
) -> Judgement | Rejection:
    """Believe the backend entry only as far as the toolstack record supports it."""
    try:
        return _judge(driver_name, driver_domid, kind, guest_domid, devid, guest, nodes)
    except InvalidValue as exc:
        return Rejection(str(exc))


def _judge(
    driver_name: str,
    driver_domid: int,
    kind: DeviceKind,
    guest_domid: int,
    devid: int,
    guest: GuestIdentity,
    nodes: DeviceNodes,
) -> Judgement:
    if guest_domid == driver_domid:
        raise InvalidValue("a driver domain cannot be the frontend of its own backend")
    expected_backend = backend_path(driver_domid, kind, guest_domid, devid)
    expected_frontend = frontend_path(guest_domid, kind, devid)
    where = toolstack_path(guest_domid, kind, devid)
    recorded_backend = _text(nodes.toolstack.get("backend"), f"{where}/backend", 256)
    if recorded_backend is None:
        raise InvalidValue(f"no toolstack record {where}: not created by dom0's toolstack")
    if recorded_backend != expected_backend:
        raise InvalidValue(f"toolstack record {where} names backend {recorded_backend}, not this one")
    if _text(nodes.toolstack.get("frontend"), f"{where}/frontend", 256) != expected_frontend:
        raise InvalidValue(f"toolstack record {where} names another frontend")

    warnings: list[str] = []
    values = _identity_values(kind, nodes, warnings)
    params: VifParams | VbdParams = vif_params(values) if kind is DeviceKind.VIF else vbd_params(values)

    backend_state = _status(nodes.backend.get("state"), parse_state, "backend state", warnings)
    hotplug = _status(nodes.backend.get("hotplug-status"), _hotplug, "hotplug-status", warnings)
    _complain_if_differs(nodes.backend, "frontend", expected_frontend, "backend's frontend node", warnings)
    _complain_if_differs(nodes.backend, "frontend-id", str(guest_domid), "backend's frontend-id", warnings)
    guest_warnings: list[str] = []
    frontend_state = _status(nodes.frontend.get("state"), parse_state, "frontend state", guest_warnings)
    _complain_if_differs(
        nodes.frontend, "backend", expected_backend, "frontend's backend node", guest_warnings
    )
    _complain_if_differs(
        nodes.frontend, "backend-id", str(driver_domid), "frontend's backend-id", guest_warnings
    )

    frontend = Frontend(
        guest_domid=guest_domid,
        guest_name=guest.name,
        guest_uuid=guest.uuid,
        kind=kind,
        devid=devid,
        backend_name=driver_name,
        backend_domid=driver_domid,
        params=params,
        backend_state=backend_state or XenbusState.UNKNOWN,
        frontend_state=frontend_state or XenbusState.UNKNOWN,
        hotplug_status=hotplug,
    )
    return Judgement(frontend, tuple(warnings), tuple(guest_warnings))


def backend_status(state: bytes | None, hotplug: bytes | None) -> tuple[XenbusState, str | None] | None:
    """A judged backend's live status re-read on its own (see the registry): None when a value is
    malformed (the full judgement warns about it)."""
    warnings: list[str] = []
    backend_state = _status(state, parse_state, "backend state", warnings)
    hotplug_status = _status(hotplug, _hotplug, "hotplug-status", warnings)
    return None if warnings else (backend_state or XenbusState.UNKNOWN, hotplug_status)


def _identity_values(kind: DeviceKind, nodes: DeviceNodes, warnings: list[str]) -> dict[str, str]:
    """Each parameter from the most trusted source with a well-formed value: dom0's toolstack copy, else
    the driver domain's backend. A malformed value is ignored with a warning, never the whole device: one
    bad `mtu` from a driver domain must not leave a guest unrecoverable after the next crash. A driver
    domain disagreeing with the toolstack is reported; a device missing an identity value altogether
    (MAC, vdev, target) is rejected by `vif_params`/`vbd_params`."""
    keys = VIF_PARAM_KEYS if kind is DeviceKind.VIF else VBD_PARAM_KEYS
    values: dict[str, str] = {}
    for key in keys:
        complaints: list[str] = []
        trusted = _checked(nodes.toolstack.get(key), kind, key, "toolstack", complaints)
        claimed = _checked(nodes.backend.get(key), kind, key, "driver domain's", complaints)
        if trusted is None and claimed is None and complaints and key in _IDENTITY_KEYS[kind]:
            raise InvalidValue(complaints[-1])
        warnings.extend(complaints)
        if trusted is not None:
            values[key] = trusted
            if claimed is not None and claimed != trusted:
                warnings.append(f"driver domain's {key} {claimed[:64]!r} differs from the toolstack's")
        elif claimed is not None:
            values[key] = claimed
    return values


def _checked(raw: bytes | None, kind: DeviceKind, key: str, source: str, warnings: list[str]) -> str | None:
    """`raw` as text if it is a well-formed value of `key`; else None, with one warning saying why."""
    try:
        text = _text(raw, f"{source} {key}")
        if text is not None:
            check = _VIF_CHECKS.get(key) if kind is DeviceKind.VIF else _VBD_CHECKS.get(key)
            if check is not None and text != "":
                check(text)
        return text
    except InvalidValue as exc:
        warnings.append(str(exc))
        return None


def vif_params(values: Mapping[str, str]) -> VifParams:
    raw_mac = values.get("mac", "")
    try:
        if raw_mac != raw_mac.strip():  # normalise_mac forgives an operator's stray blank, not xenstore's
            raise InputError(raw_mac)
        mac = normalise_mac(raw_mac)
    except InputError:
        raise InvalidValue(f"mac {values.get('mac', '')[:64]!r} is not a MAC address") from None
    return VifParams(
        mac=mac,
        bridge=_optional(values, "bridge", _BRIDGE_RE),
        script=_optional(values, "script", _SCRIPT_RE),
        type=_optional(values, "type", _WORD_RE),
        ip=_ip_list(values.get("ip")),
        rate=_optional(values, "rate", _RATE_RE),
        mtu=_mtu(values.get("mtu")),
        vifname=_optional(values, "vifname", _IFNAME_RE),
        model=_optional(values, "model", _WORD_RE),
    )


def vbd_params(values: Mapping[str, str]) -> VbdParams:
    vdev = values.get("dev", "")
    if not _VDEV_RE.fullmatch(vdev):
        raise InvalidValue(f"vdev {vdev[:64]!r} is not a virtual disk name")
    mode = values.get("mode", "w")
    if mode not in ("r", "w"):
        raise InvalidValue(f"mode {mode[:16]!r} is neither r nor w")
    device_type = values.get("device-type", "disk")
    if device_type not in ("disk", "cdrom"):
        raise InvalidValue(f"device-type {device_type[:16]!r} is neither disk nor cdrom")
    target, disk_format = _split_params(values.get("params", ""))
    if not target and device_type != "cdrom":
        raise InvalidValue("a disk without params (target) cannot be recreated")
    return VbdParams(
        vdev=vdev,
        target=target,
        mode=mode,
        device_type=device_type,
        format=disk_format,
        backend_type=_optional(values, "type", _WORD_RE),
        script=_optional(values, "script", _SCRIPT_RE),
    )


def _split_params(params: str) -> tuple[str, str | None]:
    """libxl writes `params` as `<format>:<target>` for qdisk backends and as the bare target otherwise."""
    prefix, sep, rest = params.partition(":")
    if sep and prefix in _FORMATS:
        return rest, prefix
    return params, None


def _optional(values: Mapping[str, str], key: str, pattern: re.Pattern[str]) -> str | None:
    value = values.get(key)
    if value is None or value == "":
        return None
    if not pattern.fullmatch(value):
        raise InvalidValue(f"{key} {value[:64]!r} is malformed")
    return value


def _ip_list(value: str | None) -> str | None:
    if not value:
        return None
    for token in value.split(" "):
        try:
            ipaddress.ip_interface(token)
        except ValueError:
            raise InvalidValue(f"ip {value[:64]!r} is not a list of IP addresses") from None
    return value


def _mtu(value: str | None) -> int | None:
    if not value:
        return None
    if not _DECIMAL_RE.fullmatch(value) or not 68 <= int(value) <= 65535:
        raise InvalidValue(f"mtu {value[:16]!r} is not between 68 and 65535")
    return int(value)


def _hotplug(raw: bytes | None) -> str | None:
    text = _ascii(raw)
    return text if text is not None and _WORD_RE.fullmatch(text) else None


def _status(
    raw: bytes | None, parse: Callable[[bytes | None], S | None], what: str, warnings: list[str]
) -> S | None:
    if raw is None or raw == b"":
        return None  # not written yet (xl devd creates hotplug-status empty before the script runs)
    value = parse(raw)
    if value is None:
        warnings.append(f"{what} {raw[:32]!r} is malformed")
    return value


def _complain_if_differs(
    nodes: Mapping[str, bytes | None], key: str, expected: str, what: str, warnings: list[str]
) -> None:
    raw = nodes.get(key)
    if raw is not None and raw != expected.encode():
        warnings.append(f"{what} is {raw[:80]!r}, expected {expected!r}")


def _ascii(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    return raw if raw.isascii() else None


def _text(raw: bytes | None, what: str, limit: int = MAX_VALUE_BYTES) -> str | None:
    """A value as text, refusing NULs, control characters, invalid UTF-8 and more than `limit` bytes."""
    if raw is None:
        return None
    if len(raw) > limit:
        raise InvalidValue(f"{what} is {len(raw)} bytes long (limit {limit})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidValue(f"{what} is not valid UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidValue(f"{what} contains control characters")
    return text


def _check_pattern(key: str, pattern: re.Pattern[str]) -> Callable[[str], None]:
    def check(value: str) -> None:
        _optional({key: value}, key, pattern)

    return check


def _check_mac(value: str) -> None:
    vif_params({"mac": value})


def _check_one_of(key: str, allowed: tuple[str, ...]) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in allowed:
            raise InvalidValue(f"{key} {value[:16]!r} is not one of {', '.join(allowed)}")

    return check


def _check_ip(value: str) -> None:
    _ip_list(value)


def _check_mtu(value: str) -> None:
    _mtu(value)


_VIF_CHECKS: dict[str, Callable[[str], None]] = {
    "mac": _check_mac,
    "bridge": _check_pattern("bridge", _BRIDGE_RE),
    "script": _check_pattern("script", _SCRIPT_RE),
    "type": _check_pattern("type", _WORD_RE),
    "ip": _check_ip,
    "rate": _check_pattern("rate", _RATE_RE),
    "mtu": _check_mtu,
    "vifname": _check_pattern("vifname", _IFNAME_RE),
}
_VBD_CHECKS: dict[str, Callable[[str], None]] = {
    "dev": _check_pattern("vdev", _VDEV_RE),
    "mode": _check_one_of("mode", ("r", "w")),
    "device-type": _check_one_of("device-type", ("disk", "cdrom")),
    "type": _check_pattern("type", _WORD_RE),
    "script": _check_pattern("script", _SCRIPT_RE),
}
