"""Cross-checking a judged backend entry with libvirt's live definition of the guest."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from xenddd.adapters.hypervisor_api import GuestDevice
from xenddd.errors import XendddError
from xenddd.model import VbdParams, VifParams
from xenddd.registry.records import Judgement, Rejection

log = logging.getLogger(__name__)

LibvirtDevices = Callable[[str], Sequence[GuestDevice] | None]
"""Guest name → libvirt's live devices of it, or None when libvirt does not manage that guest."""


def libvirt_agrees(libvirt_devices: LibvirtDevices, verdict: Judgement) -> Judgement | Rejection:
    """The verdict, unless libvirt's live definition of a guest it manages contradicts it.

    A backend entry dom0's `/libxl` record accepted can still be a device libvirt never gave that guest
    (or gave another driver domain); if libvirt cannot be asked, dom0's record is trusted.
    """
    frontend = verdict.frontend
    try:
        devices = libvirt_devices(frontend.guest_name)
    except XendddError as exc:
        log.warning(
            "cannot cross-check %s with libvirt (%s); trusting dom0's record", frontend.guest_name, exc
        )
        return verdict
    if devices is None:
        return verdict
    for device in devices:
        if device.kind is not frontend.kind:
            continue
        if device.devid is None and _identity(device.params) != _identity(frontend.params):
            continue
        if device.devid is not None and device.devid != frontend.devid:
            continue
        if device.backend_name not in (None, frontend.backend_name):
            return Rejection(
                f"libvirt says {frontend.guest_name}'s device is served by {device.backend_name}"
            )
        if _identity(device.params) != _identity(frontend.params):
            return Rejection(
                f"libvirt's {frontend.kind.value} {frontend.devid} of {frontend.guest_name} differs"
            )
        return _with_model(verdict, device.params)
    return Rejection(f"libvirt's live definition of {frontend.guest_name} has no such {frontend.kind.value}")


def _identity(params: VifParams | VbdParams) -> str:
    return params.mac if isinstance(params, VifParams) else params.vdev


def _with_model(verdict: Judgement, libvirt_params: VifParams | VbdParams) -> Judgement:
    """A vif's `model` is in libvirt's XML only (libxl does not write it to xenstore): libvirt is the
    most trusted source that has it."""
    params = verdict.frontend.params
    if not isinstance(params, VifParams) or not isinstance(libvirt_params, VifParams):
        return verdict
    if params.model is not None or libvirt_params.model is None:
        return verdict
    frontend = replace(verdict.frontend, params=replace(params, model=libvirt_params.model))
    return replace(verdict, frontend=frontend)
