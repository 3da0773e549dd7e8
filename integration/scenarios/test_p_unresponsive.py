"""(p, on demand, after (c), whose guests fe and fe2 it uses) A promoted instance that never answers:
domnet's standby is paused before domnet crashes, so the instance xenddd promotes runs no kernel code —
netback in it never probes the vifs attached to it, as happened once on real Xen to a standby whose
xenstore connection fell silent (its `vif-bridge` sat ten minutes in a read while xenddd detached and
attached again every 120 s). With `reattach_timeout` at 20 s here, xenddd destroys that instance as
`unresponsive`, judges it `crashed-again`, and recovers cold: fe's and fe2's vifs Connected through a new
domnet, neither the dead one nor the paused one. Afterwards domnet goes back to libvirt, as after (k).
XENDDD_IT_SELECT='smoke or network_dd or unresponsive' XENDDD_IT_RELEASES=trixie \
  scripts/integration -k pc
"""

from __future__ import annotations

from conftest import domid, run, say, wait_until, xenddd_json
from test_c_network_dd import vif_connected_to
from test_c_vs_peers import GUESTS
from test_k_standby import standby_ready, with_standby, xl_owned_domnet

ON_DEMAND = True

REATTACH_TIMEOUT = 20


def quick_reattach(toml: str) -> str:
    """domnet's readiness table (the first one: domnet's block comes first) with a short reattach_timeout."""
    table = "[driver_domain.readiness]\n"
    assert table in toml, toml
    return toml.replace(table, f"{table}reattach_timeout = {REATTACH_TIMEOUT}\n", 1)


def test_a_promoted_standby_that_never_probes_its_vifs_is_destroyed_and_the_recovery_goes_cold() -> None:
    with xl_owned_domnet(lambda toml: quick_reattach(with_standby(toml))) as active:
        standby = wait_until(standby_ready, 400, "domnet's standby ready")
        seen = len(xenddd_json("events")["items"])
        run("xl", "pause", "domnet-standby")
        run("xenstore-write", f"/local/domain/{active}/data/crash", "1")
        # the standby is promoted (it takes the name), found silent, destroyed; then a cold instance
        new: int = wait_until(
            lambda: (d := domid("domnet")) not in (None, active, standby) and d, 400, "a cold domnet"
        )
        for guest in GUESTS:
            wait_until(lambda g=guest: vif_connected_to(new, g), 300, f"{guest}'s vif through domnet {new}")
        events = xenddd_json("events")["items"][seen:]
        names = [(e["event"], e.get("domid")) for e in events if e.get("driver_domain") == "domnet"]
        assert "promoting" in [name for name, _ in names], names
        assert ("unresponsive", standby) in names and ("crashed-again", standby) in names, names
        assert ("recovered", new) in names, names
        say(f"unresponsive: promoted domid {standby} destroyed, recovered cold as domid {new}")
