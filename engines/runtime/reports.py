"""The bodies of ``/readyz`` and ``/routing`` (§6), derived from the slots and the registry.

``/readyz`` is probed every few seconds by kubelet for every pod, so the ready answer is a
constant and the not-ready answer walks only the slots that are not ready (kept as a set by
``BackendSlots``), never every slot and never a backend.
"""

from __future__ import annotations

from typing import Any

from engines.routing.registry import RoutingRegistry

from .manager import BackendSlots
from .slots import Slot, SlotStatus

__all__ = ["READY_BODY", "readiness", "registry_invalid", "routing_table"]

READY_BODY: dict[str, Any] = {"status": "ready"}


def registry_loaded(registry: RoutingRegistry) -> bool:
    """The registry has completed its first full load (a non-blocking check)."""
    return registry.wait_ready(0)


def registry_invalid(registry: RoutingRegistry) -> list[dict[str, str]]:
    """Stored entries the registry refused (bad document or file), with the reason."""
    invalid: dict[str, str] = dict(getattr(registry, "invalid", {}) or {})
    return [{"source": where, "error": reason} for where, reason in sorted(invalid.items())]


def _key(slot: Slot) -> dict[str, Any]:
    return {
        "tenant": slot.tenant,
        "env": slot.env,
        "project": slot.project,
        "resource_kind": slot.kind.value,
    }


def readiness(slots: BackendSlots, registry: RoutingRegistry) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)``: ready when the registry loaded and every slot serves a backend."""
    loaded = registry_loaded(registry)
    if loaded and slots.ready:
        return True, READY_BODY
    missing: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    unavailable: list[dict[str, Any]] = []
    for slot in sorted(slots.not_ready(), key=lambda s: (s.tenant, s.kind.value)):
        entry = _key(slot)
        if slot.status is SlotStatus.MISSING:
            missing.append(entry)
        elif slot.status is SlotStatus.INVALID and slot.failure is not None:
            invalid.append({**entry, **slot.failure.as_dict()})
        elif slot.failure is not None:
            unavailable.append({**entry, **slot.failure.as_dict()})
        else:
            unavailable.append({**entry, "reason": "pending", "message": str(slot.error())})
    invalid.extend(registry_invalid(registry))
    body: dict[str, Any] = {
        "status": "not_ready",
        "missing": missing,
        "invalid": invalid,
        "unavailable": unavailable,
    }
    if not loaded:
        body["registry"] = "the routing registry has not completed its first load"
    return False, body


def _slot_view(slot: Slot) -> dict[str, Any]:
    view: dict[str, Any] = {**_key(slot), "status": slot.status.value}
    held = slot.current
    if held is not None:
        rec = held.record
        view["serving"] = {
            "entry": {"tenant": rec.tenant, "env": rec.env, "project": rec.project},
            "backend": rec.backend.value,
            "config": rec.config,
            "secret_ref": rec.secret_ref.model_dump() if rec.secret_ref else None,
            "revision": rec.revision,
            "generation": rec.generation,
            "source": rec.source.model_dump() if rec.source else None,
            "since": slot.switched_at,
            "inflight": held.inflight,
        }
    desired = slot.desired
    if desired is not None and (held is None or desired.revision != held.record.revision):
        view["pending_revision"] = desired.revision
    if slot.failure is not None:
        view["last_error"] = slot.failure.as_dict()
    return view


def routing_table(
    slots: BackendSlots, registry: RoutingRegistry, *, source: str
) -> dict[str, Any]:
    """The effective routing of every served (tenant, kind): what serves it, at which revision.

    Secrets never appear: an entry names its Secret (``secret_ref``), the value stays mounted.
    """
    return {
        "env": slots.env,
        "project": slots.project,
        "tenants": list(slots.tenants),
        "kinds": [k.value for k in slots.kinds],
        "registry": {
            "source": source,
            "loaded": registry_loaded(registry),
            "healthy": registry.healthy,
            "invalid": registry_invalid(registry),
        },
        "ready": slots.ready,
        "entries": [_slot_view(s) for s in slots],
    }
