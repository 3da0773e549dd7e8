"""(m, on demand) The two mechanisms the [inplace] issue named first, measured on the test bed against what
xenddd does instead (restart the driver domain as the dead one's domid: scenario (l)); the reading behind
them is docs/research/inplace-reconnect.md (Q2, Q4, experiments E1 and E5).

1. Suspend in place, then resume through libxl (ctypes: `libxl_domain_suspend_only`, then
   `libxl_domain_resume`). Cancelled (`suspend_cancel=1`) a PV guest goes on, but its frontends never
   reconnect on that path; not cancelled (`0`, the only path on which they would re-read their backend) the
   guest's kernel re-binds event channels the hypervisor still holds and must die. A throwaway guest,
   its state and console recorded either way.
2. `xl save` + `xl restore` of a guest with a vif through domnet: the pause it costs on top of any driver
   domain restart (the guest's memory copied out and back), and whether its interface survives.
XENDDD_IT_SELECT='smoke or resume_paths' XENDDD_IT_RELEASES=trixie scripts/integration -k pc
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from conftest import Console, busybox_xl_guest, create_guest, domid, run, say, wait_until
from test_c_network_dd import vif_connected_to

ON_DEMAND = True

# the libxl calls, in a process of their own (libxl owns SIGCHLD while it runs)
LIBXL_CALL = """
import ctypes, glob, sys
def lib(name):
    return ctypes.CDLL(sorted(glob.glob(f"/usr/lib/*/lib{name}.so.*"))[0], use_errno=True)
xl, toollog, libc = lib("xenlight"), lib("xentoollog"), ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
toollog.xtl_createlogger_stdiostream.restype = ctypes.c_void_p
toollog.xtl_createlogger_stdiostream.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
xl.libxl_ctx_alloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
xl.libxl_domain_suspend_only.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p]
xl.libxl_domain_resume.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p]
logger = toollog.xtl_createlogger_stdiostream(libc.fdopen(2, b"w"), 6, 0)
ctx = ctypes.c_void_p()
assert xl.libxl_ctx_alloc(ctypes.byref(ctx), 0, 0, logger) == 0
domid, cancel = int(sys.argv[1]), int(sys.argv[2])
print("suspend_only", xl.libxl_domain_suspend_only(ctx, domid, None), flush=True)
print("resume", xl.libxl_domain_resume(ctx, domid, cancel, None), flush=True)
"""


def throwaway_guest(name: str, vif: str = "") -> int:
    create_guest(name, "xl", "create", str(busybox_xl_guest(name, "", f"vif = [ {vif} ]" if vif else "")))
    guest = domid(name)
    assert guest is not None
    return guest


def state(name: str) -> str:
    """xl list's state flags of the guest (`r` running, `b` blocked, `s` shut down, `c` crashed)."""
    lines = run("xl", "list", name, check=False).stdout.splitlines()
    return lines[1].split()[4] if len(lines) > 1 else "gone"


def suspend_and_resume(name: str, cancel: int) -> tuple[str, list[str]]:
    """The guest's state 20 s after the resume, and what its console said since the suspend."""
    guest = throwaway_guest(name)
    console = Console(name).mark()
    called = subprocess.run(
        ["python3", "-c", LIBXL_CALL, str(guest), str(cancel)], capture_output=True, text=True, timeout=180
    )
    time.sleep(20)  # what the guest's kernel does once it runs again
    after, said = state(name), [ln for ln in console.lines() if ln.strip()]
    found = {"calls": called.stdout.split("\n")[:2], "libxl": called.stderr.strip().splitlines()[-3:]}
    say(f"suspend in place, resume cancel={cancel}: state {after}, {json.dumps(found)}, console {said[-12:]}")
    run("xl", "destroy", name, check=False)
    return after, said


RUNNING = ("r-----", "-b----")


def test_a_guest_suspended_in_place_survives_only_a_cancelled_resume() -> None:
    after, said = suspend_and_resume("frc", 1)
    assert after in RUNNING, (after, said)
    after, said = suspend_and_resume("frs", 0)
    died = any(word in line for line in said for word in ("BUG", "panic", "Oops"))
    assert after not in RUNNING or died, (after, said)


def test_save_and_restore_keeps_a_guest_s_vif_and_costs_a_copy_of_its_memory() -> None:
    dd = domid("domnet")
    assert dd is not None
    throwaway_guest("fsr", '"mac=00:16:3e:00:00:31,bridge=br0,backend=domnet"')
    wait_until(lambda: vif_connected_to(dd, "fsr"), 300, "fsr's vif Connected through domnet")
    wait_until(lambda: Console("fsr").find("FE: ifindex eth0="), 60, "fsr's eth0 reported")
    console = Console("fsr").mark()
    started = time.monotonic()
    run("xl", "save", "fsr", "/dev/shm/fsr.save", timeout=600)
    saved = time.monotonic() - started
    run("xl", "restore", "/dev/shm/fsr.save", timeout=600)
    wait_until(lambda: vif_connected_to(dd, "fsr"), 300, "fsr's vif Connected again after the restore")
    pause = time.monotonic() - started
    size = Path("/dev/shm/fsr.save").stat().st_size
    Path("/dev/shm/fsr.save").unlink()
    changes = [ln for ln in console.lines() if "FE: ifaces" in ln or "FE: ifindex" in ln]
    say(
        f"save/restore: saved in {saved:.1f}s, vif Connected again {pause:.1f}s after the save began, "
        f"image {size / 2**20:.0f} MiB, interface changes {changes}"
    )
    run("xl", "destroy", "fsr", check=False)
    assert not changes, changes
