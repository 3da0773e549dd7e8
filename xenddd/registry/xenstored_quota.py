"""How many guest devices one driver domain can serve under xenstored's per-domain quotas, and a warning
before its share of guests gets there.

C xenstored counts against a domain the nodes it *owns* and the watches it holds. A driver domain owns
its backends: libxl creates each backend directory as dom0 and hands it over (≈ 10 nodes a vif:
`frontend`, `frontend-id`, `online`, `state`, `script`, `mac`, `bridge`, `handle`, `type`, the directory;
one more per guest for `backend/vif/<guest>`), and netback adds 11 `feature-*`/`multi-queue-max-queues`
keys and the hotplug script `hotplug-status` (blkback a dozen of its own: `sectors`, `info`,
`feature-*`, …) — about 24 nodes a device. Its kernel watches each frontend's state, and netback each
frontend's `request-multicast-control`, `hotplug-status` while it connects: 2 to 3 watches a device.
With C xenstored's defaults (`--entry-nb 1000`, `--watch-nb 128`) a driver domain serves about 40
devices; past that its new backends stay in Initialising (a node creation refused with ENOSPC) — which
looks exactly like a broken driver domain.

Raise them in `XENSTORED_ARGS` (Debian: /etc/default/xencommons; `--entry-nb 20000 --watch-nb 2000`
for ~800 devices), or on Xen 4.22 per domain (`xl xenstore-quota-set DOMAIN nodes=20000 watches=2000`,
or `xenstore_quota = ["nodes=20000", "watches=2000"]` in its xl.cfg).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from xenddd.registry.frontends import REGISTRY_FILE
from xenddd.registry.persistence import frontend_from_json

NODES_PER_DEVICE = 24
WATCHES_PER_DEVICE = 3
WARN_AT = 0.8  # of the capacity
XENCOMMONS = Path("/etc/default/xencommons")


@dataclass(frozen=True)
class XenstoredQuotas:
    nodes: int = 1000
    watches: int = 128
    source: str = "C xenstored's defaults"

    def capacity(self) -> int | None:
        """Devices one driver domain can serve (None: no quota limits it; 0 disables a quota)."""
        pairs = ((self.nodes, NODES_PER_DEVICE), (self.watches, WATCHES_PER_DEVICE))
        limits = [quota // per for quota, per in pairs if quota]
        return min(limits) if limits else None


def read_xenstored_quotas(defaults_file: Path | None = None) -> XenstoredQuotas:
    """xenstored's per-domain node and watch quotas from `XENSTORED_ARGS` in `defaults_file` (default
    /etc/default/xencommons, what the init script passes it), or its defaults when the file or the
    options are not there."""
    defaults_file = defaults_file or XENCOMMONS
    try:
        text = defaults_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return XenstoredQuotas()
    return parse_xenstored_args(text, str(defaults_file))


def parse_xenstored_args(text: str, where: str) -> XenstoredQuotas:
    found = re.findall(r"^\s*XENSTORED_ARGS=(.*)$", text, re.MULTILINE)
    if not found:
        return XenstoredQuotas()
    try:
        words = shlex.split(shlex.split(found[-1])[0] if found[-1].strip() else "")
    except (ValueError, IndexError):
        return XenstoredQuotas()
    quotas = {"nodes": 1000, "watches": 128}
    options = {"-E": "nodes", "--entry-nb": "nodes", "-W": "watches", "--watch-nb": "watches"}
    for i, word in enumerate(words):
        option, _, inline = word.partition("=")
        value = inline or (words[i + 1] if i + 1 < len(words) else "")
        if option in options and value.isdigit():
            quotas[options[option]] = int(value)
        elif option in ("-Q", "--quota"):
            name, _, number = value.partition("=")
            if name in quotas and number.isdigit():
                quotas[name] = int(number)
    return XenstoredQuotas(quotas["nodes"], quotas["watches"], f"XENSTORED_ARGS in {where}")


def devices_recorded(state_dir: Path) -> dict[str, int]:
    """Guest devices per driver domain as the registry last persisted them (what `config check` can know
    without the daemon); empty when there is no readable registry."""
    try:
        document = json.loads((state_dir / REGISTRY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # a damaged file is the daemon's to quarantine
        return {}
    items = document.get("frontends") if isinstance(document, dict) else None
    counts: dict[str, int] = {}
    for item in items if isinstance(items, list) else []:
        frontend = frontend_from_json(item)
        if frontend is not None:
            counts[frontend.backend_name] = counts.get(frontend.backend_name, 0) + 1
    return counts


def quota_warnings(served: Mapping[str, int], quotas: XenstoredQuotas) -> dict[str, str]:
    """For each driver domain whose devices come near what its quotas fit: the operator's sentence."""
    capacity = quotas.capacity()
    if capacity is None:
        return {}
    return {
        name: (
            f"serves {devices} guest devices; xenstored's per-domain quotas ({quotas.nodes} nodes, "
            f"{quotas.watches} watches: {quotas.source}) fit about {capacity} (≈{NODES_PER_DEVICE} nodes and "
            f"{WATCHES_PER_DEVICE} watches each): raise --entry-nb and --watch-nb in XENSTORED_ARGS, or on "
            f"Xen 4.22 `xl xenstore-quota-set {name} nodes=N watches=N`"
        )
        for name, devices in served.items()
        if devices >= WARN_AT * capacity
    }
