"""What a pass's batch of hinted xenstore paths asks the registry to re-read, per driver domain and kind."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from xenddd.model import DeviceKind
from xenddd.registry.records import parse_backend_path

STATUS_KEYS: set[str | None] = {"state", "hotplug-status"}


@dataclass
class HintedBackends:
    """What the hints name below one driver domain's backends of one kind: all of them, some guests'
    directories, some devices (guest domid, devid)."""

    everything: bool = False
    guests: set[int] = field(default_factory=set)
    devices: set[tuple[int, int]] = field(default_factory=set)
    # per device, the keys below it the hints name (None: the device's directory, or deeper)
    keys: dict[tuple[int, int], set[str | None]] = field(default_factory=dict)

    def covers(self, guest: int, devid: int) -> bool:
        return guest in self.guests or (guest, devid) in self.devices

    def status_only(self, guest: int, devid: int) -> bool:
        """Whether the hints name nothing of the device but its live status (`state`, `hotplug-status`):
        what a backend's handshake writes, several times per device in a recovery."""
        return guest not in self.guests and self.keys.get((guest, devid), {None}) <= STATUS_KEYS


def group_hinted_paths(
    paths: Iterable[str],
) -> tuple[bool, dict[tuple[int, DeviceKind], HintedBackends]]:
    """Whether a domain came or went (`@introduceDomain`, `@releaseDomain`), and the backends named,
    by (driver domid, kind); paths that name no backend are no concern of the registry."""
    domain_events = False
    batches: dict[tuple[int, DeviceKind], HintedBackends] = {}
    for path in paths:
        if path.startswith("@"):
            domain_events = True
            continue
        location = parse_backend_path(path)
        if location is None:
            continue
        batch = batches.setdefault((location.driver_domid, location.kind), HintedBackends())
        if location.guest_domid is None:
            batch.everything = True
        elif location.devid is None:
            batch.guests.add(location.guest_domid)
        else:
            device = (location.guest_domid, location.devid)
            batch.devices.add(device)
            parts = path.split("/")
            batch.keys.setdefault(device, set()).add(parts[8] if len(parts) == 9 else None)
    return domain_events, batches
