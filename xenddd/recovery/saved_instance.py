"""Saved instances: a driver domain with `[driver_domain.saved_instance] enabled` is restored from one
ready instance saved to disk at each start instead of booting — on the test bed a restore took about
half the boot's time, and the boot is most of a cold recovery's.

What this module owns: the saved file and its record of the definition it was saved under, making it and
choosing a restore or a boot at each start. The file is made of the driver domain itself, once it runs
ready and serves nothing (as at a host's boot, before its guests start): saved, which takes it away, and
restored at once — so the file holds this very domain, under its name and UUID as its toolstack defined
it, which libvirt's restore takes from the file and nowhere else. A domain that serves guests is never
saved: their devices would not survive it. A file saved under another definition is not restored; one
that will not restore is dropped, the domain booted, and the file made again once it is idle; a save
that fails leaves the domain booted and is not tried again until the definition changes. The save and
its restore run on a worker: its passes leave the domain alone meanwhile (its absence is no crash).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
from pathlib import Path

from xenddd.adapters.hypervisor_api import DomainInfo, running_domid
from xenddd.config.spec import DriverDomainSpec
from xenddd.errors import XendddError
from xenddd.recovery.intent import DomainRecord
from xenddd.recovery.tools import RecoveryTools
from xenddd.state import write_text

log = logging.getLogger(__name__)

SAVED_DIR = "saved"  # under the state directory
# what the saved memory does not depend on: xenddd's own policies of the domain
_NOT_SAVED = ("restart", "readiness", "standby", "saved_instance", "reattach_guests", "depends_on")


def definition(spec: DriverDomainSpec) -> str:
    """What a saved file must have been saved under to be restored for `spec`: the definition the
    toolstack was given, and the kernel and initrd files as they are now (an upgraded image is a new
    instance to save)."""
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if k not in _NOT_SAVED}
    for boot_file in (spec.kernel, spec.initrd):
        if boot_file is not None:
            try:
                stat = boot_file.stat()
            except OSError:
                continue  # the boot says what is wrong with it
            fields[str(boot_file)] = [stat.st_size, stat.st_mtime_ns]
    text = json.dumps(fields, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: object) -> object:
    if isinstance(value, frozenset | set):
        return sorted(str(v) for v in value)
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


@dataclasses.dataclass(frozen=True)
class Restored:
    """What a start returns that restored the saved instance instead of booting. That instance was saved
    ready and idle, and is so again as its restore returns: its backends answer as its kernel resumes.
    Its readiness key is not waited for: the image's init writes it on seeing the new domid and only then
    starts the `xl devd` that watches that domid, which runs the hotplug of every backend it finds in
    InitWait as it starts — so a guest's device attached before is served all the same, and the attaches
    go while the init catches up (0.7 to 1.8 s between the restore's return and xenddd seeing the key,
    in three restores on the test bed)."""

    info: DomainInfo


class SavedInstances:
    def __init__(self, tools: RecoveryTools, state_dir: Path) -> None:
        self._t = tools
        self._dir = state_dir / SAVED_DIR
        self._failed: dict[str, str] = {}  # driver domain → the definition whose save failed
        self._errors: dict[str, str] = {}

    def path(self, spec: DriverDomainSpec) -> Path:
        return self._dir / f"{spec.name}.save"

    def start(self, spec: DriverDomainSpec) -> DomainInfo | Restored:
        """For a defined domain that does not run (a worker's or a first pass's start): restored if it
        has a saved instance and a file saved under its definition is there, else booted."""
        hv = self._t.hypervisor
        if not spec.saved_instance.enabled:
            return hv.start(spec.name)
        path = self.path(spec)
        if path.exists() and self._recorded(spec) == definition(spec):
            try:
                info = hv.restore(spec.name, path)
            except XendddError as exc:
                self.drop(spec, str(exc))
            else:
                log.info("%s: restored from %s as domid %s", spec.name, path, info.domid)
                return Restored(info)
        return hv.start(spec.name)

    def saving(self, spec: DriverDomainSpec) -> bool:
        return self._t.calls.busy((spec.name, "save"))

    def take(self, spec: DriverDomainSpec, record: DomainRecord) -> bool:
        """A save that returned: the restored (or booted again) instance is the one xenddd started.
        True if one returned: the pass's listing is older than it."""
        result = self._t.calls.take((spec.name, "save"))
        if result is None:
            return False
        record.saving = False
        if result.error is not None:  # the domain is gone: a pass recovers it as any instance that died
            log.error("%s: saving it failed, and it did not start again: %s", spec.name, result.error)
        else:
            info: DomainInfo = result.value
            record.domid, record.started_at = info.domid, self._t.clock()
        self._t.save(record)
        return True

    def keep(self, spec: DriverDomainSpec, record: DomainRecord, running: int, serving: bool) -> None:
        """Save the instance xenddd runs (`running`) if no file is saved under its definition and it is
        ready and serves nothing (`serving`: the registry knows frontends of it); its readiness key is
        watched until then, so that its write brings the pass that saves it."""
        if record.incident is not None or self.saving(spec) or serving:
            return
        wanted = definition(spec)
        if self._failed.get(spec.name) == wanted:
            return
        if self.path(spec).exists() and self._recorded(spec) == wanted:
            return
        key = f"/local/domain/{running}/{spec.readiness.key}"
        if self._t.guests.read(key) != spec.readiness.value.encode():
            self._t.watch(key)
            return
        self._t.unwatch(key)
        record.saving = True  # before the domain goes: its absence is then no death, even to a new daemon
        self._t.save(record)
        lane = (spec.name, "save")
        what = f"{spec.name}: save domid {running}"
        self._t.calls.submit(lane, what, lambda: self._save_and_restore(spec, running, wanted), lane=lane)

    def status(self, spec: DriverDomainSpec) -> dict[str, object]:
        path = self.path(spec)
        try:
            stat = path.stat()
        except OSError:
            saved = None
        else:
            current = self._recorded(spec) == definition(spec)
            saved = {"bytes": stat.st_size, "saved_at": stat.st_mtime, "current": current}
        return {
            "path": str(path),
            "file": saved,
            "saving": self.saving(spec),
            "error": self._errors.get(spec.name),
        }

    def _save_and_restore(self, spec: DriverDomainSpec, domid: int, wanted: str) -> DomainInfo:
        """On a worker: the file is complete before it takes the name (a save cut short leaves a part
        file, made again); the record of its definition is written last."""
        hv = self._t.hypervisor
        path = self.path(spec)
        partial = path.with_name(path.name + ".part")
        began = self._t.clock()
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            partial.unlink(missing_ok=True)
            hv.save(spec.name, partial)
            partial.replace(path)
            write_text(self._record_path(spec), wanted + "\n")
        except (XendddError, OSError) as exc:
            return self._not_saved(spec, wanted, exc)
        saved_at = self._t.clock()
        try:
            info = hv.restore(spec.name, path)
        except XendddError as exc:
            self._drop(spec)
            return self._not_saved(spec, wanted, exc)
        self._errors.pop(spec.name, None)
        self._t.history.record(
            "saved-instance",
            driver_domain=spec.name,
            saved_domid=domid,
            domid=info.domid,
            bytes=path.stat().st_size,
            save_seconds=round(saved_at - began, 3),
            restore_seconds=round(self._t.clock() - saved_at, 3),
        )
        log.info("%s: saved once ready and idle (%s), restored as domid %s", spec.name, path, info.domid)
        return info

    def _not_saved(self, spec: DriverDomainSpec, wanted: str, error: Exception) -> DomainInfo:
        """The domain runs booted (again, if the save took it away), and no save is tried again under
        this definition: one that fails once would fail, and take the domain away, every time."""
        self._failed[spec.name] = wanted
        self._errors[spec.name] = str(error)
        self._t.history.record("saved-instance-failed", driver_domain=spec.name, error=str(error))
        log.error("%s: not saved, so booted at each start: %s", spec.name, error)
        hv = self._t.hypervisor
        info = hv.domain(spec.name)
        if info is not None and running_domid(info) is not None:
            return info
        return hv.start(spec.name)

    def _recorded(self, spec: DriverDomainSpec) -> str | None:
        try:
            return self._record_path(spec).read_text().strip()
        except OSError:
            return None

    def _record_path(self, spec: DriverDomainSpec) -> Path:
        return self._dir / f"{spec.name}.definition"

    def drop(self, spec: DriverDomainSpec, why: str) -> None:
        """A file that will not restore, or whose restored instance could not serve (its init refused
        after the restore): the domain boots instead, and is saved again once it is idle."""
        if self.path(spec).exists():
            log.error("%s: %s; booting it instead (saved again once it serves nothing)", spec.name, why)
            self._t.history.record("saved-instance-dropped", driver_domain=spec.name, error=why)
        self._drop(spec)

    def _drop(self, spec: DriverDomainSpec) -> None:
        self._record_path(spec).unlink(missing_ok=True)
        self.path(spec).unlink(missing_ok=True)
