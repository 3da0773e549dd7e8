"""The `xenddd.*` words of a driver domain's kernel command line, which configure the image's init: the twin
of `parse_words` in `dd-init.sh`, so that `xenddd image check` rejects a word before any domain boots with it
(the init would refuse it too, and never become ready). Both are tested on one table of cases.

One image serves many driver domains because their differences travel here: bridges, which interfaces
join them, addresses and a default route for a routed domain, extra modules, and whether the hotplug logs
are mirrored to the console (they die with the domain otherwise).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from xenddd.errors import InputError

# Xen's limit for a PV domain's command line, its terminating NUL included (MAX_GUEST_CMDLINE)
MAX_BYTES = 1023
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_BDF = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]")
_MODULES = re.compile(r"[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*")


@dataclass
class DriverDomainWords:
    bridges: list[str] = field(default_factory=list)
    ports: list[tuple[str, str]] = field(default_factory=list)  # (bridge, vif | mac=.. | if=.. | pci=..)
    addresses: list[tuple[str, str]] = field(default_factory=list)  # (interface, address/prefix)
    gateway: str = ""
    forward: str = "0"
    modules: list[str] = field(default_factory=list)
    console_logs: str = "0"

    def lines(self) -> list[str]:
        """What `dd-init.sh --print-config` prints for the same words."""
        return [
            *(f"bridge {b}" for b in self.bridges),
            *(f"port {b} {match}" for b, match in self.ports),
            *(f"ip {i} {a}" for i, a in self.addresses),
            *([f"gw {self.gateway}"] if self.gateway else []),
            f"forward {self.forward}",
            *(f"module {m}" for m in self.modules),
            f"console_logs {self.console_logs}",
        ]


def parse(cmdline: str) -> DriverDomainWords:
    """The words, or InputError naming every bad one (a port must name a bridge declared before it)."""
    if len(cmdline.encode()) > MAX_BYTES:
        raise InputError(f"the command line is {len(cmdline.encode())} bytes; Xen takes at most {MAX_BYTES}")
    words = DriverDomainWords()
    bad = []
    for word in cmdline.split():
        key, _, value = word.partition("=")
        if not key.startswith("xenddd."):
            continue
        if not _take(words, key.removeprefix("xenddd."), value):
            bad.append(word)
    if bad:
        raise InputError(f"bad xenddd words on the kernel command line: {'; '.join(bad)}")
    return words


def _take(words: DriverDomainWords, key: str, value: str) -> bool:
    if key == "bridge" and _NAME.fullmatch(value):
        words.bridges.append(value)
    elif key == "port" and _port_ok(words, value):
        bridge, _, match = value.partition(",")
        words.ports.append((bridge, match))
    elif key == "ip" and _address_ok(value):
        interface, _, address = value.partition(",")
        words.addresses.append((interface, address))
    elif key == "gw" and _ipv4(value):
        words.gateway = value
    elif key in ("forward", "console_logs") and value in ("0", "1"):
        setattr(words, key, value)
    elif key == "modules" and _MODULES.fullmatch(value):
        words.modules += value.split(",")
    else:
        return False
    return True


def _port_ok(words: DriverDomainWords, value: str) -> bool:
    bridge, _, match = value.partition(",")
    if bridge not in words.bridges:
        return False
    kind, _, argument = match.partition("=")
    checks = {"mac": _MAC, "if": _NAME, "pci": _BDF}
    return match == "vif" or (kind in checks and bool(checks[kind].fullmatch(argument)))


def _address_ok(value: str) -> bool:
    interface, _, address = value.partition(",")
    ip, _, prefix = address.partition("/")
    return (
        bool(_NAME.fullmatch(interface))
        and _ipv4(ip)
        and prefix.isdigit()
        and len(prefix) <= 2
        and int(prefix) <= 32
    )


def _ipv4(value: str) -> bool:
    parts = value.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        return False
    try:
        ipaddress.IPv4Address(".".join(str(int(p)) for p in parts))
    except ValueError:
        return False
    return True
