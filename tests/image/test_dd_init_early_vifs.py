"""The image's init starts `vif-bridge` for a guest's vif from its own watch on the domain's vif backends
(`--early-vifs`: the watch's event paths on stdin, what it would start on stdout): only for a backend's
state, only once netback has made the interface, never for one already claimed."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")


def started(root: Path, *events: str) -> list[str]:
    assert BUSYBOX is not None
    init = resources.files("xenddd.image").joinpath("dd-init.sh")
    with resources.as_file(init) as script:
        done = subprocess.run(
            [BUSYBOX, "sh", str(script), "--early-vifs", str(root)],
            input="".join(f"{event}\n" for event in events),
            capture_output=True,
            text=True,
            check=True,
        )
    return done.stdout.splitlines()


def netback_interface(root: Path, guest: int, devid: int, ifindex: int, name: str = "") -> None:
    net = root / f"sys/bus/xen-backend/devices/vif-{guest}-{devid}/net" / (name or f"vif{guest}.{devid}")
    net.mkdir(parents=True)
    (net / "ifindex").write_text(f"{ifindex}\n")


def test_a_backends_state_with_netbacks_interface_starts_the_script_once_per_event(tmp_path: Path) -> None:
    netback_interface(tmp_path, 3, 0, 7)
    netback_interface(tmp_path, 12, 1, 9, name="web0")  # renamed by its vifname: still that device's
    assert started(
        tmp_path,
        "backend/vif",  # the watch's own first event
        "backend/vif/3/0/feature-sg",
        "backend/vif/3/0/state",
        "/local/domain/5/backend/vif/12/1/state",  # an absolute watch's event
    ) == ["backend/vif/3/0 vif3.0", "backend/vif/12/1 vif12.1"]


def test_no_interface_yet_or_a_claimed_one_starts_nothing(tmp_path: Path) -> None:
    netback_interface(tmp_path, 3, 0, 7)
    (tmp_path / "run/xenddd-dd/vif-claims/3.0.7").mkdir(parents=True)
    assert started(tmp_path, "backend/vif/3/0/state", "backend/vif/4/0/state") == []


def test_a_claim_of_the_devices_earlier_interface_does_not_hold_its_new_one(tmp_path: Path) -> None:
    netback_interface(tmp_path, 3, 0, 8)
    (tmp_path / "run/xenddd-dd/vif-claims/3.0.7").mkdir(parents=True)
    assert started(tmp_path, "backend/vif/3/0/state") == ["backend/vif/3/0 vif3.0"]


@pytest.mark.parametrize(
    "event",
    [
        "backend/vif/3/0/queue-0/state",  # deeper: not a backend's own state
        "backend/vif/3/state",
        "backend/vif/x/0/state",
        "backend/vif/3/0/hotplug-status",
        "backend/vbd/3/0/state",
    ],
)
def test_an_event_that_is_not_a_vif_backends_state_starts_nothing(tmp_path: Path, event: str) -> None:
    netback_interface(tmp_path, 3, 0, 7)
    assert started(tmp_path, event) == []
