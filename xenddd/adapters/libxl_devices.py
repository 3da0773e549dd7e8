"""Guests' vifs and disks attached and detached by libxl in long-lived helper processes
(adapters/libxl_device_server: what they run, and why not an `xl` process per call).

Every parameter libxl recorded of a device is given back: a vif as the fields of libxl's own
libxl_device_nic (its rate as the bytes per interval and interval libxl recorded, exactly), a disk in xl's
disk syntax, parsed by libxlutil as `xl block-attach` parses it.

A helper serves one request at a time: a call takes an idle one (or one that is starting) or starts
another, so that the recovery's parallel calls each have one, and gives it back when it has answered.
The daemon keeps `warm` helpers started and idle (two at most: each is a Python process with libxl
loaded, some 20 MB of dom0's memory), so that a recovery does not wait for Python and libxl to load: on
the test bed under emulation a helper started on demand took 2 to 8 s to answer, beside a driver
domain's start. A call that finds none idle starts its own, which goes when it is done.
A helper that dies, says what is not a reply or takes longer than CALL_TIMEOUT is killed, and so is one
whose call libxl failed (its context may be what failed: a xenstore connection lost, say); the call fails
with what happened, and the next call starts another.
"""

from __future__ import annotations

import json
import logging
import selectors
import subprocess
import sys
import threading
import time
from typing import Any

from xenddd.errors import XendddError
from xenddd.model import DeviceKind, VbdParams, VifParams

log = logging.getLogger(__name__)

DEVICE_SERVER = (sys.executable, "-m", "xenddd.adapters.libxl_device_server")
CALL_TIMEOUT = 120.0  # an attach took 6.3 s under emulation; allow for a slow, loaded dom0
START_TIMEOUT = 60.0  # Python and libxl loading in a busy emulated dom0
WARM_MAX = 2


class _Failed(Exception):
    """The helper itself failed (died, hung, garbled): it is killed, not reused."""


