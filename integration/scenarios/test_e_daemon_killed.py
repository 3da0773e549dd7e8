"""(e) the daemon is SIGKILLed in the middle of a recovery; systemd restarts it and it finishes the job."""

from __future__ import annotations

import time

from conftest import (
    domid,
    recovery_phases,
    recovery_state,
    report_mttr,
    run,
    wait_until,
    xenddd_json,
    xs_read,
)

MAC = "00:16:3e:00:00:02"


def test_sigkill_during_recovery_is_finished_by_the_restarted_daemon() -> None:
    old = domid("domnet")
    assert old is not None and domid("fe") is not None, "needs scenario c's domnet and guest"
    seen = len(xenddd_json("events")["items"])
    started = time.monotonic()
    run("xenstore-write", f"/local/domain/{old}/data/crash", "1")
    wait_until(
        lambda: any(e["event"] == "restarted" for e in xenddd_json("events")["items"][seen:]),
        300,
        "the restart of domnet",
    )
    pid_before = run("systemctl", "show", "-p", "MainPID", "xenddd").stdout
    run("systemctl", "kill", "-s", "KILL", "xenddd")
    wait_until(
        lambda: (
            run("systemctl", "is-active", "xenddd", check=False).stdout.strip() == "active"
            and run("systemctl", "show", "-p", "MainPID", "xenddd").stdout != pid_before
        ),
        300,
        "systemd to restart xenddd",
    )
    # (an instance that dies while it boots is restarted again: none may run for a moment)
    wait_until(lambda: domid("domnet") not in (None, old), 300, "a new domnet")
    guest = domid("fe")

    devices = {"fe": "vif/0", "fe2": "vif/0"}

    def reattached() -> bool:
        return xs_read(f"/local/domain/{guest}/device/vif/0/state") == "4" and xs_read(
            f"/local/domain/{guest}/device/vif/0/backend-id"
        ) == str(domid("domnet"))

    wait_until(
        reattached,
        600,
        "fe's vif reattached by the restarted daemon",
        every=2,
        explain=lambda: recovery_state(seen, devices),
    )
    elapsed = time.monotonic() - started
    assert xs_read(f"/local/domain/{guest}/device/vif/0/mac") == MAC
    xml = run("virsh", "-c", "xen:///system", "dumpxml", "fe").stdout
    assert xml.count("<interface") == 1
    report_mttr("domnet", "kernel crash, daemon SIGKILLed", recovery_phases("domnet", seen, devices), elapsed)
