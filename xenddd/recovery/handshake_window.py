"""How many of a driver domain's reattached devices may be in their handshake at once.

Each attach starts a hotplug script in the driver domain (`vif-bridge`, `block`) under its `xl devd`,
which kills one that runs past libxl's 40 s and removes its device. A driver domain just booted on a
slow or busy host runs ten such scripts at once far slower than a few at a time: on the test bed (Xen
under QEMU) every script of a 10-vif recovery was killed, each device took four attempts and the
recovery 636 s. So attaches are paced like TCP's congestion window: unpaced until a handshake stalls or
its backend gives up, then the calls' lane width halved on each such stall and one wider for every
device that connects, unpaced again once back at the lane's width. A host fast enough never stalls and
never sees the window (nor pays for it: a paced recovery looks again at what waits on every pass).
Devices reconnected in place have no call to pace (dom0 writes their backends in one step) and all
their scripts would start at once in a driver domain that has just booted: they always keep to the window.
"""

from __future__ import annotations


class HandshakeWindow:
    def __init__(self, widest: int) -> None:
        self._widest = max(1, widest)
        self._width: dict[str, int] = {}  # driver domain → its window, while narrower than the widest

    def room(self, driver_domain: str, in_handshake: int) -> int | None:
        """How many more attaches may start now, with `in_handshake` attached and not yet Connected;
        None while the driver domain has not stalled (no limit but the lane's)."""
        width = self._width.get(driver_domain)
        return None if width is None else max(0, width - in_handshake)

    def restore_room(self, driver_domain: str, in_handshake: int) -> int:
        """How many more devices may be restored in place now: never more than the lane's width in
        their handshake at once, fewer after a stall."""
        return max(0, self._width.get(driver_domain, self._widest) - in_handshake)

    def stalled(self, driver_domain: str) -> None:
        self._width[driver_domain] = max(1, self._width.get(driver_domain, self._widest) // 2)

    def connected(self, driver_domain: str) -> None:
        width = self._width.get(driver_domain, self._widest) + 1
        if width >= self._widest:
            self._width.pop(driver_domain, None)
        else:
            self._width[driver_domain] = width
