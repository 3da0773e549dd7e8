"""What a recovery acts through and records into, shared by its phases and its frontends' steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xenddd.adapters.hypervisor_api import Hypervisor
from xenddd.recovery.history import History
from xenddd.recovery.intent import DomainRecord, Incident, IntentLog
from xenddd.recovery.toolstack_calls import ToolstackCalls
from xenddd.registry.guest_view import GuestView


@dataclass
class RecoveryTools:
    hypervisor: Hypervisor
    guests: GuestView
    history: History
    intents: IntentLog
    calls: ToolstackCalls
    watch: Callable[[str], None]  # armed at the end of the pass (see the daemon)
    unwatch: Callable[[str], None]
    clock: Callable[[], float]
    # Progress that is not an intent (a call's result, a confirmation, a drop) waits for the pass's one
    # save rather than rewriting the record after each device: redoing it after a SIGKILL is harmless.
    unsaved: bool = False

    def event(self, event: str, dd: str, incident: Incident, **fields: object) -> dict[str, object]:
        return self.history.record(event, driver_domain=dd, incident=incident.id, **fields)

    def save(self, record: DomainRecord) -> None:
        self.intents.save(record)
        self.unsaved = False
