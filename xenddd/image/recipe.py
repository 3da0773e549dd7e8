"""What each kind of driver domain needs in its image: kernel modules, commands, hotplug scripts (Xen's,
and the image's own `vif-bridge`).

The commands are Debian's own binaries, not busybox applets, because Xen's hotplug scripts parse GNU
output (`block` runs sed over `losetup -a`, uses `expr index` and `stat -c %t:%T`) and `locking.sh` needs
util-linux's `flock`, which busybox lacks. Busybox only runs the init and fills names nothing else
provides; its `brctl` applet is never installed, because `vif-bridge` switches to brctl whenever `which
brctl` finds one, and the image has no bridge-utils behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("network", "block")

BASE_MODULES = ("xen-evtchn", "xen-gntdev", "xen-gntalloc", "xen-privcmd", "xenfs")
KIND_MODULES = {
    # xen-netfront: a driver domain's own uplink vif, served by another one (a filtering domain)
    "network": ("xen-netback", "bridge", "xen-pcifront", "xen-netfront"),
    # loop: the `block` script's file targets and `block-dummy`; xen-blkfront: disks dom0 gives the
    # storage domain to serve on
    "block": ("xen-blkback", "loop", "xen-blkfront", "xen-pcifront"),
}
# PCI NIC drivers a network driver domain loads when their device appears (none needs firmware)
DEFAULT_NICS = ("e1000", "e1000e", "igb", "ixgbe", "r8169", "virtio_net")

BASE_COMMANDS = (
    "busybox",
    "bash",
    "flock",
    "stat",
    "readlink",
    "expr",
    "dirname",
    "basename",
    "cut",
    "cat",
    "mkdir",
    "rm",
    "grep",
    "sed",
    "awk",
    "tr",
    "xenstore",
    "xenstore-read",
    "xenstore-write",
    "xenstore-rm",
    "xenstore-exists",
    "xenstore-list",
    "xenstore-ls",
    "xenstore-watch",
    "ip",
)
KIND_COMMANDS = {"network": ("bridge",), "block": ("losetup",)}
COMMAND_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")

SCRIPT_DIR = "/etc/xen/scripts"
BASE_SCRIPTS = ("xen-hotplug-common.sh", "xen-script-common.sh", "logging.sh", "locking.sh", "hotplugpath.sh")
KIND_SCRIPTS = {
    "network": ("vif-route", "vif-common.sh", "xen-network-common.sh"),
    "block": ("block", "block-common.sh", "block-dummy"),
}
# The image's own scripts in place of Xen's of the same name (script → its file in this package): a
# guest's vif runs `vif-bridge` unless its config names another, and Xen's took 5 to 40 s under
# emulation in a driver domain that had just booted (see vif-bridge.sh); a guest's disk runs `block`,
# whose own one serves the domain's block devices and hands anything else to Xen's (block.sh)
OWN_SCRIPTS = {"network": {"vif-bridge": "vif-bridge.sh"}, "block": {"block": "block.sh"}}
# Xen's scripts an own script of the same name hands work to, kept under another name
XEN_KEPT_AS = {"block": "block.xen"}
BASE_FILES = ("/etc/xen/xl.conf",)
# busybox applets that must not be installed: they would change what the hotplug scripts run
NEVER_APPLETS = ("brctl",)


@dataclass(frozen=True)
class Needs:
    """Everything the image of these kinds carries, by name; the builder finds each in the root."""

    kinds: tuple[str, ...]
    modules: tuple[str, ...]
    nics: tuple[str, ...]
    commands: tuple[str, ...]
    scripts: tuple[str, ...]
    files: tuple[str, ...]
    own_scripts: tuple[tuple[str, str], ...]  # (script name, its file in this package)


def needs(kinds: tuple[str, ...], nics: tuple[str, ...] | None = None) -> Needs:
    """The union of what `kinds` need, in a stable order; `nics` None means the default set (network)."""
    modules = _union(BASE_MODULES, *(KIND_MODULES[k] for k in kinds))
    commands = _union(BASE_COMMANDS, *(KIND_COMMANDS[k] for k in kinds))
    scripts = _union(BASE_SCRIPTS, *(KIND_SCRIPTS[k] for k in kinds))
    chosen = (DEFAULT_NICS if "network" in kinds else ()) if nics is None else nics
    own = tuple(dict.fromkeys(item for k in kinds for item in OWN_SCRIPTS.get(k, {}).items()))
    return Needs(tuple(k for k in KINDS if k in kinds), modules, chosen, commands, scripts, BASE_FILES, own)


def _union(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group))
