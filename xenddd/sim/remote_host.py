"""The simulated host in a process of its own, as xenstored and libvirtd are processes of their own on a
real host: a daemon in this process then shares its interpreter, and its GIL, with nothing of Xen's, and a
benchmark measures xenddd rather than xenddd and the simulator taking turns on one core.

The child runs a `SimulatedHost`; the parent holds a `RemoteHost` offering the same calls and a
`RemoteToolstack`, the `Hypervisor` protocol forwarded call by call. Each calling thread gets a connection
of its own and each connection a thread in the child, so the reconciler's parallel attaches run in
parallel there, as they do in libvirtd. Lifecycle events come back on a thread of the parent waiting on
the child's event queue. An exception raised in the child is raised again in the caller, so a toolstack
failure is still a `XendddError` with its message.

The child is spawned, not forked: the parent has threads, and a fork would copy their locks in whatever
state they were in. It ends when the parent closes its lifeline (`stop`) or dies.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, cast

from xenddd.adapters.hypervisor_api import DomainInfo, Hypervisor, LifecycleEvent
from xenddd.config.spec import Config, DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, VbdParams, VifParams
from xenddd.sim.quotas import QuotaBook, QuotaHit
from xenddd.sim.socket_host import SimulatedHost

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # a spawned interpreter imports xenddd afresh, slowly on a loaded machine


class RemoteHost:
    """A `SimulatedHost` in a child process, with the calls a daemon, a test or a benchmark make of one."""

    def __init__(
        self, process: multiprocessing.process.BaseProcess, lifeline: Connection, calls: _Calls, socket: Path
    ) -> None:
        self.socket_path = socket
        self.hypervisor: Hypervisor = RemoteToolstack(calls)
        self._process, self._lifeline, self._calls = process, lifeline, calls

    @classmethod
    def start(
        cls,
        socket_path: Path,
        *,
        quotas: QuotaBook | None = None,
        cleanup_delay: float = 0.0,
        boot_delay: float = 0.0,
    ) -> RemoteHost:
        """As `SimulatedHost.start`; returns once the child's xenstored is listening on `socket_path`."""
        context = multiprocessing.get_context("spawn")
        lifeline, child_end = context.Pipe()
        authkey = os.urandom(32)
        level = logging.getLogger().getEffectiveLevel()
        process = context.Process(
            target=_serve,
            args=(child_end, authkey, Path(socket_path), quotas, cleanup_delay, boot_delay, level),
            name="sim-host",
            daemon=True,
        )
        process.start()
        child_end.close()
        if not lifeline.poll(START_TIMEOUT):
            process.kill()
            process.join()
            raise XendddError(f"the simulated host's process did not start within {START_TIMEOUT:.0f} s")
        try:
            started = lifeline.recv()
        except EOFError:
            process.join()
            raise XendddError(
                f"the simulated host's process died while starting (exit code {process.exitcode})"
            ) from None
        if isinstance(started, BaseException):
            process.join()
            raise started
        return cls(process, lifeline, _Calls(started, authkey), Path(socket_path))

    def create_guests(self, config: Config) -> None:
        self._calls.call("create_guests", config)

    def crash(self, name: str) -> None:
        self._calls.call("crash", name)

    def requests_served(self) -> int:
        return cast(int, self._calls.call("requests_served"))

    def quota_hits(self) -> list[QuotaHit]:
        return cast(list[QuotaHit], self._calls.call("quota_hits"))

    def stop(self) -> None:
        """Stop the host (its xenstored's clients see EOF), then let the child's process end."""
        with contextlib.suppress(XendddError):  # a child that died has nothing left to stop
            self._calls.call("stop")
        self._lifeline.close()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class RemoteToolstack:
    """The `Hypervisor` protocol on the simulated host in another process: each call runs there."""

    def __init__(self, calls: _Calls) -> None:
        self._calls = calls
        self._events: threading.Thread | None = None

    def domains(self) -> list[DomainInfo]:
        return cast(list[DomainInfo], self._calls.call("domains"))

    def domains_may_have_changed(self) -> None:
        """The simulated host's listing is read each time: nothing is kept."""

    def domain(self, name: str) -> DomainInfo | None:
        return cast(DomainInfo | None, self._calls.call("domain", name))

    def define(self, spec: DriverDomainSpec) -> None:
        self._calls.call("define", spec)

    def start(self, name: str) -> DomainInfo:
        return cast(DomainInfo, self._calls.call("start", name))

    def start_with_domid(self, name: str, domid: int) -> DomainInfo:
        return cast(DomainInfo, self._calls.call("start_with_domid", name, domid))

    def save(self, name: str, path: Path) -> None:
        self._calls.call("save", name, path)

    def restore(self, name: str, path: Path) -> DomainInfo:
        return cast(DomainInfo, self._calls.call("restore", name, path))

    def destroy(self, name: str, domid: int | None = None) -> None:
        self._calls.call("destroy", name, domid)

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        return cast(DomainInfo, self._calls.call("rename", old, new, domid))

    def manages(self, guest: str) -> bool:
        return cast(bool, self._calls.call("manages", guest))

    def attach(
        self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams, backend: str
    ) -> None:
        self._calls.call("attach", guest, kind, devid, params, backend)

    def detach(self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams) -> None:
        self._calls.call("detach", guest, kind, devid, params)

    def iommu_available(self) -> bool:
        return cast(bool, self._calls.call("iommu_available"))

    def ensure_passthrough(self, spec: DriverDomainSpec, disks: bool = True) -> None:
        self._calls.call("ensure_passthrough", spec, disks)

    def watch_lifecycle(
        self, handler: Callable[[LifecycleEvent], None], on_reconnect: Callable[[], None]
    ) -> None:
        """`on_reconnect` is never called: the connection `SimHypervisor.drop_connection` breaks is not
        offered across the process boundary. Events from before this call were kept for it."""

        def deliver() -> None:
            while (event := self._next_event()) is not None:
                handler(event)

        self._events = threading.Thread(target=deliver, name="sim-host-events", daemon=True)
        self._events.start()

    def close(self) -> None:
        with contextlib.suppress(XendddError):  # a child that died ended the events already
            self._calls.call("end_events")
        if self._events is not None:
            self._events.join(2.0)

    def _next_event(self) -> LifecycleEvent | None:
        try:
            return cast(LifecycleEvent | None, self._calls.call("next_event"))
        except XendddError as exc:
            log.warning("no more lifecycle events from the simulated host: %s", exc)
            return None


