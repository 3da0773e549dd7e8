"""XlDomains against a fake `xl`: a script that records its argv and answers each command line with canned
output in the format of Xen's tools/xl (xl_info.c list_domains, xl_utils.c find_domain)."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from xenddd.adapters.hypervisor_api import DomainState, LifecycleKind
from xenddd.adapters.libxl_devices import LibxlDevices
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xl_config import xl_config
from xenddd.adapters.xl_domains import XlDomains
from xenddd.config.spec import DiskSpec, DriverDomainSpec, PciDeviceSpec
from xenddd.errors import XendddError
from xenddd.model import Bdf, DriverDomainKind

HEADER = (
    "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    "   UUID                            Reason-Code\tSecurity Label"
)
UUID = "6b0b1f3c-2a52-4c1e-9f0e-0d1c7e6f5a41"
FAKE_XL = """#!{python}
import json, sys
from pathlib import Path

here = Path(__file__).parent
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as calls:
    calls.write(json.dumps(args) + "\\n")
script = json.loads((here / "responses.json").read_text())
queue = script.get(" ".join(args))
if not queue:
    sys.stderr.write("fake xl: nothing scripted for " + " ".join(args) + "\\n")
    sys.exit(99)
answer = queue.pop(0) if len(queue) > 1 else queue[0]
(here / "responses.json").write_text(json.dumps(script))
sys.stdout.write(answer["stdout"])
sys.stderr.write(answer["stderr"])
sys.exit(answer["rc"])
"""


def line(name: str, domid: int, flags: str, mem_mib: int = 256, seconds: float = 12.3, vcpus: int = 1) -> str:
    """One row as list_domains prints it in verbose mode (the reason code only for a shut-down domain)."""
    reason = f"{'-rscwS'.index(flags[4]):8x}" if flags[3] == "s" else f"{'-':>8}"
    return (
        f"{name:<40} {domid:5d} {mem_mib:5d} {vcpus:5d}     {flags}  {seconds:8.1f} {UUID} {reason} {'-':>16}"
    )


def listing(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def invalid(name: str) -> dict[str, Any]:
    return {"stdout": "", "stderr": f"{name} is an invalid domain identifier (rc=-6)\n", "rc": 1}


def ok(stdout: str = "") -> dict[str, Any]:
    return {"stdout": stdout, "stderr": "", "rc": 0}


class FakeXl:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "xl"
        self.path.write_text(FAKE_XL.format(python=sys.executable))
        self.path.chmod(0o755)
        self.script: dict[str, list[dict[str, Any]]] = {}
        self.answer_all()

    def answer(self, command: str, *answers: dict[str, Any]) -> None:
        """Answers to `command` in turn; the last one is repeated."""
        self.script[command] = list(answers)
        self.answer_all()

    def answer_all(self) -> None:
        (self.directory / "responses.json").write_text(json.dumps(self.script))

    @property
    def calls(self) -> list[list[str]]:
        log = self.directory / "calls.jsonl"
        return [json.loads(text) for text in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def xl(tmp_path: Path) -> FakeXl:
    (tmp_path / "bin").mkdir()
    return FakeXl(tmp_path / "bin")


def unused_xenstore(tmp_path: Path) -> Xenstore:
    """Connected at a rename's first request only: for the tests that rename nothing."""
    return Xenstore(tmp_path / "no-xenstored")


@pytest.fixture
def domains(tmp_path: Path, xl: FakeXl, xs: Xenstore) -> XlDomains:
    return XlDomains(tmp_path / "xl-config", xs, command=str(xl.path))


def spec(name: str = "domnet", pci: tuple[PciDeviceSpec, ...] = ()) -> DriverDomainSpec:
    return DriverDomainSpec(
        name,
        frozenset({DriverDomainKind.NETWORK}),
        kernel=Path("/var/lib/xenddd/dd-vmlinuz"),
        pci=pci,
        toolstack="xl",
    )


class Listed(LibxlDevices):
    """libxl's helper as the listing sees it: what it lists (starting no helper process)."""

    def __init__(self, *listed: dict[str, Any]) -> None:
        super().__init__()
        self.listed = list(listed)

    def domains(self) -> list[dict[str, Any]]:
        return self.listed


