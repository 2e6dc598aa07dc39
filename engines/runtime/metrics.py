"""Prometheus metrics of the backend slots: what is served, what switched, what failed to build.

A failed build must never be silent: besides ``/routing`` and the log line, it is counted here so
an alert can fire while the pod keeps serving its last known-good backend. Metrics live in the
process-wide default registry (one set per process, whatever the number of apps built in tests).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BUILD_FAILURES",
    "SLOT_READY",
    "SLOT_STALE",
    "SWITCHES",
    "SWITCH_SECONDS",
]

SLOT_READY = Gauge(
    "engines_backend_slot_ready",
    "1 while the (tenant, resource_kind) slot serves a backend, 0 while it cannot serve",
    ["tenant", "resource_kind"],
)
SLOT_STALE = Gauge(
    "engines_backend_slot_stale",
    "1 while the slot serves its last known-good backend because the newest entry failed to build",
    ["tenant", "resource_kind"],
)
SWITCHES = Counter(
    "engines_backend_switches_total",
    "Backends swapped into a slot (first build included)",
    ["resource_kind", "backend"],
)
BUILD_FAILURES = Counter(
    "engines_backend_build_failures_total",
    "Backends that could not be built or reached (reason: invalid or unavailable)",
    ["resource_kind", "backend", "reason"],
)
SWITCH_SECONDS = Histogram(
    "engines_backend_switch_seconds",
    "From a registry change reaching the pod to the new backend serving",
    ["resource_kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