class _Calls:
    """Calls into the child, one connection per calling thread (opened at its first call): a call that
    waits in the child, a slow attach or the events' wait, never holds up another thread's."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self._address, self._authkey = address, authkey
        self._local = threading.local()

    def call(self, method: str, *args: object) -> Any:
        try:
            connection: Connection | None = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._local.connection = Client(self._address, authkey=self._authkey)
            connection.send((method, args))
            failed, result = connection.recv()
        except (EOFError, OSError) as exc:
            self._local.connection = None
            raise XendddError(f"the simulated host's process cannot be reached ({exc!r})") from None
        if failed:
            raise result
        return result


def _serve(
    lifeline: Connection,
    authkey: bytes,
    socket_path: Path,
    quotas: QuotaBook | None,
    cleanup_delay: float,
    boot_delay: float,
    log_level: int,
) -> None:
    """The child's main: the host, a listener for the parent's calls, then a wait on the lifeline, which
    ends when the parent closes it or dies."""
    logging.basicConfig(level=log_level, format="sim host process: %(levelname)s %(name)s: %(message)s")
    try:
        sim = SimulatedHost.start(
            socket_path, quotas=quotas, cleanup_delay=cleanup_delay, boot_delay=boot_delay
        )
    except Exception as exc:
        lifeline.send(exc)
        return
    listener = Listener(family="AF_UNIX", authkey=authkey)
    calls = _HostInChild(sim).calls()
    threading.Thread(target=_accept, args=(listener, calls), name="sim-host-accept", daemon=True).start()
    lifeline.send(listener.address)
    with contextlib.suppress(EOFError):
        lifeline.recv()
    listener.close()


class _HostInChild:
    """The child's side: what the parent may call, and the lifecycle events kept until it asks for them."""

    def __init__(self, sim: SimulatedHost) -> None:
        self._sim = sim
        self._events: queue.Queue[LifecycleEvent | None] = queue.Queue()
        # drop_connection, the only caller of on_reconnect, is not among the calls offered
        sim.hypervisor.watch_lifecycle(self._events.put, lambda: None)

    def calls(self) -> dict[str, Callable[..., object]]:
        toolstack = self._sim.hypervisor
        return {
            "domains": toolstack.domains,
            "domain": toolstack.domain,
            "define": toolstack.define,
            "start": toolstack.start,
            "start_with_domid": toolstack.start_with_domid,
            "save": toolstack.save,
            "restore": toolstack.restore,
            "destroy": toolstack.destroy,
            "rename": toolstack.rename,
            "manages": toolstack.manages,
            "attach": toolstack.attach,
            "detach": toolstack.detach,
            "iommu_available": toolstack.iommu_available,
            "ensure_passthrough": toolstack.ensure_passthrough,
            "next_event": self._events.get,
            "end_events": self.end_events,
            "create_guests": self._sim.create_guests,
            "crash": self._sim.crash,
            "requests_served": self._sim.requests_served,
            "quota_hits": self._sim.quota_hits,
            "stop": self.stop,
        }

    def end_events(self) -> None:
        self._events.put(None)

    def stop(self) -> None:
        self._sim.hypervisor.close()
        self._sim.stop()
        self.end_events()


def _accept(listener: Listener, calls: Mapping[str, Callable[..., object]]) -> None:
    while True:
        try:
            connection = listener.accept()
        except multiprocessing.AuthenticationError:
            log.warning("a connection to the simulated host's calls without its key was refused")
            continue
        except OSError:  # the listener closed: the process is ending
            return
        threading.Thread(target=_answer, args=(connection, calls), name="sim-host-calls", daemon=True).start()


def _answer(connection: Connection, calls: Mapping[str, Callable[..., object]]) -> None:
    """One thread of the parent's calls, one at a time, until that thread or the parent is gone."""
    with connection:
        while True:
            try:
                method, args = connection.recv()
            except (EOFError, OSError):
                return
            try:
                reply: tuple[bool, object] = (False, calls[method](*args))
            except Exception as exc:
                reply = (True, exc)
            try:
                connection.send(reply)
            except Exception as exc:  # an unpicklable result or error must not leave the caller waiting
                connection.send((True, XendddError(f"{method}: its answer cannot be sent back ({exc!r})")))
