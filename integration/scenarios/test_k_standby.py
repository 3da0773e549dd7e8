"""(k, with vs_peers) The same kernel crashes of domnet, in the same boot as (c, against the peers),
recovered by promoting a warm standby: domnet becomes xl's (`toolstack = "xl"`, libvirt's definition is
undefined) with `[driver_domain.standby]`, so a second instance, domnet-standby, runs booted beside it.
Each crash is then recovered by renaming the standby to domnet and reattaching fe's and fe2's vifs to it —
no boot on the way. Each round's MTTR (crash → both vifs Connected through the new domnet, polled as in
vs_peers) goes to mttr.jsonl with path=standby; the host compares it with the cold rounds' DD
restart-to-ready and the peers' MTTR of the same boot (results/comparison.txt).

Also checked: libvirt lists neither instance (it did not create them; `virsh list` is true by omission),
`xl list` shows both, and the guests' vifs — a libvirt guest's `<backenddomain name='domnet'/>` and an xl
guest's `backend=domnet` — reach the promoted instance by name. Afterwards domnet goes back to libvirt.
XENDDD_IT_SELECT='smoke or network_dd or vs_peers or standby' XENDDD_IT_RELEASES=trixie \
  scripts/integration -k pc
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from conftest import domid, run, say, wait_until, xs_read
from test_c_vs_peers import CONFIG, ROUNDS, VIRSH, crash_and_measure, wait_for_both_vifs

ON_DEMAND = True


def with_standby(toml: str, name: str = "domnet") -> str:
    """The driver domain's block (`name = "<name>"`) gets toolstack = "xl" and a standby table."""
    blocks = toml.split("\n\n")
    index = next(i for i, block in enumerate(blocks) if f'name = "{name}"' in block.split("\n"))
    blocks[index] += '\ntoolstack = "xl"\n\n[driver_domain.standby]\nenabled = true'
    return "\n\n".join(blocks)


def standby_ready(name: str = "domnet") -> int | None:
    standby = domid(f"{name}-standby")
    return standby if standby is not None and xs_read(f"/local/domain/{standby}/data/ready") == "1" else None


# Given the instance it replaces (None: none ran), waits until a new instance of a driver domain
# serves its guests again and returns its domid; the string says what for.
Settled = Callable[[int | None, str], int]


@contextmanager
def xl_owned(name: str, edit: Callable[[str], str], settled: Settled, back: Settled) -> Iterator[int]:
    """Driver domain `name` taken from libvirt (destroyed, undefined) and run by xenddd with the config
    `edit` makes of the installed one; yields its xl-owned domid once `settled` says it serves its guests.
    Afterwards xenddd stops, both instances go, the config is put back and `name` goes back to libvirt
    (`back` waits for that)."""
    base = CONFIG.read_text()
    old = domid(name)
    run("systemctl", "stop", "xenddd")
    run(*VIRSH, "destroy", name)
    run(*VIRSH, "undefine", name)
    CONFIG.write_text(edit(base))
    try:
        run("systemctl", "start", "xenddd")
        yield settled(old, f"xenddd's recovery onto an xl-owned {name}")
    finally:
        run("systemctl", "stop", "xenddd")
        old = domid(name)
        for instance in (f"{name}-standby", name):
            run("xl", "destroy", instance, check=False)
        CONFIG.write_text(base)
        run("systemctl", "start", "xenddd")
        back(old, f"back on libvirt's {name}")


def xl_owned_domnet(edit: Callable[[str], str] = with_standby) -> AbstractContextManager[int]:
    """domnet as xl_owned makes it, settled once both guests' vifs are Connected through it."""
    return xl_owned("domnet", edit, wait_for_both_vifs, wait_for_both_vifs)


def test_xenddd_with_a_standby_recovers_the_same_crashes_by_promoting_it() -> None:
    with xl_owned_domnet():
        wait_until(standby_ready, 400, "domnet's standby ready")
        listed = run(*VIRSH, "list", "--all", "--name").stdout.split()
        assert "domnet" not in listed and "domnet-standby" not in listed, listed
        xl_names = [line.split()[0] for line in run("xl", "list").stdout.splitlines()[1:]]
        assert {"domnet", "domnet-standby"} <= set(xl_names), xl_names
        for round_no in range(1, ROUNDS + 1):
            standby = wait_until(standby_ready, 400, f"a ready standby (round {round_no})")
            crash_and_measure("xenddd", round_no, path="standby")
            assert domid("domnet") == standby, "the standby was not the instance promoted"
        say("standby: every crash recovered by promoting the standby")
