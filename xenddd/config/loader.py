"""The operator's declarative TOML config, parsed into frozen dataclasses or rejected with one clear line.

Everything is validated here, at the boundary, so that the rest of xenddd can trust a `Config`: an unknown
key, a wrong type, a bad BDF, a duplicate name or a `depends_on` cycle is a `ConfigError` naming the file, the
key path and, where it can be found, the line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from xenddd.config.spec import (
    Config,
    DiskSpec,
    DriverDomainSpec,
    PciDeviceSpec,
    Policy,
    Readiness,
    RestartPolicy,
    Settings,
    SimGuestSpec,
)
from xenddd.config.toml_reader import TableReader, locate_line
from xenddd.errors import ConfigError, InputError
from xenddd.model import Bdf, DriverDomainKind, validate_domain_name

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
    kinds = frozenset(DriverDomainKind(k) for k in t.string_list("kind", ("network", "block"), required=True))
    virt = t.choice("type", ("pv", "hvm"), "pv")
    disks = tuple(_disk(d) for d in t.tables("disk"))
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
        pci=tuple(_pci(p) for p in t.tables("pci")),
        restart=_restart(t.table("restart")),
        readiness=_readiness(t.table("readiness")),
        depends_on=tuple(t.string_list("depends_on", None)),
        on_crash=t.choice("on_crash", ("destroy", "preserve"), "destroy"),  # type: ignore[arg-type]
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
    t.finish()
    return spec


def _disk(t: TableReader) -> DiskSpec:
    disk = DiskSpec(
        path=t.path("path", None, required=True),
        vdev=t.string("vdev", "xvda"),
        format=t.choice("format", ("raw", "qcow2", "vhd"), "raw"),
        readonly=t.boolean("readonly", False),
    )
    t.finish()
    return disk


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
    known = set(names)
    for i, spec in enumerate(domains):
        for dep in spec.depends_on:
            if dep not in known:
                raise _located(f"driver_domain[{i}].depends_on", f"{dep!r} is not a configured driver domain")
            if dep == spec.name:
                raise _located(f"driver_domain[{i}].depends_on", f"{spec.name!r} depends on itself")
    cycle = _find_cycle({d.name: d.depends_on for d in domains})
    if cycle:
        index = names.index(cycle[0])
        raise _located(f"driver_domain[{index}].depends_on", "dependency cycle: " + " -> ".join(cycle))
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
    from the first on a restart."""
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
