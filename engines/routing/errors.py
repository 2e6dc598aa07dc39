"""One error tree for routing, drawn here so every layer raises and catches the same types.

Adapters translate their vendor's exceptions into this tree at the boundary (always chained with
``raise ... from exc``), so services, the operator and the HTTP layer never see a Firestore,
Redis or GCS exception type::

    RoutingError
    ├── ConfigMissing           no entry resolves for (kind, tenant, env, project)
    ├── InvalidRouting          an entry or a backend config breaks a rule (bad field, bad pair)
    │   └── TestBackendNotAllowed   a test-only backend without ENGINES_ALLOW_TEST_BACKENDS=1
    ├── EntryExists             create() of a key that is already stored
    ├── BackendUnavailable      a backend (or the registry store) cannot be reached right now
    └── OwnershipConflict       a projection is owned by another RoutingEntry
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .contract import RoutingKey

__all__ = [
    "BackendUnavailable",
    "ConfigMissing",
    "EntryExists",
    "InvalidRouting",
    "OwnershipConflict",
    "RoutingError",
    "TestBackendNotAllowed",
]


class RoutingError(Exception):
    """Base of every routing error."""


class ConfigMissing(RoutingError):
    """No routing entry resolves for a key; carries the key and every key that was tried."""

    def __init__(self, key: RoutingKey, tried: Sequence[RoutingKey]) -> None:
        self.key = key
        self.tried = tuple(tried)
        super().__init__(str(self))

    def __str__(self) -> str:
        tried = ", ".join(k.document_id for k in self.tried)
        return (
            f"no RoutingEntry for resource_kind={self.key.resource_kind} "
            f"tenant={self.key.tenant} env={self.key.env} project={self.key.project} "
            f"(tried {tried}); create one with `kubectl apply` (spec.resourceKind="
            f"{self.key.resource_kind}, spec.env={self.key.env})"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key.as_dict(),
            "tried": [k.document_id for k in self.tried],
            "message": str(self),
        }


class InvalidRouting(RoutingError):
    """An entry or backend config breaks a rule; ``field`` names where, the message says the fix."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class TestBackendNotAllowed(InvalidRouting):
    """A test-only backend (memory/noop/local) was asked for outside tests."""

    __test__ = False  # not a pytest test class


class EntryExists(RoutingError):
    """``create`` of a key that is already stored; use ``update`` to change it."""

    def __init__(self, key: RoutingKey) -> None:
        self.key = key
        super().__init__(f"a routing entry already exists for {key}; update it instead")


class BackendUnavailable(RoutingError):
    """A backend or the registry store cannot be reached; retrying later may succeed."""


class OwnershipConflict(RoutingError):
    """A projection (Firestore document, ConfigMap key) belongs to another RoutingEntry."""

    def __init__(self, message: str, *, owner_uid: str | None = None) -> None:
        self.owner_uid = owner_uid
        super().__init__(message)
