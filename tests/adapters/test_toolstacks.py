"""Which toolstack a call goes to: xl for the driver domains the config gives it and their standbys,
libvirt for everything else — guests' devices always, whatever owns their driver domain."""

from __future__ import annotations

from typing import Any, cast

import pytest

from tests.config.parsing import parse
from xenddd.adapters.hypervisor_api import DomainInfo, DomainState, Hypervisor
from xenddd.adapters.toolstacks import LISTING_MAX_AGE, Toolstacks, xl_owned_names
from xenddd.adapters.xl_domains import XlDomains
from xenddd.errors import XendddError
from xenddd.model import DeviceKind, VifParams

CONFIG = """
[[driver_domain]]
name = "domnet"
kind = "network"
kernel = "/k"
toolstack = "xl"
[driver_domain.standby]
enabled = true

[[driver_domain]]
name = "domstore"
kind = "block"
kernel = "/k"
"""


class Recorder:
    """Records every call; lists the domains it was given."""

    def __init__(self, listed: list[str]) -> None:
        self.calls: list[tuple[str, ...]] = []
        self._listed = listed

    def domains(self) -> list[DomainInfo]:
        self.calls.append(("domains",))
        return [DomainInfo(name, "u", i, DomainState.RUNNING, 1024, 1) for i, name in enumerate(self._listed)]

    def rename(self, old: str, new: str, domid: int | None = None) -> DomainInfo:
        self.calls.append(("rename", old, new))
        return DomainInfo(new, "u", self._listed.index(old), DomainState.RUNNING, 1024, 1)

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> None:
            self.calls.append(
                (method, *(a if isinstance(a, str) else getattr(a, "name", repr(a)) for a in args))
            )

        return call


def routed(clock: list[float] | None = None) -> tuple[Toolstacks, Recorder, Recorder]:
    config = parse(CONFIG)
    libvirt = Recorder(["Domain-0", "domstore", "web"])
    xl = Recorder(["Domain-0", "domnet", "domnet-standby", "x"])
    now = clock if clock is not None else [0.0]
    stacks = Toolstacks(
        cast(Hypervisor, libvirt),
        cast(XlDomains, xl),
        xl_owned_names(config.driver_domains),
        clock=lambda: now[0],
    )
    return stacks, libvirt, xl


def test_xl_owned_driver_domains_and_their_standbys_go_to_xl_the_rest_to_libvirt() -> None:
    stacks, libvirt, xl = routed()
    config = parse(CONFIG)
    for spec in config.driver_domains:
        stacks.define(spec)
        stacks.start(spec.name)
    stacks.rename("domnet-standby", "domnet")
    stacks.destroy("domnet-standby")
    stacks.attach("web", DeviceKind.VIF, 0, VifParams(mac="00:16:3e:00:00:01"), "domnet")
    assert [c for c in xl.calls if c != ("domains",)] == [
        ("define", "domnet"),
        ("start", "domnet"),
        ("rename", "domnet-standby", "domnet"),
        ("destroy", "domnet-standby", "None"),
    ]
    assert [c[0] for c in libvirt.calls] == ["define", "start", "attach"]


def test_the_listing_joins_libvirt_s_domains_and_only_xl_s_own_ones() -> None:
    stacks, _libvirt, _xl = routed()
    assert [d.name for d in stacks.domains()] == ["Domain-0", "domstore", "web", "domnet", "domnet-standby"]


def test_a_reloaded_config_moving_a_driver_domain_to_libvirt_moves_its_calls() -> None:
    stacks, libvirt, xl = routed()
    moved = parse(CONFIG.replace('toolstack = "xl"\n[driver_domain.standby]\nenabled = true\n', ""))
    stacks.define(moved.driver_domain("domnet"))
    stacks.start("domnet")
    assert libvirt.calls == [("define", "domnet"), ("start", "domnet")] and not xl.calls


def test_the_listing_is_kept_until_a_domain_event_a_change_made_here_or_its_age() -> None:
    clock = [100.0]
    stacks, libvirt, xl = routed(clock)

    def xl_listings() -> int:
        listings = xl.calls.count(("domains",))
        assert libvirt.calls.count(("domains",)) == listings  # libvirt's is kept alike
        return listings

    for _ in range(3):
        stacks.domains()
    assert xl_listings() == 1  # every pass of a recovery would otherwise start a process
    stacks.domains_may_have_changed()  # @releaseDomain, a lifecycle event, a resync
    stacks.domains()
    assert xl_listings() == 2
    stacks.destroy("domnet")
    stacks.domains()
    assert xl_listings() == 3
    clock[0] += LISTING_MAX_AGE
    stacks.domains()
    assert xl_listings() == 4


def test_a_listing_taken_while_a_change_was_told_is_not_kept() -> None:
    """A destroy returning on a worker while a pass runs `xl list`: that listing may still show the
    destroyed domain, and the next pass must not reuse it."""
    stacks, _libvirt, xl = routed()
    listed = xl.domains

    def listing_across_a_destroy() -> list[DomainInfo]:
        found = listed()
        stacks.domains_may_have_changed()  # the worker's destroy returned meanwhile
        return found

    xl.domains = listing_across_a_destroy  # type: ignore[method-assign]
    stacks.domains()
    xl.domains = listed  # type: ignore[method-assign]
    stacks.domains()
    assert xl.calls.count(("domains",)) == 2


def test_a_rename_brings_the_kept_listing_up_to_date_instead_of_taking_another() -> None:
    """On a promotion's path: the renamed standby is listed under the name at once, the remains that
    lost it are not, and no `xl list` runs for it."""
    stacks, _libvirt, xl = routed()
    before = {d.name: d.domid for d in stacks.domains()}
    info = stacks.rename("domnet-standby", "domnet")
    after = [(d.name, d.domid) for d in stacks.domains()]
    assert xl.calls.count(("domains",)) == 1
    assert ("domnet", before["domnet-standby"]) in after and info.domid == before["domnet-standby"]
    assert [name for name, _ in after].count("domnet") == 1 and "domnet-standby" not in dict(after)


def test_a_rename_not_in_the_kept_listing_or_refused_makes_the_next_pass_list_again() -> None:
    stacks, _libvirt, xl = routed()
    stacks.domains()
    xl.rename = lambda old, new, domid=None: (_ for _ in ()).throw(XendddError("refused"))  # type: ignore[method-assign]
    with pytest.raises(XendddError):
        stacks.rename("domnet-standby", "domnet")
    stacks.domains()
    assert xl.calls.count(("domains",)) == 2
    xl.rename = lambda old, new, domid=None: DomainInfo(new, "u", 99, DomainState.RUNNING, 1024, 1)  # type: ignore[method-assign]
    stacks.rename("domnet-standby", "domnet")  # a domid the kept listing does not have
    stacks.domains()
    assert xl.calls.count(("domains",)) == 3


def test_a_definition_made_here_is_listed_at_the_next_pass() -> None:
    """libvirt lists a defined domain, running or not: a kept listing would miss it."""
    stacks, libvirt, _xl = routed()
    stacks.domains()
    stacks.define(parse(CONFIG).driver_domain("domstore"))
    stacks.domains()
    assert libvirt.calls.count(("domains",)) == 2