def dominfo(name: str, domid: int, **fields: Any) -> dict[str, Any]:
    """One domain as libxl's helper lists it: libxl_dominfo's JSON fields (a running one unless told)."""
    every = {"uuid": UUID, "running": True, "blocked": False, "paused": False, "shutdown": False}
    every |= {"shutdown_reason": None, "dying": False, "current_memkb": 262144, "vcpu_online": 1}
    return {"name": name, "domid": domid, **every, "cpu_time": 12_300_000_000, **fields}


def test_every_domain_libxl_lists_is_read_with_its_state(tmp_path: Path, xl: FakeXl, xs: Xenstore) -> None:
    down = {"running": False, "shutdown": True}
    lister = Listed(
        dominfo("Domain-0", 0, current_memkb=2048 * 1024, cpu_time=1234_500_000_000, vcpu_online=4),
        dominfo("domnet", 3, running=False, blocked=True),
        dominfo("paused", 5, running=False, paused=True),
        dominfo("crashed", 6, **down, shutdown_reason="crash"),
        dominfo("rebooting", 7, **down, shutdown_reason="reboot"),
        dominfo("poweroff", 8, **down, shutdown_reason="poweroff"),
        dominfo("dying", 9, running=False, dying=True),
        dominfo("crashed-dying", 10, **down, shutdown_reason="crash", dying=True),
    )
    found = XlDomains(tmp_path / "xl-config", xs, command=str(xl.path), lister=lister).domains()
    assert xl.calls == []  # no xl process
    assert [(d.name, d.domid, d.state, d.stopped) for d in found] == [
        ("Domain-0", 0, DomainState.RUNNING, None),
        ("domnet", 3, DomainState.RUNNING, None),
        ("paused", 5, DomainState.PAUSED, None),
        ("crashed", 6, DomainState.CRASHED, LifecycleKind.CRASHED),
        ("rebooting", 7, DomainState.SHUTDOWN, LifecycleKind.SHUTDOWN),
        ("poweroff", 8, DomainState.SHUTDOWN, LifecycleKind.SHUTDOWN),
        ("dying", 9, DomainState.SHUTDOWN, LifecycleKind.DESTROYED),
        ("crashed-dying", 10, DomainState.CRASHED, LifecycleKind.CRASHED),
    ]
    dom0 = found[0]
    assert (dom0.memory_kib, dom0.vcpus, dom0.cpu_time_ns, dom0.uuid) == (
        2048 * 1024,
        4,
        1234_500_000_000,
        UUID,
    )


def test_a_listed_domain_missing_a_field_is_an_error_not_a_guess(
    tmp_path: Path, xl: FakeXl, xs: Xenstore
) -> None:
    broken = dominfo("domnet", 3)
    del broken["shutdown"]
    lister = Listed(broken)
    with pytest.raises(XendddError, match="libxl's helper listed"):
        XlDomains(tmp_path / "xl-config", xs, command=str(xl.path), lister=lister).domains()


def test_one_domain_is_read_with_its_state_from_xl(domains: XlDomains, xl: FakeXl) -> None:
    long_name = "a-driver-domain-with-a-name-longer-than-forty-chars"
    xl.answer(f"list -v {long_name}", ok(listing(line(long_name, 4, "---sc-", mem_mib=512, vcpus=2))))
    found = domains.domain(long_name)
    assert found is not None and (found.name, found.domid, found.state, found.stopped) == (
        long_name,
        4,
        DomainState.CRASHED,
        LifecycleKind.CRASHED,
    )
    assert (found.memory_kib, found.vcpus, found.uuid) == (512 * 1024, 2, UUID)
    xl.answer("list -v rebooting", ok(listing(line("rebooting", 7, "---sr-"))))
    rebooting = domains.domain("rebooting")  # an "r" in the fifth place is not running
    assert rebooting is not None and rebooting.state is DomainState.SHUTDOWN


def test_an_unexpected_line_is_an_error_not_a_guess(domains: XlDomains, xl: FakeXl) -> None:
    xl.answer("list -v domnet", ok(listing("domnet 3 256 1 -b---- 1.0")))
    with pytest.raises(XendddError, match="unexpected line"):
        domains.domain("domnet")


