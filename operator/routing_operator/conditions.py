"""Status conditions through one helper, so ``lastTransitionTime`` only moves on a real change.

Reasons are constants here; the printer columns, the README's troubleshooting table and
``routingctl`` all key on them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONFIGMAP_SYNCED",
    "FIRESTORE_SYNCED",
    "READY",
    "Reason",
    "Wanted",
    "merge_conditions",
    "now_rfc3339",
]

READY = "Ready"
FIRESTORE_SYNCED = "FirestoreSynced"
CONFIGMAP_SYNCED = "ConfigMapSynced"
_ORDER = (READY, FIRESTORE_SYNCED, CONFIGMAP_SYNCED)


class Reason:
    SYNCED = "Synced"
    INVALID_CONFIG = "InvalidConfig"
    CONFLICT = "Conflict"
    BACKEND_UNAVAILABLE = "BackendUnavailable"
    RECONCILE_PAUSED = "ReconcilePaused"
    DELETING = "Deleting"
    PENDING = "Pending"


@dataclass(frozen=True, slots=True)
class Wanted:
    """A condition as the reconciler wants it now."""

    type: str
    status: str
    reason: str
    message: str


def now_rfc3339(seconds_ago: float = 0.0) -> str:
    """UTC, to the second: as Kubernetes writes timestamps (and so they compare as strings)."""
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: Iterable[Mapping[str, Any]] | None, wanted: Iterable[Wanted], generation: int | None
) -> list[dict[str, Any]]:
    """New condition list: keeps ``lastTransitionTime`` of a condition whose status is unchanged."""
    existing = {c.get("type"): c for c in (current or [])}
    merged: dict[str, dict[str, Any]] = {t: dict(c) for t, c in existing.items() if t}
    stamp = now_rfc3339()
    for w in wanted:
        old = existing.get(w.type)
        transition = (
            old["lastTransitionTime"]
            if old and old.get("status") == w.status and old.get("lastTransitionTime")
            else stamp
        )
        merged[w.type] = {
            "type": w.type,
            "status": w.status,
            "reason": w.reason,
            "message": w.message,
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
    ordered = [merged.pop(t) for t in _ORDER if t in merged]
    return ordered + [merged[t] for t in sorted(merged)]
