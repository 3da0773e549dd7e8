"""The operator's declarative TOML config, parsed into frozen dataclasses or rejected with one clear line.

Everything is validated here, at the boundary, so that the rest of xenddd can trust a `Config`: an unknown
key, a wrong type, a bad BDF, a duplicate name or a `depends_on` cycle is a `ConfigError` naming the file, the
key path and, where it can be found, the line.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from xenddd.config.spec import (
    DOM0_BACKEND,
    Config,
    DiskSpec,
    DriverDomainSpec,
    PciDeviceSpec,
    Policy,
    Readiness,
    RestartPolicy,
    SavedInstance,
    Settings,
    SimGuestSpec,
    Standby,
    VifSpec,
)
from xenddd.config.toml_reader import TableReader, locate_line
from xenddd.errors import ConfigError, InputError
from xenddd.model import (
    MAX_DOMAIN_NAME,
    Bdf,
    DriverDomainKind,
    normalise_mac,
    validate_domain_name,
    xvd_devid,
)

DEFAULT_CONFIG_PATH = Path("/etc/xenddd/xenddd.toml")
# What the Debian package and scripts/install put at DEFAULT_CONFIG_PATH: no driver domain, so a freshly
# enabled service acts on nothing; the annotated example documents every key and is installed beside it
# as documentation.
INSTALLED_CONFIG_PATH = Path(__file__).with_name("default.toml")
EXAMPLE_CONFIG_PATH = Path(__file__).with_name("example.toml")

DOM0_NAME = "Domain-0"  # what libvirt and xl call dom0: never a driver domain xenddd may create or destroy
_POLICIES: tuple[Policy, ...] = ("strict", "relaxed")
LOG_LEVELS = ("debug", "info", "warning", "error")


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--config wins, then $XENDDD_CONFIG, then /etc/xenddd/xenddd.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("XENDDD_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    """Read and validate `path`; every problem is a ConfigError naming file, key path and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        config = _build(TableReader(document, ""), path)
    except ConfigError as exc:
        raise ConfigError(located(path, text, exc.key_path, str(exc))) from None
    return config


def located(path: Path, text: str, key_path: str, message: str) -> str:
    """`FILE:LINE: message` with the line of the key or, for a key left at its default, of its table;
    `FILE: message` when neither can be found in `text`."""
    line = None
    while key_path and line is None:
        line = locate_line(text, key_path)
        key_path = key_path.rpartition(".")[0]
    return f"{path}:{line}: {message}" if line else f"{path}: {message}"


def _build(root: TableReader, path: Path) -> Config:
    settings = _settings(root.table("xenddd"))
    domains = tuple(_driver_domain(t) for t in root.tables("driver_domain"))
    guests = tuple(_sim_guest(t) for t in root.table("simulation").tables("guest"))
    root.finish()
    _check_names(domains, guests)
    _check_devices(domains)
    return Config(settings, domains, guests, path)


def _settings(t: TableReader) -> Settings:
    d = Settings()
    # The environment overrides the key (tests point sysfs at a fake kernel): the key is still read and
    # validated, so a config that sets it stays valid whichever way xenddd is run.
    sysfs_key = t.path("sysfs_root", d.sysfs_root)
    sysfs_env = os.environ.get("XENDDD_SYSFS_ROOT")
    settings = Settings(
        libvirt_uri=t.string("libvirt_uri", d.libvirt_uri),
        xenstore_socket=t.path("xenstore_socket", d.xenstore_socket),
        state_dir=t.path("state_dir", d.state_dir),
        control_socket=t.path("control_socket", d.control_socket),
        control_group=t.optional_string("control_group"),
        sysfs_root=Path(sysfs_env) if sysfs_env else sysfs_key,
        log_level=t.choice("log_level", LOG_LEVELS, d.log_level),
        metrics_textfile=t.optional_path("metrics_textfile"),
        max_parallel_reattach=t.integer("max_parallel_reattach", d.max_parallel_reattach, minimum=1),
    )
    t.finish()
    return settings


