"""`destroy` and `create` through the daemon: a planned stop keeps track of the frontends it detached."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from tests.cli.conftest import wait_for
from xenddd.cli.main import cli
from xenddd.service.daemon import Daemon
from xenddd.sim.socket_host import SimulatedHost


def xenddd(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def frontends_of(config: Path) -> int:
    _, out, _ = xenddd(config, "--json", "list")
    return int(json.loads(out)["items"][0]["frontends"])


def test_create_after_a_forced_destroy_attaches_the_detached_frontends_again(
    running: tuple[Path, SimulatedHost, Daemon],
) -> None:
    config, sim, daemon = running
    guest = sim.host.create_guest("web", vif=("domnet",))
    deadline = time.monotonic() + 20
    while frontends_of(config) != 1:
        assert time.monotonic() < deadline, "the registry never saw web's vif"
        time.sleep(0.05)

    code, _, err = xenddd(config, "destroy", "domnet")
    assert (code, err) == (
        2,
        "xenddd: domnet serves 1 frontend(s) of web; nothing changed: detach them first or use --force\n",
    )
    assert xenddd(config, "destroy", "--force", "domnet")[:2] == (
        0,
        "domnet: destroyed (1 frontend(s) detached)\n",
    )
    assert not [d for d in guest.devices if d.kind == "vif"]

    code, out, _ = xenddd(config, "create", "domnet")
    assert code == 0 and "1 frontend(s) detached by `destroy` are attached again" in out
    wait_for(daemon, "recovered")
    deadline = time.monotonic() + 20
    while frontends_of(config) != 1:
        assert time.monotonic() < deadline, "web's vif was not attached again"
        time.sleep(0.05)


def test_destroying_a_stopped_driver_domain_says_so_and_changes_nothing(
    running: tuple[Path, SimulatedHost, Daemon],
) -> None:
    config, _sim, daemon = running
    assert xenddd(config, "destroy", "domnet")[0] == 0
    code, out, err = xenddd(config, "destroy", "domnet")
    assert (code, out, err) == (2, "", "xenddd: domnet is not running; nothing changed\n")
    assert [r["event"] for r in daemon.history.since()].count("destroyed") == 1


def test_create_without_the_daemon_says_the_frontends_destroy_detached_stay_detached(tmp_path: Path) -> None:
    from xenddd.model import DeviceKind, Frontend, VifParams
    from xenddd.recovery.intent import DomainRecord, IntentLog

    config = tmp_path / "xenddd.toml"
    config.write_text(
        f'[xenddd]\nlibvirt_uri = "test:///default"\nstate_dir = "{tmp_path}/state"\n'
        f'control_socket = "{tmp_path}/control.sock"\n'
        '[[driver_domain]]\nname = "domnet"\nkind = "network"\nkernel = "/boot/dd"\n'
    )
    vif = Frontend(
        7,
        "web",
        "0f0e0d0c-0b0a-0908-0706-050403020100",
        DeviceKind.VIF,
        0,
        "domnet",
        3,
        VifParams(mac="00:16:3e:00:00:01"),
    )
    IntentLog(tmp_path / "state").save(
        DomainRecord("domnet", stopped_by_request=True, detached_by_destroy=[vif])
    )

    code, out, _ = xenddd(config, "create", "domnet")

    assert code == 0
    assert out.endswith(
        "; the 1 frontend(s) `destroy` detached stay detached until the daemon runs: "
        "then `xenddd create domnet` attaches them again\n"
    )
