"""Prometheus metrics of the operator, served on ``--metrics-port``."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BLOCKED",
    "DRIFT_REPAIRS",
    "ENTRIES",
    "LIST_PAGES_HELD",
    "ORPHANS_REMOVED",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "forget_entry",
    "record_condition",
]

RECONCILES = Counter(
    "routing_operator_reconciles_total",
    "Reconciliations by result (a condition reason).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "routing_operator_reconcile_duration_seconds",
    "Time to reconcile one RoutingEntry.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DRIFT_REPAIRS = Counter(
    "routing_operator_drift_repairs_total",
    "Out-of-band changes to a projection that were repaired.",
    ["projection"],
)
ORPHANS_REMOVED = Counter(
    "routing_operator_orphans_removed_total",
    "Projections removed because their RoutingEntry no longer exists.",
    ["projection"],
)
LIST_PAGES_HELD = Counter(
    "routing_operator_list_pages_held_total",
    "Pages of kopf's list of the entries held back until the pages before them were handled.",
)
ENTRIES = Gauge(
    "routing_operator_entries",
    "RoutingEntries by Ready status and reason.",
    ["status", "reason"],
)

BLOCKED = Gauge(
    "routing_operator_blocked",
    "1 while the operator cannot do its job for this reason (CRDMissing, PeeringCRDMissing, "
    "PeeringMissing, Forbidden, KubernetesUnavailable, FirestoreUnreachable, FirestoreDenied), "
    "else 0; /readyz names the cause and the fix.",
    ["reason"],
)

_lock = threading.Lock()
_by_uid: dict[str, tuple[str, str]] = {}


def record_condition(uid: str, status: str, reason: str) -> None:
    with _lock:
        old = _by_uid.get(uid)
        if old == (status, reason):
            return
        if old is not None:
            ENTRIES.labels(*old).dec()
        _by_uid[uid] = (status, reason)
        ENTRIES.labels(status, reason).inc()


def forget_entry(uid: str) -> None:
    with _lock:
        old = _by_uid.pop(uid, None)
        if old is not None:
            ENTRIES.labels(*old).dec()