def _driver_domain(t: TableReader) -> DriverDomainSpec:
    name = t.checked("name", validate_domain_name, required=True)
    if name.isdigit():
        # libxl_domain_qualifier_to_domid: `backend=domnet` and `<backenddomain name=…>` are resolved by
        # libxl, which takes a name of digits for a domid
        raise t.error("name", f"{name!r}: a driver domain's name cannot be all digits (libxl reads a domid)")
    kinds = frozenset(DriverDomainKind(k) for k in t.string_list("kind", ("network", "block"), required=True))
    virt = t.choice("type", ("pv", "hvm"), "pv")
    disks = tuple(_disk(d) for d in t.tables("disk"))
    vifs = tuple(_vif(v, name, i) for i, v in enumerate(t.tables("vif")))
    spec = DriverDomainSpec(
        name=name,
        kinds=kinds,
        virt=virt,  # type: ignore[arg-type]  # checked by choice()
        kernel=t.optional_path("kernel"),
        initrd=t.optional_path("initrd"),
        cmdline=t.string("cmdline", ""),
        memory_mib=t.integer("memory", 256, minimum=32, maximum=1 << 20),
        vcpus=t.integer("vcpus", 1, minimum=1, maximum=512),
        disks=disks,
        vifs=vifs,
        pci=tuple(_pci(p) for p in t.tables("pci")),
        restart=_restart(t.table("restart")),
        readiness=_readiness(t.table("readiness")),
        depends_on=tuple(t.string_list("depends_on", None)),
        on_crash=t.choice("on_crash", ("destroy", "preserve"), "destroy"),  # type: ignore[arg-type]
        toolstack=t.choice("toolstack", ("libvirt", "xl"), "libvirt"),  # type: ignore[arg-type]
        standby=_standby(t.table("standby")),
        saved_instance=_saved_instance(t.table("saved_instance")),
        reconnect=t.choice("reconnect", ("reattach", "in-place"), "reattach"),  # type: ignore[arg-type]
        reattach_guests=frozenset(t.checked("reattach_guests", _guest_names, default=[])),
    )
    if virt == "pv" and spec.kernel is None:
        raise t.error("kernel", "a PV driver domain needs a kernel")
    if virt == "hvm" and not disks:
        raise t.error("disk", "an HVM driver domain needs at least one [[driver_domain.disk]] to boot from")
    if not kinds:
        raise t.error("kind", "must name at least one of 'network', 'block'")
    bdfs = [p.bdf for p in spec.pci]
    if len(set(bdfs)) != len(bdfs):
        raise t.error("pci", "the same PCI device is listed twice")
    if name in spec.upstreams:
        raise t.error("vif" if name in [v.backend for v in vifs] else "disk", f"{name!r} cannot serve itself")
    if spec.toolstack != "xl" and any(disk.script for disk in disks):
        raise t.error("disk", 'libvirt\'s libxl driver cannot give a disk a hotplug script: toolstack = "xl"')
    if spec.standby.enabled:
        _check_standby(t, spec)
    if spec.saved_instance.enabled:
        _check_saved_instance(t, spec)
    if spec.reconnect == "in-place":
        _check_in_place(t, spec)
    elif spec.reattach_guests:
        raise t.error(
            "reattach_guests", 'applies only with reconnect = "in-place" (else every guest is reattached)'
        )
    t.finish()
    return spec


def _standby(t: TableReader) -> Standby:
    standby = Standby(enabled=t.boolean("enabled", False))
    t.finish()
    return standby


