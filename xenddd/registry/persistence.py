"""The registry's entries as they are persisted in the state directory, and read back.

Only durable identity is written; live states are re-read from xenstore, never remembered. Reading
re-validates every field with the same parsers that judge xenstore input: a hand-edited or damaged file is
input too.
"""

from __future__ import annotations

from xenddd.model import DeviceKind, Frontend, VbdParams, VifParams
from xenddd.registry.records import (
    InvalidValue,
    parse_devid,
    parse_domid,
    parse_guest_identity,
    vbd_params,
    vif_params,
)


def frontend_to_json(frontend: Frontend) -> dict[str, object]:
    """The persisted form of an entry: durable identity only. Live states are re-read, never remembered."""
    params = frontend.params
    if isinstance(params, VifParams):
        param_json: dict[str, object] = {
            "mac": params.mac,
            "bridge": params.bridge,
            "script": params.script,
            "type": params.type,
            "ip": params.ip,
            "rate": params.rate,
            "mtu": params.mtu,
            "vifname": params.vifname,
            "model": params.model,
        }
    else:
        param_json = {
            "vdev": params.vdev,
            "target": params.target,
            "mode": params.mode,
            "device_type": params.device_type,
            "format": params.format,
            "backend_type": params.backend_type,
            "script": params.script,
        }
    return {
        "guest_uuid": frontend.guest_uuid,
        "guest_name": frontend.guest_name,
        "guest_domid": frontend.guest_domid,
        "kind": frontend.kind.value,
        "devid": frontend.devid,
        "backend_name": frontend.backend_name,
        "backend_domid": frontend.backend_domid,
        "orphaned": frontend.orphaned,
        "params": param_json,
        "extra": dict(frontend.extra),
    }


def frontend_from_json(item: object) -> Frontend | None:
    """An entry from the state file, re-validated (a hand-edited file is input too); None if unusable."""
    try:
        return _frontend_from_json(item)
    except (InvalidValue, KeyError, TypeError, ValueError, AttributeError):
        return None


def _frontend_from_json(item: object) -> Frontend:
    if not isinstance(item, dict):
        raise InvalidValue("not an object")
    kind = DeviceKind(item["kind"])
    raw = item["params"]
    if not isinstance(raw, dict):
        raise InvalidValue("params is not an object")
    strings = {k: v for k, v in raw.items() if isinstance(v, str)}
    params: VifParams | VbdParams
    if kind is DeviceKind.VIF:
        mtu = raw.get("mtu")
        strings.update({} if mtu is None else {"mtu": str(int(mtu))})
        params = vif_params(strings)
    else:
        strings.update({"dev": strings.get("vdev", ""), "device-type": strings.get("device_type", "disk")})
        strings.update({"type": strings["backend_type"]} if "backend_type" in strings else {})
        fmt = strings.get("format")
        strings["params"] = f"{fmt}:{strings.get('target', '')}" if fmt else strings.get("target", "")
        params = vbd_params(strings)
    guest_domid, devid, backend_domid = item["guest_domid"], item["devid"], item["backend_domid"]
    if parse_domid(str(guest_domid)) is None or parse_domid(str(backend_domid)) is None:
        raise InvalidValue("bad domid")
    if parse_devid(str(devid)) is None:
        raise InvalidValue("bad devid")
    identity = parse_guest_identity(str(item["guest_name"]).encode(), f"/vm/{item['guest_uuid']}".encode())
    backend_name = item["backend_name"]
    extra = item.get("extra", {})
    if identity is None or not isinstance(backend_name, str) or not isinstance(extra, dict):
        raise InvalidValue("bad identity")
    return Frontend(
        guest_domid=int(guest_domid),
        guest_name=identity.name,
        guest_uuid=identity.uuid,
        kind=kind,
        devid=int(devid),
        backend_name=backend_name,
        backend_domid=int(backend_domid),
        params=params,
        orphaned=bool(item.get("orphaned", False)),
        extra={str(k): str(v) for k, v in extra.items()},
    )
