"""Hiding PCI devices from dom0 (bind to xen-pciback) and giving them back — recorded, confirmed, reversible.

The sequence, like `xl pci-assignable-add` but safer:
1. refuse what dom0 depends on (pci_safety) and, under the strict reset policy, a device with no reset;
2. record the original driver in the state directory BEFORE the first destructive write, so that a daemon
   or host restart can still give the device back;
3. point the device at pciback: with `driver_override` where the kernel has it — it makes pciback the only
   driver that may claim the device, so no other driver can grab it between unbind and bind, and it needs
   no `new_slot` — else through pciback's `new_slot`, written only if the BDF is not in `slots` already
   (new_slot is not idempotent: a second write adds a second entry);
4. unbind from the original driver, bind to pciback, and wait for the kernel's `bind` uevent (bounded);
5. on any failure, roll back: leave the device bound to its original driver, override and slot removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xenddd import state
from xenddd.adapters.pci_sysfs import PCIBACK, PciSysfs
from xenddd.adapters.udev import UeventSource, wait_for_bind
from xenddd.adapters.xenstore.client import Xenstore
from xenddd.config.spec import DriverDomainSpec, PciDeviceSpec
from xenddd.errors import InputError, XendddError
from xenddd.model import Bdf
from xenddd.pci.names import PciNames
from xenddd.pci.safety import dom0_dependencies

log = logging.getLogger(__name__)

RECORD_DIR = "pci"
BIND_TIMEOUT = 10.0

UsersOf = Callable[[Bdf], list[str]]
"""BDF → the running domains that have it assigned (from xenstore's backend/pci)."""


class PciAssigner:
    def __init__(
        self,
        sysfs: PciSysfs,
        uevents: UeventSource,
        state_dir: Path,
        *,
        proc_root: Path = Path("/proc"),
        users_of: UsersOf = lambda _bdf: [],
        bind_timeout: float = BIND_TIMEOUT,
    ) -> None:
        self.sysfs = sysfs
        self.uevents = uevents
        self._records = state_dir / RECORD_DIR
        self.proc_root = proc_root
        self.users_of = users_of
        self.bind_timeout = bind_timeout

    # -- hide ------------------------------------------------------------------------------------------

    def hide(
        self, bdf: Bdf, *, force: bool = False, name: str | None = None, spec: PciDeviceSpec | None = None
    ) -> bool:
        """Bind `bdf` to pciback; False if it already was. Raises InputError (refused, nothing changed)
        or XendddError (a step failed; everything rolled back)."""
        self._check_present(bdf)
        current = self.sysfs.driver(bdf)
        if current == PCIBACK:
            self._apply_options(bdf, spec)
            if self._record(bdf) is None:
                self._save(bdf, {"original_driver": None, "step": "hidden", "name": name})
            return False
        if not force:
            reasons = dom0_dependencies(self.sysfs, bdf, self.proc_root)
            if reasons:
                raise InputError(f"refusing to hide {bdf}: {reasons[0]} (use --force to override)")
        self.check_reset(bdf, spec)
        override = self.sysfs.has_driver_override(bdf)
        added_slot = not override and bdf not in self.sysfs.pciback_slots()
        self._save(
            bdf,
            {
                "original_driver": current,
                "step": "hiding",
                "name": name,
                "override": override,
                "added_slot": added_slot,
            },
        )
        try:
            with self.uevents.listening() as events:
                if override:
                    self.sysfs.set_driver_override(bdf, PCIBACK)
                elif added_slot:
                    self.sysfs.new_slot(bdf)
                if current is not None:
                    self.sysfs.unbind(bdf, current)
                self.sysfs.bind(bdf, PCIBACK)
                if (
                    not wait_for_bind(events, bdf, PCIBACK, self.bind_timeout)
                    and self.sysfs.driver(bdf) != PCIBACK
                ):
                    raise XendddError(
                        f"{bdf}: no bind event from the kernel within {self.bind_timeout:.0f} s"
                    )
            self._apply_options(bdf, spec)
        except XendddError as exc:
            self._roll_back(bdf)
            raise XendddError(f"hiding {bdf} failed and was rolled back: {exc}") from None
        self._save(bdf, {**(self._record(bdf) or {}), "step": "hidden"})
        log.info("%s: hidden from dom0 (was %s)", bdf, current or "unbound")
        return True

    def check_reset(self, bdf: Bdf, spec: PciDeviceSpec | None) -> None:
        """Strict policy: a device without any reset method cannot be handed safely between domains."""
        if spec is None or self.sysfs.info(bdf).reset_methods:
            return
        if spec.reset == "strict":
            raise InputError(
                f"{bdf} has no reset method (no FLR, PM or bus reset) and its reset policy is 'strict': "
                'refusing to pass it through; set reset = "relaxed" for it to pass it through anyway'
            )
        log.warning(
            "%s has no reset method (no FLR, PM or bus reset); reset policy 'relaxed': libxl passes it "
            "through without a reset, so state left by its previous user may survive",
            bdf,
        )

    def _apply_options(self, bdf: Bdf, spec: PciDeviceSpec | None) -> None:
        if spec is not None and spec.permissive:
            self.sysfs.set_permissive(bdf)

    def _roll_back(self, bdf: Bdf) -> None:
        """Undo a partial hide: whatever step failed, the device ends as it was found."""
        record = self._record(bdf) or {}
        original = record.get("original_driver")
        steps: list[tuple[str, Callable[[], None]]] = [
            ("unbind from pciback", lambda: self.sysfs.unbind(bdf, PCIBACK)),
            ("clear driver_override", lambda: self.sysfs.set_driver_override(bdf, None)),
            ("remove the pciback slot", lambda: self.sysfs.remove_slot(bdf)),
            (f"bind {original}", lambda: self.sysfs.bind(bdf, str(original))),
        ]
        wanted = [
            self.sysfs.driver(bdf) == PCIBACK,
            bool(record.get("override")),
            bool(record.get("added_slot")) and bdf in self.sysfs.pciback_slots(),
            bool(original),
        ]
        for (what, step), needed in zip(steps, wanted, strict=True):
            if not needed or (what.startswith("bind") and self.sysfs.driver(bdf) is not None):
                continue
            try:
                step()
            except XendddError as exc:
                log.error("%s: rollback step '%s' failed: %s", bdf, what, exc)
        state.remove(self._path(bdf))

    # -- give back -------------------------------------------------------------------------------------

    def give_back(self, bdf: Bdf, *, rebind: bool = False, force: bool = False) -> str | None:
        """Unbind `bdf` from pciback; with `rebind`, bind its original driver, which is returned (None: not
        rebound, no original driver being recorded)."""
        self._check_present(bdf)
        if self.sysfs.driver(bdf) != PCIBACK:
            raise InputError(f"{bdf} is not assigned to pciback (driver: {self.sysfs.driver(bdf) or 'none'})")
        users = self.users_of(bdf)
        if users and not force:
            raise InputError(
                f"{bdf} is assigned to running domain(s) {', '.join(users)}; use --force to take it"
            )
        record = self._record(bdf) or {"original_driver": None}
        self._save(bdf, {**record, "step": "returning", "rebind": rebind})
        return self._return(bdf, record, rebind)

    def _return(self, bdf: Bdf, record: dict[str, Any], rebind: bool) -> str | None:
        if self.sysfs.driver(bdf) == PCIBACK:
            self.sysfs.unbind(bdf, PCIBACK)
        if bdf in self.sysfs.pciback_slots():
            self.sysfs.remove_slot(bdf)
        if self.sysfs.has_driver_override(bdf):
            self.sysfs.set_driver_override(bdf, None)
        original = record.get("original_driver")
        rebound = None
        if rebind and original and self.sysfs.driver(bdf) is None:
            with self.uevents.listening() as events:
                self.sysfs.bind(bdf, original)
                if (
                    not wait_for_bind(events, bdf, original, self.bind_timeout)
                    and self.sysfs.driver(bdf) != original
                ):
                    raise XendddError(f"{bdf}: no bind event for {original} within {self.bind_timeout:.0f} s")
            rebound = str(original)
        state.remove(self._path(bdf))
        log.info("%s: given back to dom0%s", bdf, f" and bound to {rebound}" if rebound else "")
        return rebound

    # -- start-up and recovery ------------------------------------------------------------------------

    def finish_interrupted(self) -> list[str]:
        """After a crash or SIGKILL: a half-done hide is rolled back (or kept if it completed), a half-done
        give-back is finished. Returns one line per device acted on."""
        done: list[str] = []
        if not self._records.is_dir():
            return done
        for path in sorted(self._records.glob("*.json")):
            try:
                bdf = Bdf.parse(path.stem)
            except XendddError:
                continue
            record = self._record(bdf) or {}
            step = record.get("step")
            if step == "hiding":
                if self.sysfs.driver(bdf) == PCIBACK:
                    self._save(bdf, {**record, "step": "hidden"})
                    done.append(f"{bdf}: interrupted hide had completed")
                else:
                    self._roll_back(bdf)
                    done.append(f"{bdf}: interrupted hide rolled back to {record.get('original_driver')}")
            elif step == "returning":
                self._return(bdf, record, bool(record.get("rebind")))
                done.append(f"{bdf}: interrupted give-back finished")
        return done

    def prepare_domain(self, spec: DriverDomainSpec, iommu_available: Callable[[], bool]) -> None:
        """Before a driver domain (re)starts: its PCI devices hidden, with options; refuses without IOMMU."""
        if not spec.pci:
            return
        if not iommu_available():
            raise XendddError(
                f"{spec.name}: Xen has no IOMMU passthrough (neither pv_directio nor hvm_directio in "
                "`xl info` virt_caps); a driver domain with PCI devices cannot start"
            )
        for device in spec.pci:
            self.hide(device.bdf, name=spec.name, spec=device)

    # -- list ------------------------------------------------------------------------------------------

    def list(self, names: PciNames | None = None) -> list[dict[str, Any]]:
        names = names or PciNames.load()
        recorded = (
            {Bdf.parse(p.stem) for p in self._records.glob("*.json")} if self._records.is_dir() else set()
        )
        rows = []
        for bdf in sorted(set(self.sysfs.pciback_devices()) | {b for b in recorded if self.sysfs.exists(b)}):
            info = self.sysfs.info(bdf)
            record = self._record(bdf) or {}
            rows.append(
                {
                    "bdf": str(bdf),
                    "name": names.describe(info.vendor, info.device),
                    "driver": info.driver,
                    "original_driver": record.get("original_driver"),
                    "for": record.get("name"),
                    "iommu_group": info.iommu_group,
                    "reset_methods": list(info.reset_methods),
                    "used_by": self.users_of(bdf),
                    "state": record.get("step", "hidden" if info.driver == PCIBACK else "unknown"),
                }
            )
        return rows

    # -- records ---------------------------------------------------------------------------------------

    def _check_present(self, bdf: Bdf) -> None:
        if not self.sysfs.pciback_loaded():
            raise XendddError("the xen-pciback driver is not loaded: run `modprobe xen-pciback` first")
        if not self.sysfs.exists(bdf):
            raise InputError(f"no PCI device {bdf} on this host")

    def _path(self, bdf: Bdf) -> Path:
        return self._records / f"{bdf}.json"

    def _record(self, bdf: Bdf) -> dict[str, Any] | None:
        """The device's record; a damaged one is moved aside (kept for the operator, who may need its
        original driver) and the device treated as one xenddd has no record of."""
        return state.read_json_or_quarantine(self._path(bdf), _pci_record)

    def _save(self, bdf: Bdf, record: dict[str, Any]) -> None:
        state.write_json(self._path(bdf), {"bdf": str(bdf), **record})


def _pci_record(document: object) -> dict[str, Any]:
    """A device record as saved; ValueError (damage) if it is not one."""
    if not isinstance(document, dict):
        raise ValueError("not a PCI device record")
    for key in ("original_driver", "step", "name"):
        if not isinstance(document.get(key), (str, type(None))):
            raise ValueError(f"{key} is not a string")
    return document


def xenstore_pci_users(xenstore: Xenstore) -> UsersOf:
    """Who has a BDF assigned, from dom0's pciback backends: /local/domain/0/backend/pci/<domid>/0/dev-N."""

    def users_of(bdf: Bdf) -> list[str]:
        users = []
        base = "/local/domain/0/backend/pci"
        for domid in xenstore.directory(base) or []:
            keys = [k for k in xenstore.directory(f"{base}/{domid}/0") or [] if k.startswith("dev-")]
            values = xenstore.read_many([f"{base}/{domid}/0/{k}" for k in keys]) if keys else []
            for value in values:
                try:
                    assigned = Bdf.parse((value or b"").decode("ascii", "replace"))
                except XendddError:
                    continue
                if assigned == bdf:
                    name = xenstore.read(f"/local/domain/{domid}/name")
                    users.append(name.decode("utf-8", "replace") if name else f"domid {domid}")
        return users

    return users_of
