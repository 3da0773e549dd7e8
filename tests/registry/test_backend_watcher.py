"""The backend watcher turns xenstore watch events into hints: one per changed device, a domain hint when a
driver domain appears under a new domid (its watches follow it), a resync after xenstored came back."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator

import pytest

from tests.registry.libxl_nodes import add_vif, create_domain, destroy_domain
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.hints import DomainHint, Hint, ResyncHint, XenstoreHint
from xenddd.registry.backend_watcher import BackendWatcher, device_subtree
from xenddd.sim.xenstored_socket import SocketServer


@pytest.fixture
def hints() -> queue.Queue[Hint]:
    return queue.Queue()


@pytest.fixture
def watcher(xs: Xenstore, hints: queue.Queue[Hint]) -> Iterator[BackendWatcher]:
    create_domain(xs, 0, "Domain-0")
    create_domain(xs, 1, "netdd")
    create_domain(xs, 5, "guest5")
    watcher = BackendWatcher(xs, ["netdd"], hints.put)
    watcher.start()
    assert watcher.wait_armed(10)
    yield watcher
    watcher.stop()


def wait_for_hint(hints: queue.Queue[Hint], wanted: Callable[[Hint], bool]) -> Hint:
    while True:
        hint = hints.get(timeout=10)  # queue.Empty fails the test
        if wanted(hint):
            return hint


def test_a_deep_change_is_reported_as_its_device_subtree() -> None:
    assert (
        device_subtree("/local/domain/1/backend/vif/5/0/hotplug-status") == "/local/domain/1/backend/vif/5/0"
    )
    assert device_subtree("/local/domain/1/backend/vif/5") == "/local/domain/1/backend/vif/5"
    assert device_subtree("@releaseDomain") == "@releaseDomain"


def test_a_new_backend_becomes_a_hint_for_its_device(
    xs: Xenstore, watcher: BackendWatcher, hints: queue.Queue[Hint]
) -> None:
    add_vif(xs, 1, 5, 0, "00:16:3e:00:00:05")
    hint = wait_for_hint(hints, lambda h: isinstance(h, XenstoreHint) and h.path.endswith("/vif/5/0"))
    assert hint == XenstoreHint("/local/domain/1/backend/vif/5/0")


def test_watches_follow_a_driver_domain_restarted_under_a_new_domid(
    xs: Xenstore, watcher: BackendWatcher, hints: queue.Queue[Hint], xenstored: SocketServer
) -> None:
    destroy_domain(xs, 1, "unused")
    xenstored.engine.release(1)
    wait_for_hint(hints, lambda h: h == DomainHint("xenstore", "netdd", None))

    create_domain(xs, 12, "netdd")
    xenstored.engine.introduce(12)
    wait_for_hint(hints, lambda h: h == DomainHint("xenstore", "netdd", 12))
    assert watcher.driver_domids() == {"netdd": 12}
    assert "/local/domain/12/backend/vif" in xs.watched
    assert "/local/domain/1/backend/vif" not in xs.watched

    add_vif(xs, 12, 5, 0, "00:16:3e:00:00:05")
    wait_for_hint(hints, lambda h: h == XenstoreHint("/local/domain/12/backend/vif/5/0"))


def test_a_xenstored_restart_yields_a_resync_hint_and_watching_goes_on(
    xs: Xenstore, watcher: BackendWatcher, hints: queue.Queue[Hint], xenstored: SocketServer
) -> None:
    xenstored.restart()
    wait_for_hint(hints, lambda h: isinstance(h, ResyncHint))
    add_vif(xs, 1, 5, 0, "00:16:3e:00:00:05")
    wait_for_hint(hints, lambda h: h == XenstoreHint("/local/domain/1/backend/vif/5/0"))
