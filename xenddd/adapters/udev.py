"""Confirmation of driver binds by kernel uevents (pyudev), instead of sleeping and hoping.

A `BindWaiter` is armed *before* the sysfs write (so the event cannot slip by) and then waits, bounded,
for the kernel's `bind` uevent of that device to the expected driver. Tests feed uevents through
`QueueUevents`, the same interface pyudev's netlink monitor feeds in production.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from xenddd.model import Bdf


@dataclass(frozen=True)
class Uevent:
    action: str  # bind, unbind, add, remove, change
    bdf: str
    driver: str | None


class UeventSource(Protocol):
    @contextmanager
    def listening(self) -> Iterator[queue.Queue[Uevent]]:
        """Deliver PCI uevents into the yielded queue while the context is open."""
        ...


def wait_for_bind(events: queue.Queue[Uevent], bdf: Bdf, driver: str, timeout: float) -> bool:
    """True once `bdf` was bound to `driver`; False after `timeout` seconds without that event."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            event = events.get(timeout=remaining)
        except queue.Empty:
            return False
        if event.action == "bind" and event.bdf == str(bdf) and event.driver == driver:
            return True


class QueueUevents:
    """A uevent source fed by hand (the tests' emulated kernel), with pyudev's semantics."""

    def __init__(self) -> None:
        self._listeners: list[queue.Queue[Uevent]] = []

    def emit(self, event: Uevent) -> None:
        for listener in list(self._listeners):
            listener.put(event)

    @contextmanager
    def listening(self) -> Iterator[queue.Queue[Uevent]]:
        events: queue.Queue[Uevent] = queue.Queue()
        self._listeners.append(events)
        try:
            yield events
        finally:
            self._listeners.remove(events)


class PyudevUevents:
    """Kernel uevents of the PCI subsystem from a netlink socket (no udevd needed: source='kernel')."""

    @contextmanager
    def listening(self) -> Iterator[queue.Queue[Uevent]]:
        import pyudev

        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context, source="kernel")
        monitor.filter_by("pci")
        events: queue.Queue[Uevent] = queue.Queue()

        def forward(device: Any) -> None:
            events.put(Uevent(device.action or "", device.sys_name, device.driver))

        observer = pyudev.MonitorObserver(monitor, callback=forward, name="xenddd-uevents")
        observer.start()
        try:
            yield events
        finally:
            observer.send_stop()
