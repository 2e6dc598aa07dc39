"""The bodies of ``/readyz`` and ``/routing`` (§6), derived from the slots and the registry.

``/readyz`` is probed every few seconds by kubelet for every pod, so the ready answer is a
constant and the not-ready answer walks only the slots that are not ready (kept as a set by
``BackendSlots``), never every slot and never a backend.

The 503 body is exactly §6: ``status``, ``missing``, ``invalid``, ``unavailable``. Every item
carries the key fields ``tenant``, ``env``, ``project``, ``resource_kind`` (``None`` where an item
is not about one key: the registry itself, or a stored entry whose id cannot be parsed). A
registry that has not loaded yet, or whose change feed is down, is an ``unavailable`` item with
``source: "registry"``; a stored entry the registry refused is an ``invalid`` item with its
``source`` (document id or file) and ``message``.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import PurePath
from typing import Any

from engines.routing.contract import (
    RoutingKey,
    parse_configmap_key,
    parse_configmap_name,
)
from engines.routing.errors import InvalidRouting
from engines.routing.redact import redact
from engines.routing.registry import RoutingRegistry

from .manager import BackendSlots
from .slots import Slot, SlotStatus

__all__ = [
    "READY_BODY",
    "readiness",
    "registry_invalid",
    "registry_unavailable",
    "routing_table",
]

READY_BODY: dict[str, Any] = {"status": "ready"}


def registry_loaded(registry: RoutingRegistry) -> bool:
    """The registry has completed its first full load (a non-blocking check)."""
    return registry.wait_ready(0)


def _no_key() -> dict[str, Any]:
    return {"tenant": None, "env": None, "project": None, "resource_kind": None}


def _stored_key(source: str, registry: RoutingRegistry) -> dict[str, Any]:
    """The key fields a refused entry's document id or file name (and directory) tell; None
    for those it does not (a name that cannot be parsed tells none)."""
    key = _no_key()
    if not source.endswith(".json"):
        with suppress(InvalidRouting):
            key.update(RoutingKey.from_document_id(source).as_dict())
        return key
    path = PurePath(source)  # a mounted ConfigMap key, in its ConfigMap's directory
    with suppress(InvalidRouting):
        tenant, project, kind = parse_configmap_key(path.name)
        key.update(tenant=tenant, project=project, resource_kind=kind)
    key["env"] = getattr(registry, "env", None)
    if key["env"] is None:
        with suppress(InvalidRouting):
            key["env"] = parse_configmap_name(path.parent.name)[0]
    return key


def registry_invalid(registry: RoutingRegistry) -> list[dict[str, Any]]:
    """Stored entries the registry refused (bad document or file): key fields, source, why."""
    invalid: dict[str, str] = dict(getattr(registry, "invalid", {}) or {})
    return [
        {**_stored_key(where, registry), "source": where, "message": reason}
        for where, reason in sorted(invalid.items())
    ]


def registry_unavailable(
    registry: RoutingRegistry, *, env: str, project: str
) -> list[dict[str, Any]]:
    """The registry itself as an ``unavailable`` item while it cannot be trusted (else none)."""
    if not registry_loaded(registry):
        reason, message = "not_loaded", "the routing registry has not completed its first load"
    elif not registry.healthy:
        reason, message = (
            "unhealthy",
            "the routing registry's change feed is down (reconnecting); routing may be stale",
        )
    else:
        return []
    if cause := getattr(registry, "last_error", None):
        message = f"{message}: {cause}"
    return [
        {
            **_no_key(),
            "env": env,
            "project": project,
            "source": "registry",
            "reason": reason,
            "message": message,
        }
    ]


def _key(slot: Slot) -> dict[str, Any]:
    return {
        "tenant": slot.tenant,
        "env": slot.env,
        "project": slot.project,
        "resource_kind": slot.kind.value,
    }


def readiness(slots: BackendSlots, registry: RoutingRegistry) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)``: ready when the registry has loaded and every slot serves.

    A registry whose change feed is down (Firestore unreachable) does not by itself make the pod
    unready: every kind still resolves from the last snapshot and its backend still serves, and
    taking every pod of the fleet out of service because the control plane blinked would turn a
    registry outage into a data-plane outage. The stale feed is reported in ``/routing``
    (``registry.healthy``), in the log and in the body below whenever the pod is not ready.
    """
    if slots.ready and registry_loaded(registry):
        return True, READY_BODY
    missing: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    unavailable = registry_unavailable(registry, env=slots.env, project=slots.project)
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
    return False, {
        "status": "not_ready",
        "missing": missing,
        "invalid": invalid,
        "unavailable": unavailable,
    }


def _slot_view(slot: Slot) -> dict[str, Any]:
    view: dict[str, Any] = {**_key(slot), "status": slot.status.value}
    held = slot.current
    if held is not None:
        rec = held.record
        view["serving"] = {
            "entry": {"tenant": rec.tenant, "env": rec.env, "project": rec.project},
            "backend": rec.backend.value,
            "config": redact(rec.config),
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


def routing_table(slots: BackendSlots, registry: RoutingRegistry, *, source: str) -> dict[str, Any]:
    """The effective routing of every served (tenant, kind): what serves it, at which revision.

    Secrets never appear: an entry names its Secret (``secret_ref``), the value stays mounted, and
    settings are redacted (a credential in a URL is refused by the model; this is the second lock).
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