def _check_standby(t: TableReader, spec: DriverDomainSpec) -> None:
    """A standby runs beside the active instance and is promoted by a rename: what both would share, or
    what only a cold start could give it, is refused here rather than found at the first crash."""
    if spec.toolstack != "xl":
        raise t.error(
            "standby",
            'a standby is promoted by renaming it while it runs, which libvirt cannot: set toolstack = "xl"',
        )
    if spec.virt != "pv":
        raise t.error("standby", 'a standby must be type = "pv" (PCI devices reach it by PV hot-plug)')
    if spec.vifs:
        raise t.error("vif", "a standby would put a second vif with the same MAC on the same bridge")
    writable = [disk.vdev for disk in spec.disks if not disk.readonly]
    rooted = [
        vdev
        for vdev in writable
        for word in spec.cmdline.split()
        if re.fullmatch(rf"root=/dev/{vdev}\d*", word)
    ]
    if rooted:
        raise t.error(
            "disk",
            f"a standby boots without {rooted[0]} (writable disks move to it at a promotion), "
            "which the cmdline mounts as root: boot from an image, or make the root disk read-only",
        )
    unnamed = [vdev for vdev in writable if xvd_devid(vdev) is None]
    if unnamed:
        raise t.error(
            "disk", f"{', '.join(unnamed)}: a disk moved to a standby by hot-plug needs an xvd name"
        )
    if len(spec.standby_name) > MAX_DOMAIN_NAME:
        raise t.error("name", f"its standby's name {spec.standby_name!r} is longer than {MAX_DOMAIN_NAME}")


def _saved_instance(t: TableReader) -> SavedInstance:
    saved = SavedInstance(enabled=t.boolean("enabled", False))
    t.finish()
    return saved


def _check_saved_instance(t: TableReader, spec: DriverDomainSpec) -> None:
    """A restore brings back the memory of the moment it was saved, many times over: whatever would
    disagree with that memory, or cannot be saved, is refused here rather than found at a crash."""
    if spec.virt != "pv":
        raise t.error("saved_instance", 'a saved instance must be type = "pv" (no device model to save)')
    if spec.pci:
        raise t.error(
            "saved_instance",
            "Xen cannot save a domain with PCI devices, and xenddd does not yet hot-plug them into a "
            "restored one",
        )
    if spec.readiness.condition != "xenstore-key":
        raise t.error(
            "saved_instance", 'an instance is saved once its key says it is ready: condition = "xenstore-key"'
        )
    writable = [disk.vdev for disk in spec.disks if not disk.readonly]
    if writable:
        raise t.error(
            "disk",
            f"{writable[0]} is writable: a restored instance's memory would disagree with what the disk "
            "holds by then; boot from an image, or make the disk read-only",
        )


def _check_in_place(t: TableReader, spec: DriverDomainSpec) -> None:
    """The new instance must have the dead one's domid, which only libxl's own create can give (libvirt
    never sets it), and a promoted standby has another."""
    if spec.toolstack != "xl":
        raise t.error(
            "reconnect",
            '"in-place" needs the dead instance\'s domid, which libvirt cannot give: toolstack = "xl"',
        )
    if spec.standby.enabled:
        raise t.error("reconnect", '"in-place" keeps the domid, a promoted standby has its own: choose one')
    if spec.saved_instance.enabled:
        raise t.error(
            "reconnect", '"in-place" keeps the domid, a restored instance has a new one: choose one'
        )
    if spec.readiness.condition == "backend-initwait":
        raise t.error(
            "reconnect", '"in-place" attaches nothing to probe readiness with: use condition = "xenstore-key"'
        )


def _disk(t: TableReader) -> DiskSpec:
    disk = DiskSpec(
        path=t.path("path", None, required=True),
        vdev=t.string("vdev", "xvda"),
        format=t.choice("format", ("raw", "qcow2", "vhd"), "raw"),
        readonly=t.boolean("readonly", False),
        backend=t.checked("backend", _backend_name, default=DOM0_BACKEND),
        script=t.checked("script", _disk_script, default=None),
    )
    t.finish()
    return disk


