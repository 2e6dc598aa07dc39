"""Prometheus metrics of the operator, served on ``--metrics-port``."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BLOCKED",
    "DRIFT_LISTENER_DOCUMENTS",
    "DRIFT_LISTENER_FAILURES",
    "DRIFT_LISTENER_UP",
    "DRIFT_REPAIRS",
    "DRIFT_SWEEPS",
    "ENTRIES",
    "LIST_PAGES_HELD",
    "ORPHANS",
    "ORPHANS_REMOVED",
    "PROJECTIONS_KEPT",
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
DRIFT_SWEEPS = Counter(
    "routing_operator_drift_sweeps_total",
    "Drift sweeps completed by this replica (a standby does not sweep).",
)
DRIFT_LISTENER_UP = Gauge(
    "routing_operator_drift_listener_up",
    "1 while the drift listener (firestore: this cluster's documents; configmap: the managed "
    "ConfigMaps) is established, 0 while it is down and being established again.",
    ["listener"],
)
DRIFT_LISTENER_FAILURES = Counter(
    "routing_operator_drift_listener_failures_total",
    "Times a drift listener failed (stream ended or errored) and was established again.",
    ["listener"],
)
DRIFT_LISTENER_DOCUMENTS = Counter(
    "routing_operator_drift_listener_documents_total",
    "Firestore documents delivered to the drift listener (each first load of the result set, "
    "then every added or changed document): the document reads Firestore bills for it.",
)
ORPHANS_REMOVED = Counter(
    "routing_operator_orphans_removed_total",
    "Orphans of env test removed (projections of this cluster whose RoutingEntry is gone).",
    ["projection"],
)
ORPHANS = Gauge(
    "routing_operator_orphans",
    "Projections of this cluster (Firestore documents and ConfigMap keys) whose RoutingEntry "
    "is gone, kept as they were served, at the last drift sweep; routingctl prune deletes them.",
    ["env"],
)
PROJECTIONS_KEPT = Counter(
    "routing_operator_projections_kept_total",
    "RoutingEntries of an env other than test deleted without routing.engines.io/allow-delete "
    '"true" whose projections were kept.',
)
LIST_PAGES_HELD = Counter(
    "routing_operator_list_pages_held_total",
    "Pages of kopf's list of the entries held back until the pages before them were handled.",
)
ENTRIES_HELD = Gauge(
    "routing_operator_entries_held",
    "New RoutingEntries waiting in the operator's intake until kopf has room for them.",
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
