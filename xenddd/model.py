"""The domain model every part of xenddd speaks: PCI addresses, driver domains, frontends, xenbus states.

These types are the boundary between hostile or quirky outside data (TOML, xenstore bytes, sysfs strings,
libvirt XML) and the core. A value of one of these types has already been validated, so the core never
re-checks strings it receives from adapters.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from xenddd.errors import InputError

_BDF_RE = re.compile(r"(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-9a-fA-F])")
MAX_DOMAIN_NAME = 64
_DOMAIN_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_DOMAIN_NAME - 1}}}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


@dataclass(frozen=True, order=True)
class Bdf:
    """A PCI address, domain:bus:device.function, as Linux names devices under /sys/bus/pci/devices."""

    domain: int
    bus: int
    device: int
    function: int

    @classmethod
    def parse(cls, text: str) -> Bdf:
        """Parse `dddd:bb:dd.f` or the short `bb:dd.f` (PCI domain 0000), as `xl` accepts them."""
        match = _BDF_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InputError(f"{text!r} is not a PCI address (expected dddd:bb:dd.f or bb:dd.f, hexadecimal)")
        domain = int(match.group(1) or "0", 16)
        bus, device, function = (int(match.group(i), 16) for i in (2, 3, 4))
        if device > 0x1F:
            raise InputError(f"{text!r} is not a PCI address (device must be 00-1f)")
        if function > 7:
            raise InputError(f"{text!r} is not a PCI address (function must be 0-7)")
        return cls(domain, bus, device, function)

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.device:02x}.{self.function:x}"


def validate_domain_name(name: object) -> str:
    """Domain names as libvirt and xl both accept them; anything else cannot name a driver domain."""
    if not isinstance(name, str) or not _DOMAIN_NAME_RE.fullmatch(name):
        raise InputError(
            f"{name!r} is not a valid domain name (letters, digits, '_', '.', '-'; at most {MAX_DOMAIN_NAME})"
        )
    return name


def normalise_mac(text: str) -> str:
    """Return the MAC in the lower-case colon form libxl writes to xenstore, or raise InputError."""
    mac = text.strip().lower() if isinstance(text, str) else ""
    if not _MAC_RE.fullmatch(mac):
        raise InputError(f"{text!r} is not a MAC address (expected xx:xx:xx:xx:xx:xx)")
    return mac


_XVD = re.compile(r"xvd([a-z]+)([1-9][0-9]*)?")


def xvd_devid(vdev: str) -> int | None:
    """The devid Xen gives a PV disk named `xvd<letters>[partition]` (docs/misc/vbd-interface.txt: disks
    a..p with partitions below 16 in the xvd major's minors, others in the extended form), the number
    `xl block-list` and xenstore know it by; None for another name or one out of range."""
    found = _XVD.fullmatch(vdev)
    if found is None:
        return None
    disk = 0
    for letter in found.group(1):  # bijective base 26: a=0 ... z=25, aa=26
        disk = disk * 26 + ord(letter) - ord("a") + 1
    disk -= 1
    partition = int(found.group(2) or 0)
    if disk < 16 and partition < 16:
        return (202 << 8) | (disk << 4) | partition
    if disk < (1 << 20) and partition < 256:
        return (1 << 28) | (disk << 8) | partition
    return None


class DriverDomainKind(enum.Enum):
    """What a driver domain serves; decides which backend trees xenddd watches in it."""

    NETWORK = "network"
    BLOCK = "block"


class DeviceKind(enum.Enum):
    """The two frontend device classes xenddd reattaches, named as in xenstore paths."""

    VIF = "vif"
    VBD = "vbd"


class XenbusState(enum.IntEnum):
    """xen/include/public/io/xenbus.h; both ends of a split driver walk these in xenstore `state` nodes."""

    UNKNOWN = 0
    INITIALISING = 1
    INIT_WAIT = 2
    INITIALISED = 3
    CONNECTED = 4
    CLOSING = 5
    CLOSED = 6
    RECONFIGURING = 7
    RECONFIGURED = 8


@dataclass(frozen=True)
class VifParams:
    """What it takes to recreate a network frontend with the same identity on another backend: every key
    libxl writes for a vif (libxl__set_xenstore_nic), plus `model`, which libxl does not write (only
    libvirt's XML has it). `rate` is libxl's `<bytes per interval>,<interval in µs>`."""

    mac: str
    bridge: str | None = None
    script: str | None = None
    type: str | None = None
    ip: str | None = None
    rate: str | None = None
    mtu: int | None = None
    vifname: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class VbdParams:
    """What it takes to recreate a block frontend with the same identity on another backend.

    `backend_type` is libxl's backend (`phy`, `qdisk`, `tap`, `standalone`): a `phy` disk whose target is
    not under /dev is one a hotplug `script` (block-iscsi, block-drbd, ...) turns into a device."""

    vdev: str
    target: str
    mode: str = "w"
    device_type: str = "disk"
    format: str | None = None
    backend_type: str | None = None
    script: str | None = None


@dataclass(frozen=True)
class FrontendKey:
    """Identifies one guest device independent of which driver domain serves it (survives DD restarts)."""

    guest_uuid: str
    kind: DeviceKind
    devid: int


@dataclass(frozen=True)
class Frontend:
    """One guest device served by a driver domain, as recorded by the registry."""

    guest_domid: int
    guest_name: str
    guest_uuid: str
    kind: DeviceKind
    devid: int
    backend_name: str
    backend_domid: int
    params: VifParams | VbdParams
    backend_state: XenbusState = XenbusState.UNKNOWN
    frontend_state: XenbusState = XenbusState.UNKNOWN
    hotplug_status: str | None = None
    orphaned: bool = False
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> FrontendKey:
        return FrontendKey(self.guest_uuid, self.kind, self.devid)
