"""Create a domain with a chosen domid, which `xl create` cannot do: a program of its own, run by
`XlDomains.start_with_domid` as `python3 -m xenddd.adapters.libxl_create DOMID < config.json`.

Why the domid matters: when a driver domain dies, Xen leaves each guest's end of its event channels unbound
with the dead domain's id as the only domain allowed to bind them again, and the guests' grants name that
id too (xen/common/event_channel.c evtchn_close, evtchn_bind_interdomain). A new instance with the *same*
domid can take the guests' rings over as they are (netback's and blkback's BACK_RING_ATTACH, Linux 5.5/5.6)
and the guests never see their devices go: no detach, no attach, the same interface, TCP sessions intact.

libxl has the knob (libxl_domain_create_info.domid, LIBXL_HAVE_CREATEINFO_DOMID, Xen 4.15) but xl's config
parser has no key for it, so this calls libxl through ctypes with xl's own parse of the config (the JSON
`xl -N create` prints), the domid added. libxl refuses a domid destroyed less than 60 s ago ("domain id
recently used", libxl__is_domid_recent); a driver domain's restart is exactly that reuse, so the history
is cleared first (libxl_clear_domid_history, what xen-init-dom0 does at boot). The domain is left paused:
the caller unpauses it (`xl unpause`), as xl create does after its own create call.

A process of its own because libxl takes SIGCHLD while it has children (hotplug scripts, a bootloader),
which would steal the exit statuses of the daemon's other subprocesses, and because a fault in a C library
must not take the daemon down. The config is an opaque buffer for libxl_domain_config_init/_from_json/
_dispose: its layout changes between Xen releases and Python never looks inside.
"""

from __future__ import annotations

import ctypes
import json
import sys

from xenddd.adapters.libxl_ctypes import BUFFER, LibxlError, open_context


class CreateError(Exception):
    pass


def with_domid(config_json: str, domid: int) -> str:
    """xl's JSON of a domain config with c_info.domid set; refuses anything that is not one."""
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as exc:
        raise CreateError(f"the config is not JSON: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("c_info"), dict):
        raise CreateError("the config has no c_info: not a libxl_domain_config")
    config["c_info"]["domid"] = domid
    return json.dumps(config)


def create(config_json: str, domid: int) -> int:
    try:
        libxl = open_context()
    except LibxlError as exc:
        raise CreateError(str(exc)) from None
    xl, ctx = libxl.lib, libxl.ctx
    xl.libxl_clear_domid_history.argtypes = [ctypes.c_void_p]
    xl.libxl_domain_config_init.argtypes = [ctypes.c_void_p]
    xl.libxl_domain_config_dispose.argtypes = [ctypes.c_void_p]
    xl.libxl_domain_config_from_json.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
    xl.libxl_domain_create_new.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    config = ctypes.create_string_buffer(BUFFER)
    xl.libxl_domain_config_init(config)
    try:
        rc = xl.libxl_domain_config_from_json(ctx, config, with_domid(config_json, domid).encode())
        if rc != 0:
            raise CreateError(f"libxl cannot read the config (libxl error {rc})")
        rc = xl.libxl_clear_domid_history(ctx)
        if rc != 0:
            raise CreateError(f"libxl cannot clear its domid history (libxl error {rc})")
        created = ctypes.c_uint32(domid)
        rc = xl.libxl_domain_create_new(ctx, config, ctypes.byref(created), None, None)
        if rc != 0:
            raise CreateError(f"libxl could not create domid {domid} (libxl error {rc}; its log above)")
        if created.value != domid:
            raise CreateError(f"libxl created domid {created.value}, not {domid}")
        return created.value
    finally:
        xl.libxl_domain_config_dispose(config)
        libxl.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python3 -m xenddd.adapters.libxl_create DOMID < config.json", file=sys.stderr)
        return 2
    try:
        print(create(sys.stdin.read(), int(argv[0])))
    except CreateError as exc:
        print(f"libxl_create: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