def _disk_script(value: object) -> str | None:
    """A name under /etc/xen/scripts or an absolute path, which xl's disk syntax can carry (no comma)."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"(/[A-Za-z0-9_.+-]+)+|[A-Za-z0-9_.+-]+", value):
        raise InputError("must be a script's name under /etc/xen/scripts or its absolute path")
    return value


def _vif(t: TableReader, domain: str, index: int) -> VifSpec:
    if "mtu" in t:
        raise t.error("mtu", "libvirt's libxl driver cannot pass an MTU: set it inside the driver domain")
    given = t.optional_string("mac")
    vif = VifSpec(
        mac=t.checked("mac", normalise_mac) if given is not None else stable_mac(domain, index),
        backend=t.checked("backend", _backend_name, default=DOM0_BACKEND),
        bridge=t.optional_string("bridge"),
        ip=t.optional_string("ip"),
        script=t.optional_string("script"),
        rate_kib=t.checked("rate", _rate_kib, default=None),
        mac_generated=given is None,
    )
    t.finish()
    return vif


def stable_mac(domain: str, index: int) -> str:
    """A MAC in Xen's OUI (00:16:3e) derived from the domain's name and the vif's place: the same on every
    start, unlike libxl's random one, so the domain's own view of its uplink survives restarts."""
    digest = hashlib.sha256(f"{domain}/{index}".encode()).digest()
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in (digest[0] & 0x7F, digest[1], digest[2]))


def _guest_names(value: object) -> list[str]:
    """Domain names (a guest's name is what dom0's toolstack records, never what the guest writes); one
    name alone is a list of one, as for `kind`."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        raise InputError(f"must be a list of guest names, not {type(value).__name__}")
    return [validate_domain_name(name) for name in names]


def _backend_name(value: object) -> str:
    """`dom0`, or the name of the driver domain that serves the device (checked against the others)."""
    return DOM0_BACKEND if value == DOM0_BACKEND else validate_domain_name(value)


_RATE_RE = re.compile(r"([0-9]{1,15})([KMG]?)([Bb])/s")
_RATE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}


def _rate_kib(value: object) -> int | None:
    """xl's rate syntax without its `@interval` ("10Mb/s", "512KB/s"), as whole KiB/s for libvirt's
    `<bandwidth>`: libvirt's libxl driver always uses libxl's default 50 ms interval."""
    if value is None:
        return None
    match = _RATE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InputError(f"{value!r} is not a rate such as '10Mb/s' or '512KB/s' (no '@interval')")
    number, prefix, unit = match.groups()
    bytes_per_second = int(number) * _RATE_UNITS[prefix] // (8 if unit == "b" else 1)
    if bytes_per_second < 1024:
        raise InputError(f"{value!r} is below 1 KiB/s, the smallest rate libvirt can express")
    return round(bytes_per_second / 1024)


def _pci(t: TableReader) -> PciDeviceSpec:
    spec = PciDeviceSpec(
        bdf=t.checked("bdf", Bdf.parse, required=True),
        permissive=t.boolean("permissive", False),
        rdm_policy=t.choice("rdm_policy", _POLICIES, "strict"),  # type: ignore[arg-type]
        reset=t.choice("reset", _POLICIES, "strict"),  # type: ignore[arg-type]
    )
    t.finish()
    return spec


def _restart(t: TableReader) -> RestartPolicy:
    d = RestartPolicy()
    policy = RestartPolicy(
        max_restarts=t.integer("max_restarts", d.max_restarts, minimum=0, maximum=1000),
        window_seconds=t.number("window", d.window_seconds, minimum=1.0),
        backoff_base_seconds=t.number("backoff_base", d.backoff_base_seconds, minimum=0.0),
        backoff_cap_seconds=t.number("backoff_cap", d.backoff_cap_seconds, minimum=0.0),
        healthy_uptime_seconds=t.number("healthy_uptime", d.healthy_uptime_seconds, minimum=0.0),
    )
    if policy.backoff_cap_seconds < policy.backoff_base_seconds:
        raise t.error("backoff_cap", "must not be smaller than backoff_base")
    t.finish()
    return policy


def _readiness(t: TableReader) -> Readiness:
    d = Readiness()
    readiness = Readiness(
        condition=t.choice("condition", ("xenstore-key", "backend-initwait", "running"), d.condition),  # type: ignore[arg-type]
        key=t.checked("key", _relative_xenstore_key, default=d.key),
        value=t.string("value", d.value),
        timeout_seconds=t.number("timeout", d.timeout_seconds, minimum=0.1),
        reattach_timeout_seconds=t.number("reattach_timeout", d.reattach_timeout_seconds, minimum=0.1),
        reattach_attempts=t.integer("reattach_attempts", d.reattach_attempts, minimum=1, maximum=1000),
    )
    t.finish()
    return readiness


