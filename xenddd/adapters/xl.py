"""`xl` for what libvirt cannot do: devices of guests that `xl` created, PCI devices libvirt would refuse
to pass through without resetting them, and Xen's capabilities.

Guests created with `xl create` are not libvirt's, so their frontends are detached and reattached with
`xl network-detach/-attach` and `xl block-detach/-attach`, which also do libxl's "cleanup frontend only"
when the backend domain is already gone. So are libvirt guests' vifs, whose devid libvirt cannot keep, and
disks with a hotplug script, which libvirt cannot express (docs/design.md).

Every parameter libxl recorded is given back in xl's own syntax (tools/xl/xl_parse.c parse_nic_config,
which accepts `devid=` and `mtu=` since before Xen 4.17; tools/libs/util/libxlu_disk_l.l): a reattached
device must be the one the guest had, not one with libxl's defaults.
"""

from __future__ import annotations

import subprocess

from xenddd.config.spec import PciDeviceSpec
from xenddd.errors import InputError, XendddError
from xenddd.model import Bdf, DeviceKind, VbdParams, VifParams

XL_TIMEOUT = 120.0  # xl network-attach took 6.3 s under emulation; allow for a slow, loaded dom0
_UINT32_MAX = 2**32 - 1
ALREADY_GONE = ("unknown device", "not found", "no such")  # what xl says of a device it does not have


class Xl:
    def __init__(self, command: str = "xl") -> None:
        self.command = command

    def iommu_available(self) -> bool:
        """`xl info` lists `pv_directio` and/or `hvm_directio` in virt_caps when Xen can pass PCI devices
        through (a host without VMX/SVM, like an emulated one, has only the PV one)."""
        try:
            output = self._run("info")
        except XendddError:
            return False
        for line in output.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "virt_caps":
                return bool({"pv_directio", "hvm_directio"} & set(value.split()))
        return False

    def attach(
        self, guest: str, kind: DeviceKind, devid: int, params: VifParams | VbdParams, backend: str
    ) -> None:
        if isinstance(params, VifParams):
            self._run("network-attach", guest, *network_attach_args(devid, params, backend))
        else:
            self._run("block-attach", guest, block_attach_spec(params, backend))

    def pci_attach(self, domain: str, pci: PciDeviceSpec) -> None:
        """libxl resets the device through pciback (do_flr) when it has a way to, and proceeds when not."""
        options = (["permissive=1"] if pci.permissive else []) + (
            ["rdm_policy=relaxed"] if pci.rdm_policy == "relaxed" else []  # libxl's default is strict
        )
        self._run("pci-attach", domain, ",".join([str(pci.bdf), *options]))

    def pci_list(self, domain: str) -> list[Bdf]:
        """The host devices passed through to `domain` (`xl pci-list`: a header, then "vslot BDF")."""
        devices = []
        for line in self._run("pci-list", domain).splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2:
                try:
                    devices.append(Bdf.parse(fields[1]))
                except InputError:
                    raise XendddError(f"xl pci-list {domain}: unexpected line {line!r}") from None
        return devices

    def detach(self, guest: str, kind: DeviceKind, devid: int) -> None:
        """Idempotent: a device that is already gone is not an error. xl says so as "Unknown device N."
        (network-detach, when `xl devd` in the driver domain removed a device whose hotplug script it
        killed, frontend included) or as not found / no such device."""
        verb = "network-detach" if kind is DeviceKind.VIF else "block-detach"
        try:
            self._run(verb, guest, str(devid))
        except XendddError as exc:
            if any(gone in str(exc).lower() for gone in ALREADY_GONE):
                return
            raise

    def _run(self, *args: str) -> str:
        try:
            result = subprocess.run(
                [self.command, *args], capture_output=True, text=True, timeout=XL_TIMEOUT, check=False
            )
        except FileNotFoundError:
            raise XendddError(f"'{self.command}' is not installed (needed for {args[0]})") from None
        except subprocess.TimeoutExpired:
            raise XendddError(f"xl {' '.join(args)} did not finish within {XL_TIMEOUT:.0f} s") from None
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise XendddError(f"xl {' '.join(args)} failed: {detail}")
        return result.stdout


def network_attach_args(devid: int, params: VifParams, backend: str) -> list[str]:
    """`xl network-attach` arguments giving back the vif as libxl recorded it, devid included: without
    `devid=` libxl takes the last listed devid plus one (libxl__device_nextid), not the freed one.

    `type` is not passed: only the PV half of a vif can be hot-plugged (libxl__device_nic_setdefault
    makes a hot-plugged nic `vif`); an HVM guest's emulated twin stays as the domain was built.
    """
    args = [f"devid={devid}", f"mac={params.mac}", f"backend={backend}"]
    optional: tuple[tuple[str, object], ...] = (
        ("bridge", params.bridge),
        ("script", params.script),
        ("ip", params.ip),
        ("mtu", params.mtu),
        ("vifname", params.vifname),
        ("model", params.model),
        ("rate", xl_rate(params.rate) if params.rate else None),
    )
    return args + [f"{key}={value}" for key, value in optional if value]


def block_attach_spec(params: VbdParams, backend: str) -> str:
    """An `xl block-attach` disk spec; `target=` comes last, as xl-disk-configuration requires, since a
    target (an iSCSI or DRBD name for `script=block-iscsi`/`block-drbd`) may itself contain commas."""
    items = [f"vdev={params.vdev}", f"access={'ro' if params.mode == 'r' else 'rw'}", f"backend={backend}"]
    items += [f"format={params.format}"] if params.format else []
    items += [f"backendtype={params.backend_type}"] if params.backend_type else []
    items += [f"script={params.script}"] if params.script else []
    items += [f"devtype={params.device_type}", f"target={params.target}"]
    return ",".join(items)


def xl_rate(rate: str) -> str:
    """libxl's recorded `<bytes per interval>,<interval µs>` as xl's `<bytes>B/s@<interval>us`.

    xl turns a rate back into bytes per interval as bytes_per_sec * interval / 10⁶, rounded down
    (libxlu_vif.c xlu_vif_parse_rate); the smallest bytes_per_sec that rounds to the recorded value is
    the ceiling. A rate no integer bytes/s reproduces exactly is refused rather than changed.
    """
    bytes_text, _, usecs_text = rate.partition(",")
    per_interval, usecs = int(bytes_text), int(usecs_text)
    if usecs <= 0:
        raise XendddError(f"vif rate {rate!r} has no interval")
    per_second = -(-per_interval * 1_000_000 // usecs)  # the ceiling, in integers
    if per_second * usecs // 1_000_000 != per_interval or not 0 < per_second <= _UINT32_MAX:
        raise XendddError(f"vif rate {rate!r} cannot be given to xl exactly (as bytes per second)")
    return f"{per_second}B/s@{usecs}us"