class _Helper:
    def __init__(self, command: tuple[str, ...]) -> None:
        try:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
            )
        except OSError as exc:
            raise _Failed(f"cannot start {command[-1]}: {exc}") from None
        try:
            ready = self._reply(START_TIMEOUT)
        except _Failed:
            self.kill()
            raise
        if not ready.get("ready"):
            self.kill()
            raise _Failed(str(ready.get("error", "it did not say it was ready")))

    def call(self, request: dict[str, object], timeout: float) -> dict[str, Any]:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError as exc:
            raise _Failed(f"the helper is gone ({exc})") from None
        return self._reply(timeout)

    def _reply(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise _Failed(f"no answer within {timeout:.0f} s")
        line = self._proc.stdout.readline()
        if not line:
            raise _Failed(f"the helper exited (status {self._proc.wait()})")
        try:
            reply = json.loads(line)
        except ValueError:
            raise _Failed(f"the helper said {line.strip()[:200]!r}") from None
        if not isinstance(reply, dict):
            raise _Failed(f"the helper said {line.strip()[:200]!r}")
        return reply

    def kill(self) -> None:
        self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()


class LibxlDevices:
    def __init__(
        self,
        command: tuple[str, ...] = DEVICE_SERVER,
        *,
        timeout: float = CALL_TIMEOUT,
        warm: int = 0,
    ) -> None:
        """`warm`: how many helpers to keep started and idle, from now on, in the background (the
        daemon's; a command-line call starts one when it needs one)."""
        self._command = command
        self._timeout = timeout
        self._cond = threading.Condition()
        self._idle: list[_Helper] = []
        self._starting = 0
        self._warm = min(warm, WARM_MAX)
        self._closed = False
        self._replenish()

    def attach(
        self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams, backend: str
    ) -> None:
        what = f"attaching {guest}'s {kind.value} {devid} via {backend}"
        if isinstance(params, VbdParams):
            self._call(
                {"op": "attach-disk", "guest": guest, "spec": block_attach_spec(params, backend)}, what
            )
            return
        self._call({"op": "attach-nic", "guest": guest, "nic": nic_fields(devid, params, backend)}, what)

    def attach_disk(self, domain: str, spec: str) -> None:
        """A disk given in xl's disk syntax, as `xl block-attach DOMAIN SPEC` attaches it."""
        self._call({"op": "attach-disk", "guest": domain, "spec": spec}, f"attaching {spec} to {domain}")

    def detach(self, guest: str, kind: DeviceKind, devid: int) -> None:
        """Idempotent: a device libxl no longer has is not an error (on real Xen, `xl devd` in a driver
        domain removes a device whose hotplug script it killed, frontend and all)."""
        request: dict[str, object] = (
            {"op": "detach-nic", "devid": devid}
            if kind is DeviceKind.VIF
            else {"op": "detach-disk", "vdev": str(devid)}
        )
        self._call({**request, "guest": guest}, f"detaching {guest}'s {kind.value} {devid}")

    def domains(self) -> list[dict[str, Any]]:
        """Every domain but stub domains, as libxl_dominfo's fields that `xl list -v` shows, and its name
        (adapters/libxl_device_server)."""
        listed = self._call({"op": "domains"}, "listing the domains").get("domains")
        if not isinstance(listed, list) or not all(isinstance(d, dict) for d in listed):
            raise XendddError(f"listing the domains: libxl's helper answered {listed!r:.200}")
        return listed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for helper in idle:
            helper.kill()

    def _call(self, request: dict[str, object], what: str) -> dict[str, Any]:
        try:
            helper = self._take()
        except _Failed as exc:
            raise XendddError(f"{what}: libxl's helper: {exc}") from None
        started = time.monotonic()
        try:
            reply = helper.call(request, self._timeout)
        except _Failed as exc:
            self._discard(helper)
            raise XendddError(f"{what}: libxl's helper: {exc}") from None
        if not reply.get("ok"):
            self._discard(helper)  # a context that failed once (its xenstore connection lost, say)
            raise XendddError(f"{what}: {reply.get('error', 'failed')}")
        self._give_back(helper)
        log.debug("%s took %.2f s", what, time.monotonic() - started)
        return reply

    def _take(self) -> _Helper:
        with self._cond:
            while not self._idle and self._starting and not self._closed:
                self._cond.wait()  # a warm one is loading: sooner than a new one, which would load too
            if self._closed:
                raise _Failed("closed")
            if self._idle:
                return self._idle.pop()
        return _Helper(self._command)

    def _give_back(self, helper: _Helper) -> None:
        with self._cond:
            if not self._closed and len(self._idle) < max(self._warm, 1):
                self._idle.append(helper)
                self._cond.notify_all()
                return
        helper.kill()

    def _discard(self, helper: _Helper) -> None:
        helper.kill()
        self._replenish()

    def _replenish(self) -> None:
        """Start, in the background, the helpers that `warm` keeps and that are neither idle nor starting."""
        with self._cond:
            missing = 0 if self._closed else self._warm - len(self._idle) - self._starting
            self._starting += max(missing, 0)
        for _ in range(missing):
            threading.Thread(target=self._start_one, name="xenddd-libxl-warm", daemon=True).start()

    def _start_one(self) -> None:
        try:
            helper: _Helper | None = _Helper(self._command)
        except _Failed as exc:
            helper = None
            log.warning("libxl's helper did not start (a device call starts another): %s", exc)
        with self._cond:
            self._starting -= 1
            if helper is not None and not self._closed:
                self._idle.append(helper)
                helper = None
            self._cond.notify_all()
        if helper is not None:
            helper.kill()


def nic_fields(devid: int, params: VifParams, backend: str) -> dict[str, object]:
    """libxl_device_nic's fields for the vif as libxl recorded it, devid included: without it libxl takes
    the last listed devid plus one (libxl__device_nextid), not the freed one.

    `type` is not given: only the PV half of a vif can be hot-plugged (libxl__device_nic_setdefault
    makes a hot-plugged nic `vif`); an HVM guest's emulated twin stays as the domain was built."""
    fields: dict[str, object] = {"devid": devid, "mac": params.mac, "backend_domname": backend}
    optional: tuple[tuple[str, object], ...] = (
        ("bridge", params.bridge),
        ("script", params.script),
        ("ip", params.ip),
        ("mtu", params.mtu),
        ("ifname", params.vifname),
        ("model", params.model),
    )
    fields.update((key, value) for key, value in optional if value)
    if params.rate:
        per_interval, _, usecs = params.rate.partition(",")
        if not (per_interval.isdigit() and usecs.isdigit() and int(usecs) < 2**32):
            raise XendddError(f"vif rate {params.rate!r} is not libxl's <bytes per interval>,<interval µs>")
        fields["rate_bytes_per_interval"] = int(per_interval)
        fields["rate_interval_usecs"] = int(usecs)
    return fields


def block_attach_spec(params: VbdParams, backend: str) -> str:
    """An xl disk spec (xl-disk-configuration); `target=` comes last, as that syntax requires, since a
    target (an iSCSI or DRBD name for `script=block-iscsi`/`block-drbd`) may itself contain commas."""
    items = [f"vdev={params.vdev}", f"access={'ro' if params.mode == 'r' else 'rw'}", f"backend={backend}"]
    items += [f"format={params.format}"] if params.format else []
    items += [f"backendtype={params.backend_type}"] if params.backend_type else []
    items += [f"script={params.script}"] if params.script else []
    items += [f"devtype={params.device_type}", f"target={params.target}"]
    return ",".join(items)