def _sim_guest(t: TableReader) -> SimGuestSpec:
    guest = SimGuestSpec(
        name=t.checked("name", validate_domain_name, required=True),
        vif=tuple(t.string_list("vif", None)),
        vbd=tuple(t.string_list("vbd", None)),
    )
    t.finish()
    return guest


def _relative_xenstore_key(value: object) -> str:
    if not isinstance(value, str) or not value or value.startswith("/") or "//" in value or "\0" in value:
        raise InputError(f"{value!r} is not a relative xenstore path such as 'data/ready'")
    return value


def _check_names(domains: tuple[DriverDomainSpec, ...], guests: tuple[SimGuestSpec, ...]) -> None:
    names = [d.name for d in domains]
    for key, name in [(f"driver_domain[{i}]", n) for i, n in enumerate(names)] + [
        (f"simulation.guest[{i}]", g.name) for i, g in enumerate(guests)
    ]:
        if name == DOM0_NAME:
            raise _located(f"{key}.name", f"{DOM0_NAME!r} is dom0's own name")
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _located(f"driver_domain[{i}].name", f"duplicate driver domain name {name!r}")
    for i, spec in enumerate(domains):
        if spec.standby.enabled and spec.standby_name in names:
            raise _located(
                f"driver_domain[{i}].standby", f"{spec.standby_name!r} names another driver domain"
            )
    known = set(names)
    for i, spec in enumerate(domains):
        for dep in spec.depends_on:
            if dep not in known:
                raise _located(f"driver_domain[{i}].depends_on", f"{dep!r} is not a configured driver domain")
            if dep == spec.name:
                raise _located(f"driver_domain[{i}].depends_on", f"{spec.name!r} depends on itself")
        served = [("vif", j, v.backend) for j, v in enumerate(spec.vifs)]
        served += [("disk", j, d.backend) for j, d in enumerate(spec.disks)]
        for table, j, backend in served:
            if backend != DOM0_BACKEND and backend not in known:
                raise _located(
                    f"driver_domain[{i}].{table}[{j}].backend",
                    f"{backend!r} is not a configured driver domain (or 'dom0')",
                )
    cycle = _find_cycle({d.name: d.dependencies for d in domains})
    if cycle:
        index = names.index(cycle[0])
        where = "depends_on" if cycle[1] in domains[index].depends_on else "vif/disk backend"
        raise _located(f"driver_domain[{index}].{where}", "dependency cycle: " + " -> ".join(cycle))
    for i, guest in enumerate(guests):
        for kind, backends in (("vif", guest.vif), ("vbd", guest.vbd)):
            for backend in backends:
                if backend not in known:
                    raise _located(
                        f"simulation.guest[{i}].{kind}", f"{backend!r} is not a configured driver domain"
                    )
        if guest.name in known or guest.name in [g.name for g in guests[:i]]:
            raise _located(f"simulation.guest[{i}].name", f"duplicate domain name {guest.name!r}")


def _check_devices(domains: tuple[DriverDomainSpec, ...]) -> None:
    """A PCI device can be passed through to one domain only: the second would fail to start, or take it
    from the first on a restart. A driver domain's vif MAC is unique too: two on one bridge break both."""
    macs: dict[str, str] = {}
    for i, spec in enumerate(domains):
        for j, vif in enumerate(spec.vifs):
            first = macs.setdefault(vif.mac, spec.name)
            if first != spec.name or [v.mac for v in spec.vifs].index(vif.mac) != j:
                raise _located(
                    f"driver_domain[{i}].vif[{j}].mac", f"{vif.mac} is already the MAC of a vif of {first}"
                )
    owner: dict[Bdf, str] = {}
    for i, spec in enumerate(domains):
        for j, device in enumerate(spec.pci):
            first = owner.setdefault(device.bdf, spec.name)
            if first != spec.name:
                raise _located(
                    f"driver_domain[{i}].pci[{j}].bdf", f"{device.bdf} is already passed through to {first!r}"
                )


def _find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _located(key_path: str, message: str) -> ConfigError:
    return ConfigError(f"{key_path}: {message}", key_path)
