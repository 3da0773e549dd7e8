"""The simulated xenstored's per-domain quotas, as C xenstored sets and checks them — and a report when one
is hit, so a simulated driver domain never stalls silently.

C xenstored counts, per domain: the nodes it *owns* (whoever created them — libxl creates a driver domain's
backend directories as dom0 and hands them to it), its watches over all its connections, and its open
transactions. Only unprivileged domains are checked; the values come from the command line
(`--entry-nb`, `--watch-nb`, `--transaction`, `--entry-size`; 4.22 adds `-Q nodes=N`, …) and, since Xen
4.22, per domain (XS_SET_QUOTA with a domid: `xl xenstore-quota-set DOMAIN nodes=N`, or `xenstore_quota`
in the domain's xl.cfg). Two generations differ in detail (tools/xenstored, verified in Xen's source):

- Xen ≤ 4.21 (`tools/xenstore/xenstored_watch.c`): a WATCH is refused with **E2BIG** once the domain has
  *more* than `--watch-nb` watches (so 129 fit under the default 128); a node creation with ENOSPC once it
  owns `--entry-nb` nodes (1000 fit).
- Xen 4.22 (`domain_quota_add_exceeds`): both are refused once the new count would *reach* the quota
  (127 watches, 999 nodes fit) and a WATCH over quota fails with **ENOSPC**; a quota of 0 disables it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace

log = logging.getLogger(__name__)

XEN_4_17 = (4, 17)  # Debian 12's, the integration test bed's
XEN_4_22 = (4, 22)  # per-domain quotas (XS_GET_QUOTA / XS_SET_QUOTA)


@dataclass(frozen=True)
class Quotas:
    """One domain's limits, named as Xen 4.22's quota names; 0 disables a check, as in C xenstored."""

    nodes: int = 1000  # --entry-nb, "nodes": nodes the domain owns
    watches: int = 128  # --watch-nb, "watches"
    transactions: int = 10  # --transaction, "transactions": open at once
    node_size: int = 2048  # --entry-size, "node-size": bytes of one value

    NAMES = ("nodes", "watches", "transactions", "node-size")

    def get(self, name: str) -> int:
        return int(getattr(self, name.replace("-", "_")))

    def with_value(self, name: str, value: int) -> Quotas:
        if name not in self.NAMES or value < 0:
            raise ValueError(name)
        return replace(self, **{name.replace("-", "_"): value})


@dataclass
class QuotaHit:
    """A refused request: which domain, which quota and its value, the request and its path."""

    domid: int
    quota: str
    limit: int
    errno_name: str
    request: str
    path: str


@dataclass
class QuotaBook:
    """Global quotas, per-domain overrides (Xen 4.22) and the hits, each domain's first per quota logged."""

    version: tuple[int, int] = XEN_4_17
    defaults: Quotas = field(default_factory=Quotas)
    per_domain: dict[int, Quotas] = field(default_factory=dict)
    hits: list[QuotaHit] = field(default_factory=list)

    def of(self, domid: int) -> Quotas:
        return self.per_domain.get(domid, self.defaults)

    def exceeded(self, domid: int, name: str, count: int) -> bool:
        """Would one more of `name` (the domain has `count` now) go over its quota?"""
        limit = self.of(domid).get(name)
        if limit == 0:
            return False
        if name == "watches" and self.version < XEN_4_22:
            return count > limit  # xenstored_watch.c: `domain_watch(conn) > quota_nb_watch_per_domain`
        if self.version < XEN_4_22:
            return count >= limit
        return count + 1 >= limit

    def watch_errno(self) -> str:
        return "E2BIG" if self.version < XEN_4_22 else "ENOSPC"

    def record(self, domid: int, name: str, errno_name: str, request: str, path: str) -> None:
        limit = self.of(domid).get(name)
        first = not any(h.domid == domid and h.quota == name for h in self.hits)
        self.hits.append(QuotaHit(domid, name, limit, errno_name, request, path))
        if first:
            log.warning(
                "sim xenstored: domain %d reached its %s quota (%d): %s refused with %s (%s); raise it "
                "with xenstored's %s, or per domain (Xen 4.22) xl xenstore-quota-set",
                domid, name, limit, request, errno_name, path, _OPTION[name],
            )  # fmt: skip


_OPTION = {
    "nodes": "--entry-nb",
    "watches": "--watch-nb",
    "transactions": "--transaction",
    "node-size": "--entry-size",
}

assert set(_OPTION) == set(Quotas.NAMES) and len(fields(Quotas)) == len(Quotas.NAMES)
