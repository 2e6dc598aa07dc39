"""Routing: which backend each (tenant, env, project, resource_kind) uses, and how to resolve it.

Public surface: the model (``RoutingEntrySpec``, ``RoutingRecord``), the catalog, the error tree,
the resolution table and the registries; and, imported from their own modules, the projection
contract (``engines.routing.contract``: names, identities, documents, the tie-break) and the one
gateway to the routing collection (``engines.routing.collection``). Everything else in this
package is private.
"""

from .catalog import CATALOG, Backend, ResourceKind, allowed_backends
from .contract import RoutingKey
from .errors import (
    BackendUnavailable,
    ConfigMissing,
    EntryExists,
    InvalidRouting,
    OwnershipConflict,
    RoutingError,
    TestBackendNotAllowed,
)
from .model import RoutingEntrySpec, RoutingRecord, SecretRef, Source, parse_spec
from .registry import (
    FileRoutingRegistry,
    FirestoreRoutingRegistry,
    InMemoryRoutingRegistry,
    RoutingRegistry,
)
from .table import ChangeType, RoutingChange, RoutingTable, candidate_keys

__all__ = [
    "CATALOG",
    "Backend",
    "BackendUnavailable",
    "ChangeType",
    "ConfigMissing",
    "EntryExists",
    "FileRoutingRegistry",
    "FirestoreRoutingRegistry",
    "InMemoryRoutingRegistry",
    "InvalidRouting",
    "OwnershipConflict",
    "ResourceKind",
    "RoutingChange",
    "RoutingEntrySpec",
    "RoutingError",
    "RoutingKey",
    "RoutingRecord",
    "RoutingRegistry",
    "RoutingTable",
    "SecretRef",
    "Source",
    "TestBackendNotAllowed",
    "allowed_backends",
    "candidate_keys",
    "parse_spec",
]
