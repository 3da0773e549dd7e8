"""The xl.cfg(5) file of a driver domain that `xl` owns (`toolstack = "xl"`), the counterpart of
`domain_xml` for domains libvirt owns.

It makes the same decisions as the libvirt XML, so that moving a driver domain from one toolstack to the
other changes who owns it, not what it is:
- on_poweroff destroy, on_reboot restart, on_crash as configured (`destroy`, or `preserve` to keep a
  crashed domain for debugging): xenddd owns restarts after a crash, because only it knows the guests'
  frontends must be reattached.
- Disks whose path is under /dev are `backendtype=phy`, the others QEMU's `qdisk` with their format (what
  libvirt's `<driver name='phy'>` and `<driver name='qemu'>` become in libxl). An HVM domain's `xvdX` disks
  are named `hdX`, as libvirt's IDE targets are, so that the guest sees the same disks under either.
- A vif's rate is libvirt's: `rate_kib` KiB/s at libxl's 50 ms interval, given to xl in bytes per second
  (libxlu_vif.c turns `<bytes/s>@50ms` into the same bytes per interval libvirt's libxl driver computes).
- Every PCI device is in `pci=[...]`, whatever its reset policy: `xl create` resets a device through
  pciback when it can and proceeds when it cannot, which is the relaxed policy, and the strict policy's
  refusal has no xl equivalent. Unlike libvirt, xl passes each device's rdm_policy on.
- A domain with PCI devices, or created to receive them by hot-plug later (a standby), has
  `passthrough="enabled"` and, when PV, `e820_host=1`. libxl only sets up the IOMMU context at creation
  when devices are listed, and a later `xl pci-attach` into a domain created without it fails in
  xc_assign_device; without the host's memory map a PV Linux kernel leaves no hole to map the devices in.

Values are written in double quotes, as libxlu_cfg's lexer reads them. A value that would need an escape
(a quote, a backslash, a control character) is refused rather than escaped: xenddd's own names and paths
never need one, so such a value is a mistake, not something to pass on. So is a comma inside a disk or
vif spec, where xl would split it into two settings (a disk's `target=` comes last and may hold commas).
"""

from __future__ import annotations

from xenddd.config.spec import DOM0_BACKEND, DiskSpec, DriverDomainSpec, PciDeviceSpec, VifSpec
from xenddd.errors import InputError

HEADER = (
    "# Written by xenddd from its configuration, and rewritten at each start of this domain:\n"
    "# change xenddd's configuration, not this file.\n"
)
RATE_INTERVAL = "50ms"  # libvirt's libxl driver always uses libxl's default interval
_UINT32_MAX = 2**32 - 1  # the largest number xl accepts in a rate, before its unit
_RATE_UNITS = (("", 1), ("K", 10**3), ("M", 10**6), ("G", 10**9))  # libxlu_vif.c: decimal prefixes


def xl_config(spec: DriverDomainSpec) -> str:
    settings = [
        ("name", _quoted(spec.name)),
        ("type", _quoted(spec.virt)),
        *_boot(spec),
        ("memory", str(spec.memory_mib)),
        ("vcpus", str(spec.vcpus)),
        ("on_poweroff", _quoted("destroy")),
        ("on_reboot", _quoted("restart")),
        ("on_crash", _quoted(spec.on_crash)),
        *_passthrough(spec),
    ]
    hvm = spec.virt == "hvm"
    lists = [
        ("disk", [disk_spec(disk, hvm) for disk in spec.disks]),
        ("vif", [vif_spec(vif) for vif in spec.vifs]),
        ("pci", [pci_spec(pci) for pci in spec.pci]),
    ]
    lines = [f"{key} = {value}" for key, value in settings]
    lines += [_list(key, items) for key, items in lists if items]
    return HEADER + "\n".join(lines) + "\n"


def disk_spec(disk: DiskSpec, hvm: bool) -> str:
    """xl-disk-configuration, `target=` last since everything after it is the target."""
    block = str(disk.path).startswith("/dev/")
    vdev = disk.vdev.replace("xvd", "hd", 1) if hvm and disk.vdev.startswith("xvd") else disk.vdev
    items = [("format", "raw" if block else disk.format), ("vdev", vdev)]
    items += [("access", "ro" if disk.readonly else "rw")]
    items += [("backend", disk.backend)] if disk.backend != DOM0_BACKEND else []
    items += [("backendtype", "phy" if block else "qdisk")]
    items += [("script", disk.script)] if disk.script else []
    return _spec(items) + f",target={_checked(str(disk.path))}"


def vif_spec(vif: VifSpec) -> str:
    items = [("mac", vif.mac)]
    items += [("backend", vif.backend)] if vif.backend != DOM0_BACKEND else []
    optional = (("bridge", vif.bridge), ("ip", vif.ip), ("script", vif.script))
    items += [(key, value) for key, value in optional if value]
    items += [("rate", xl_rate(vif.rate_kib))] if vif.rate_kib is not None else []
    return _spec(items)


def pci_spec(pci: PciDeviceSpec) -> str:
    """xl-pci-configuration, with the options `Xl.pci_attach` gives (strict rdm_policy is libxl's default)."""
    options = (["permissive=1"] if pci.permissive else []) + (
        ["rdm_policy=relaxed"] if pci.rdm_policy == "relaxed" else []
    )
    return ",".join([str(pci.bdf), *options])


def xl_rate(rate_kib: int) -> str:
    """`rate_kib` KiB/s in xl's syntax at libvirt's interval, in the smallest unit that keeps the number
    within the 32 bits xl accepts and the rate exact."""
    per_second = rate_kib * 1024
    for prefix, factor in _RATE_UNITS:
        if per_second % factor == 0 and 0 < per_second // factor <= _UINT32_MAX:
            return f"{per_second // factor}{prefix}B/s@{RATE_INTERVAL}"
    raise InputError(f"a vif rate of {rate_kib} KiB/s cannot be given to xl exactly")


def _boot(spec: DriverDomainSpec) -> list[tuple[str, str]]:
    """A PV domain boots the configured kernel; an HVM one its first disk, with libvirt's serial console."""
    if spec.virt == "hvm":
        return [("boot", _quoted("c")), ("serial", _quoted("pty"))]
    paths = (("kernel", spec.kernel), ("ramdisk", spec.initrd))
    boot = [(key, _quoted(str(path))) for key, path in paths if path is not None]
    return boot + ([("cmdline", _quoted(spec.cmdline))] if spec.cmdline else [])


def _passthrough(spec: DriverDomainSpec) -> list[tuple[str, str]]:
    if not spec.pci and not spec.pci_hotplug:
        return []
    return [("passthrough", _quoted("enabled"))] + ([("e820_host", "1")] if spec.virt == "pv" else [])


def _spec(items: list[tuple[str, str]]) -> str:
    for key, value in items:
        if "," in value:
            raise InputError(f"{key} {value!r}: xl would split a value with a comma in two")
    return ",".join(f"{key}={_checked(value)}" for key, value in items)


def _list(key: str, items: list[str]) -> str:
    return f"{key} = [\n" + "".join(f"    {_quoted(item)},\n" for item in items) + "]"


def _quoted(value: str) -> str:
    return f'"{_checked(value)}"'


def _checked(value: str) -> str:
    """The value as is, when xl's parser reads it back unchanged from between double quotes."""
    if any(char in "\"'\\" or not char.isprintable() for char in value):
        raise InputError(f"{value!r}: xl's config file cannot hold a quote, backslash or control character")
    return value
