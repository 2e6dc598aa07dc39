"""Engines runtime: a backend slot per (tenant, kind), kept in step with the routing registry.

Services never build their storage clients: they lease the port of their kind from
:class:`BackendSlots`, which builds each backend from the routing entry that resolves for it,
swaps it atomically when the entry changes, drains the old one, keeps the last known-good backend
when a new one cannot be built, and reports each slot's state to ``/readyz`` and ``/routing``.

Public surface: ``BackendSlots``, ``BackendFactory``, ``adapter_factory``, ``SlotLease``, ``Slot``,
``SlotStatus``, ``SlotFailure``, ``TenantNotServed``, the secret resolvers, and the reports.
HTTP glue lives in :mod:`engines.runtime.http`.
"""

from .factory import BackendFactory, adapter_factory
from .manager import BackendSlots, TenantNotServed
from .reports import readiness, routing_table
from .secrets import DEFAULT_SECRETS_DIR, MountedSecrets, SecretResolver
from .slots import HeldBackend, Slot, SlotFailure, SlotLease, SlotStatus

__all__ = [
    "DEFAULT_SECRETS_DIR",
    "BackendFactory",
    "BackendSlots",
    "HeldBackend",
    "MountedSecrets",
    "SecretResolver",
    "Slot",
    "SlotFailure",
    "SlotLease",
    "SlotStatus",
    "TenantNotServed",
    "adapter_factory",
    "readiness",
    "routing_table",
]