def test_a_name_xl_does_not_know_is_no_domain(domains: XlDomains, xl: FakeXl) -> None:
    xl.answer("list -v domnet", invalid("domnet"))
    assert domains.domain("domnet") is None
    assert xl.calls == [["list", "-v", "domnet"]]


def test_a_failed_listing_of_one_domain_is_an_error(domains: XlDomains, xl: FakeXl) -> None:
    xl.answer("list -v domnet", {"stdout": "", "stderr": "libxl_domain_info failed (code -3).\n", "rc": 1})
    with pytest.raises(XendddError, match="libxl_domain_info failed"):
        domains.domain("domnet")


def test_define_replaces_the_config_atomically_and_privately(
    domains: XlDomains, xl: FakeXl, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[tuple[Path, int]] = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        replaced.append((Path(dst), stat.S_IMODE(os.stat(src).st_mode)))
        assert Path(src).parent == Path(dst).parent  # same filesystem: a rename, never a copy
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    domains.define(spec())
    path = domains.config_dir / "domnet.cfg"
    assert replaced == [(path, 0o600)]
    assert path.read_text() == xl_config(spec())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(domains.config_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in domains.config_dir.iterdir()) == ["domnet.cfg"]
    assert xl.calls == []


def test_start_creates_a_domain_that_is_not_running(domains: XlDomains, xl: FakeXl) -> None:
    domains.define(spec())
    xl.answer("list -v domnet", invalid("domnet"), ok(listing(line("domnet", 12, "r-----"))))
    cfg = str(domains.config_dir / "domnet.cfg")
    xl.answer(f"create -e {cfg}", ok())
    info = domains.start("domnet")
    assert xl.calls == [["list", "-v", "domnet"], ["create", "-e", cfg], ["list", "-v", "domnet"]]
    assert (info.name, info.domid, info.state) == ("domnet", 12, DomainState.RUNNING)


def test_start_leaves_an_alive_domain_alone(domains: XlDomains, xl: FakeXl) -> None:
    domains.define(spec())
    xl.answer("list -v domnet", ok(listing(line("domnet", 7, "-b----"))))
    assert domains.start("domnet").domid == 7
    assert xl.calls == [["list", "-v", "domnet"]]


def test_start_destroys_the_remains_of_a_crash_before_creating(domains: XlDomains, xl: FakeXl) -> None:
    domains.define(spec())
    xl.answer(
        "list -v domnet",
        ok(listing(line("domnet", 7, "---sc-"))),
        ok(listing(line("domnet", 8, "r-----"))),
    )
    cfg = str(domains.config_dir / "domnet.cfg")
    xl.answer("destroy domnet", ok())
    xl.answer(f"create -e {cfg}", ok())
    assert domains.start("domnet").domid == 8
    assert xl.calls == [
        ["list", "-v", "domnet"],
        ["destroy", "domnet"],
        ["create", "-e", cfg],
        ["list", "-v", "domnet"],
    ]


def test_start_of_a_domain_never_defined_is_refused(domains: XlDomains, xl: FakeXl) -> None:
    with pytest.raises(XendddError, match="domnet: not defined"):
        domains.start("domnet")
    assert xl.calls == []


def test_a_failed_create_says_why(domains: XlDomains, xl: FakeXl) -> None:
    domains.define(spec())
    xl.answer("list -v domnet", invalid("domnet"))
    cfg = str(domains.config_dir / "domnet.cfg")
    stderr = (
        f"Parsing config from {cfg}\n"
        "libxl: error: libxl_pci.c:1484:pci_add_dm_done: Domain 9:xc_assign_device failed: No such device\n"
        "libxl: error: libxl_domain.c:1537:domain_destroy_domid_cb: Domain 9:fail\n"
    )
    xl.answer(f"create -e {cfg}", {"stdout": "", "stderr": stderr, "rc": 3})
    with pytest.raises(XendddError, match="domnet: start failed") as caught:
        domains.start("domnet")
    assert "xc_assign_device failed" in str(caught.value)
    assert "domain_destroy_domid_cb" in str(caught.value)


def test_destroying_a_domain_that_is_gone_is_done(domains: XlDomains, xl: FakeXl) -> None:
    xl.answer("destroy domnet", invalid("domnet"))
    domains.destroy("domnet")
    assert xl.calls == [["destroy", "domnet"]]


def test_a_destroy_by_domid_names_only_that_instance_and_one_gone_is_done(
    domains: XlDomains, xl: FakeXl
) -> None:
    xl.answer("destroy 17", invalid("17"))
    domains.destroy("domnet", 17)
    assert xl.calls == [["destroy", "17"]]


def test_a_destroy_that_fails_otherwise_is_an_error(domains: XlDomains, xl: FakeXl) -> None:
    xl.answer("destroy domnet", {"stdout": "", "stderr": "destroy failed (rc=-3)\n", "rc": 1})
    with pytest.raises(XendddError, match=r"destroy failed \(rc=-3\)"):
        domains.destroy("domnet")


def test_a_rename_is_written_to_xenstore_without_an_xl_process(domains: XlDomains, xl: FakeXl) -> None:
    """What libxl's rename writes, in the daemon's own connection (adapters/domain_rename; its refusals
    are tested there): no process on a promotion's path."""
    xs = domains.xenstore
    xs.write("/local/domain/5/name", "domnet-standby")
    xs.write("/local/domain/5/vm", f"/vm/{UUID}")
    info = domains.rename("domnet-standby", "domnet")
    assert (info.name, info.domid, info.uuid) == ("domnet", 5, UUID)
    assert xs.read_many(["/local/domain/5/name", f"/vm/{UUID}/name"]) == [b"domnet", b"domnet"]
    assert xl.calls == []


def test_ensure_passthrough_attaches_only_the_missing_device(domains: XlDomains, xl: FakeXl) -> None:
    devices = (
        PciDeviceSpec(Bdf.parse("0000:00:10.0"), permissive=True),
        PciDeviceSpec(Bdf.parse("0000:03:00.1")),
    )
    xl.answer("pci-list domnet", ok("Vdev Device\n00.0 0000:03:00.1\n"))
    xl.answer("pci-attach domnet 0000:00:10.0,permissive=1", ok())
    domains.ensure_passthrough(spec(pci=devices))
    assert xl.calls == [["pci-list", "domnet"], ["pci-attach", "domnet", "0000:00:10.0,permissive=1"]]


STORE_DISKS = (
    DiskSpec(Path("/srv/dd-root.img"), vdev="xvda", readonly=True),  # the standby booted with it
    DiskSpec(Path("/dev/vdd"), vdev="xvdb"),  # the guests' data: moved at the promotion
    DiskSpec(Path("/dev/vde"), vdev="xvdc"),  # moved already, by a promotion interrupted and retried
)
XVDB = "format=raw,vdev=xvdb,access=rw,backendtype=phy,target=/dev/vdd"


class Disks(LibxlDevices):
    """libxl's helpers as the promotion uses them: each disk attach recorded, `then` run after it."""

    def __init__(self, then: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.attached: list[tuple[str, str]] = []
        self.then = then

    def attach_disk(self, domain: str, spec: str) -> None:
        self.attached.append((domain, spec))
        self.then()


def disk(xs: Xenstore, devid: int, backend_state: int, frontend_state: int, domid: int = 7) -> None:
    """A disk of domid 7 as libxl records it (/libxl/…/backend) and as both ends say how far they are."""
    backend = f"/local/domain/0/backend/vbd/{domid}/{devid}"
    xs.write(f"/libxl/{domid}/device/vbd/{devid}/backend", backend)
    xs.write(f"{backend}/state", str(backend_state))
    xs.write(f"/local/domain/{domid}/device/vbd/{devid}/state", str(frontend_state))


def storage_domain(xs: Xenstore) -> None:
    xs.write("/local/domain/7/name", "domstore")
    xs.write("/local/domain/8/name", "domstore-standby")
    disk(xs, 51712, 4, 4)
    disk(xs, 51744, 4, 4)


def test_a_promoted_standby_gets_the_writable_disks_it_lacks_and_they_connect_before_it_returns(
    tmp_path: Path, xl: FakeXl, xs: Xenstore
) -> None:
    """Read in xenstore as `xl block-list` reads it, with no process per look; returns only once both
    ends are Connected (the backend first, here)."""
    storage_domain(xs)
    steps = iter(
        [lambda: disk(xs, 51728, 1, 1), lambda: disk(xs, 51728, 4, 3), lambda: disk(xs, 51728, 4, 4)]
    )
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        next(steps)()  # the attach made by the fake xl, then the device's handshake

    disks = Disks()
    domains = XlDomains(tmp_path / "cfg", xs, command=str(xl.path), sleep=sleep, devices=disks)
    domains.ensure_passthrough(replace(spec("domstore"), disks=STORE_DISKS))
    assert disks.attached == [("domstore", XVDB)] and xl.calls == []
    assert len(slept) == 3


def test_a_moved_disk_that_never_connects_fails_the_promotion_naming_it(
    tmp_path: Path, xl: FakeXl, xs: Xenstore
) -> None:
    storage_domain(xs)
    ticks = iter(range(0, 1000, 10))
    domains = XlDomains(
        tmp_path / "cfg",
        xs,
        command=str(xl.path),
        clock=lambda: next(ticks),
        sleep=lambda _: disk(xs, 51728, 4, 3),
        devices=Disks(),
    )
    with pytest.raises(XendddError, match="domstore: its disk xvdb not Connected within 60 s"):
        domains.ensure_passthrough(replace(spec("domstore"), disks=STORE_DISKS))


def test_an_adopted_domains_own_disks_are_not_waited_for(tmp_path: Path, xl: FakeXl, xs: Xenstore) -> None:
    """Adoption runs on the daemon's loop: a domain still booting has disks not yet Connected."""
    storage_domain(xs)
    disk(xs, 51712, 1, 1)
    disk(xs, 51728, 1, 1)
    disks = Disks()
    domains = XlDomains(
        tmp_path / "cfg", xs, command=str(xl.path), sleep=lambda _: pytest.fail("waited"), devices=disks
    )
    domains.ensure_passthrough(replace(spec("domstore"), disks=STORE_DISKS))
    assert disks.attached == [] and xl.calls == []


def test_a_disk_move_into_a_domain_xenstore_does_not_know_by_that_name_is_refused(
    tmp_path: Path, xl: FakeXl, xs: Xenstore
) -> None:
    disks = Disks()
    domains = XlDomains(tmp_path / "cfg", xs, command=str(xl.path), devices=disks)
    with pytest.raises(XendddError, match="domstore: no running domain of that name"):
        domains.ensure_passthrough(replace(spec("domstore"), disks=STORE_DISKS))
    assert disks.attached == [] and xl.calls == []


def test_a_missing_xl_is_an_error_that_says_so(tmp_path: Path) -> None:
    domains = XlDomains(tmp_path / "cfg", unused_xenstore(tmp_path), command=str(tmp_path / "no-such-xl"))
    with pytest.raises(XendddError, match="is not installed"):
        domains.domains()


FAKE_LIBXL_CREATE = """#!{python}
import json, sys
from pathlib import Path

here = Path(__file__).parent
(here / "libxl-create.json").write_text(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read()}}))
answer = json.loads((here / "libxl-create-answer.json").read_text())
sys.stdout.write(answer["stdout"])
sys.stderr.write(answer["stderr"])
sys.exit(answer["rc"])
"""
DRY_RUN = '{\n    "c_info": {\n        "type": "pv",\n        "name": "domnet"\n    }\n}\n'


@pytest.fixture
def libxl_create(tmp_path: Path) -> Path:
    program = tmp_path / "bin" / "libxl-create"
    program.write_text(FAKE_LIBXL_CREATE.format(python=sys.executable))
    program.chmod(0o755)
    return program


def created(program: Path, answer: dict[str, Any]) -> XlDomains:
    (program.parent / "libxl-create-answer.json").write_text(json.dumps(answer))
    return XlDomains(
        program.parent.parent / "xl-config",
        unused_xenstore(program.parent),
        command=str(program.parent / "xl"),
        libxl_create=(str(program),),
    )


def test_start_with_domid_destroys_the_remains_then_creates_xls_parse_as_that_domid_and_unpauses(
    xl: FakeXl, libxl_create: Path
) -> None:
    domains = created(libxl_create, ok("7\n"))
    domains.define(spec())
    xl.answer(
        "list -v domnet",
        ok(listing(line("domnet", 7, "---sc-"))),
        ok(listing(line("domnet", 7, "r-----"))),
    )
    cfg = str(domains.config_dir / "domnet.cfg")
    xl.answer("destroy domnet", ok())
    xl.answer(f"-N create {cfg}", {"stdout": DRY_RUN, "stderr": f"Parsing config from {cfg}\n", "rc": 0})
    xl.answer("unpause 7", ok())
    info = domains.start_with_domid("domnet", 7)
    assert (info.domid, info.state) == (7, DomainState.RUNNING)
    assert xl.calls == [
        ["list", "-v", "domnet"],
        ["destroy", "domnet"],
        ["-N", "create", cfg],
        ["unpause", "7"],
        ["list", "-v", "domnet"],
    ]
    asked = json.loads((libxl_create.parent / "libxl-create.json").read_text())
    assert asked == {"argv": ["7"], "stdin": DRY_RUN}


def test_start_with_domid_says_what_libxl_said_when_the_create_fails(xl: FakeXl, libxl_create: Path) -> None:
    stderr = (
        "libxl: error: libxl_create.c:726:libxl__domain_make: Domain 7:domain creation fail: File exists\n"
    )
    domains = created(libxl_create, {"stdout": "", "stderr": stderr, "rc": 1})
    domains.define(spec())
    xl.answer("list -v domnet", invalid("domnet"))
    xl.answer(f"-N create {domains.config_path('domnet')}", ok(DRY_RUN))
    with pytest.raises(XendddError, match=r"domnet: starting it as domid 7 failed: .*domain creation fail"):
        domains.start_with_domid("domnet", 7)
    assert ["unpause", "7"] not in xl.calls


def test_start_with_domid_refuses_an_instance_running_as_another_domid(
    xl: FakeXl, libxl_create: Path
) -> None:
    domains = created(libxl_create, ok("7\n"))
    domains.define(spec())
    xl.answer("list -v domnet", ok(listing(line("domnet", 9, "-b----"))))
    with pytest.raises(XendddError, match="runs already, as domid 9"):
        domains.start_with_domid("domnet", 7)
    xl.answer("list -v domnet", ok(listing(line("domnet", 7, "-b----"))))
    assert domains.start_with_domid("domnet", 7).domid == 7  # the instance asked for: left alone


def test_save_hands_the_domain_to_xl_save_which_destroys_it(
    domains: XlDomains, xl: FakeXl, tmp_path: Path
) -> None:
    xl.answer(f"save domnet {tmp_path / 'domnet.save'}", ok())
    domains.save("domnet", tmp_path / "domnet.save")
    assert xl.calls == [["save", "domnet", str(tmp_path / "domnet.save")]]


def test_a_restore_runs_the_saved_domain_under_its_name(
    domains: XlDomains, xl: FakeXl, tmp_path: Path
) -> None:
    domains.define(spec())
    saved = str(tmp_path / "domnet.save")
    xl.answer("list -v domnet", invalid("domnet"), ok(listing(line("domnet", 14, "r-----"))))
    xl.answer(f"restore -e {saved}", ok())
    info = domains.restore("domnet", tmp_path / "domnet.save")
    assert xl.calls == [["list", "-v", "domnet"], ["restore", "-e", saved], ["list", "-v", "domnet"]]
    assert (info.name, info.domid) == ("domnet", 14)


def test_a_failed_save_or_restore_says_why(domains: XlDomains, xl: FakeXl, tmp_path: Path) -> None:
    domains.define(spec())
    saved = str(tmp_path / "domnet.save")
    xl.answer(f"save domnet {saved}", {"stdout": "", "stderr": "libxl: error: suspend failed\n", "rc": 1})
    with pytest.raises(XendddError, match=r"domnet: saving it failed.*suspend failed"):
        domains.save("domnet", tmp_path / "domnet.save")
    xl.answer("list -v domnet", invalid("domnet"))
    xl.answer(f"restore -e {saved}", {"stdout": "", "stderr": "xl: cannot open restore file\n", "rc": 1})
    with pytest.raises(
        XendddError, match=r"domnet: restoring .*domnet\.save failed.*cannot open restore file"
    ):
        domains.restore("domnet", tmp_path / "domnet.save")
