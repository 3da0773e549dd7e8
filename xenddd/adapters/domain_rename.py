"""A running domain's rename, as libxl_domain_rename makes it (tools/libs/light/libxl_domain.c,
libxl__domain_rename), done in the daemon's own xenstore connection rather than by an `xl rename` process.

Why not the process: the rename is on a standby promotion's path, between the dead instance's name being
freed and the guests' attaches, and under emulation an `xl` process costs dom0 0.5 to 0.9 s before its first
request (on the test bed the remains' name was gone 0.76 s after the death, xl's write came at 1.67 s),
where this is a few round trips. The result is the same: a domain's name is nothing but its
/local/domain/<domid>/name and /vm/<uuid>/name, written together in one transaction. libxl reads it from
there (libxl_domid_to_name; libxl_retrieve_domain_configuration takes it from there too), so `xl list`,
`xl network-attach … backend=<name>` and libvirt's `<backenddomain name=…/>`, which libxl resolves at each
attach, see the new name and nothing else changes.

libxl's checks, stricter: the old name must be the domain's and the new one nobody else's. Both are read
inside the transaction (libxl looks for the new name before its own transaction starts), so a domain that
takes either name meanwhile makes the commit conflict, and the whole is read again. The nodes read are
dom0's own (a domain can read its `name` and `vm`, not write them). A domain with a device-model stub
domain (HVM only; libxl renames the stub domain too) is refused: driver domains are PV. The scan of
every domain's name it makes (`domain_names`) also finds a promoted domain's domid for xl_domains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from xenddd.adapters.hypervisor_api import DomainInfo, DomainState
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.adapters.xenstore.transaction import Transaction
from xenddd.errors import XendddError

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def rename_domain(xenstore: Xenstore, old: str, new: str, domid: int | None = None) -> DomainInfo:
    """Rename the one domain called `old` to `new`; refused (and nothing written) while another domain is
    called `new`, or if no domain or more than one is called `old`, or (`domid`) if domain `domid` is not
    the one called `old` (the remains of a dead instance, renamed out of a standby's way, are named by
    their domid: never another instance started meanwhile under that name). Returns the renamed domain
    as xenstore describes it: its memory is libxl's balloon target, its vCPUs the ones libxl gave it, and
    its state `running` (xenstore does not say paused; the next listing does)."""
    if not new:
        raise XendddError(f"renaming {old}: no new name given")
    try:
        return xenstore.transaction(lambda tx: _rename(tx, old, new, domid))
    except XendddError as exc:
        raise XendddError(f"renaming {old} to {new} failed: {exc}") from None


class _Reader(Protocol):
    """A xenstore connection or one of its transactions."""

    def directory(self, path: str) -> list[str] | None: ...

    def read_many(self, paths: Sequence[str]) -> list[bytes | None]: ...


def domain_names(reader: _Reader) -> dict[int, bytes | None]:
    """Each domain xenstore knows, by domid, with its name (None: the remains of one being destroyed,
    whose name went first). Names are dom0's nodes: a domain can read its own, not write it."""
    domids = sorted(int(entry) for entry in reader.directory("/local/domain") or [] if entry.isdigit())
    names = reader.read_many([f"/local/domain/{domid}/name" for domid in domids])
    return dict(zip(domids, names, strict=True))


def _rename(tx: Transaction, old: str, new: str, expected: int | None) -> DomainInfo:
    names = domain_names(tx)
    named_old = [d for d, name in names.items() if name == old.encode()]
    if any(name == new.encode() and d not in named_old for d, name in names.items()):
        raise XendddError(f'a domain called "{new}" already exists')
    if len(named_old) != 1:
        raise XendddError(f'{"no" if not named_old else "more than one"} domain is called "{old}"')
    domid = named_old[0]
    if expected is not None and domid != expected:
        raise XendddError(f'domid {expected} is not the domain called "{old}" (domid {domid} is)')
    home = f"/local/domain/{domid}"
    paths = [f"{home}/vm", f"{home}/memory/target", f"{home}/image/device-model-domid"]
    vm, target, stub = tx.read_many(paths)
    if stub is not None:
        raise XendddError(f"domid {domid} has a device-model stub domain, which this rename does not rename")
    uuid = (vm or b"").decode("ascii", "replace").removeprefix("/vm/")
    if not _UUID.fullmatch(uuid):
        raise XendddError(f"domid {domid} has no /vm/<uuid> path in {home}/vm")
    tx.write(f"{home}/name", new)
    tx.write(f"/vm/{uuid}/name", new)
    memory = (target or b"").decode("ascii", "replace")
    return DomainInfo(
        name=new,
        uuid=uuid,
        domid=domid,
        state=DomainState.RUNNING,
        memory_kib=int(memory) if memory.isdigit() else 0,
        vcpus=len(tx.directory(f"{home}/cpu") or []),
    )
