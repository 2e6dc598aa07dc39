"""The factory registry: ``(resource_kind, backend)`` → adapter constructor, and ``build_backend``.

Which port a kind uses is data (:data:`KIND_PORTS`); which adapter serves a (kind, backend) pair
is one explicit registration each, in :func:`_register_defaults`. A test checks the registrations
against the catalog both ways (every allowed pair registered, nothing outside it), and
registering a pair twice fails loudly — so adding a backend is one catalog edit plus one adapter,
never an ``if backend == ...`` chain in a service.

Adapters are referenced by import path and imported on first build, so importing this module
pulls in no cloud SDK: a pod that routes everything to Firestore never imports ``redis``.

``build_backend`` is the only way services get a backend. It checks, in order: the pair is in the
catalog; a test-only backend is allowed (``ENGINES_ALLOW_TEST_BACKENDS=1`` upstream); the served
tenant is a concrete tenant the record applies to; then the adapter parses its typed settings and
fails there (``InvalidRouting`` naming the field, e.g. ``redis.url``). No environment variable
ever picks a backend, and nothing falls back to memory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engines.ports import (
    BlobStore,
    DocumentStore,
    LockManager,
    MessageBus,
    Port,
    PresenceRegistry,
    RateLimiter,
)
from engines.ports.base import check_tenant
from engines.ports.errors import InvalidArgument
from engines.routing.catalog import (
    CATALOG,
    TEST_ONLY_BACKENDS,
    Backend,
    ResourceKind,
    StorageShape,
)
from engines.routing.errors import InvalidRouting, TestBackendNotAllowed
from engines.routing.model import RoutingRecord

__all__ = [
    "KIND_PORTS",
    "AdapterFactory",
    "DuplicateFactory",
    "FactoryRegistry",
    "build_backend",
    "check_buildable",
    "port_for",
    "registry",
]

K = ResourceKind

SHAPE_PORTS: dict[StorageShape, type[Port]] = {
    StorageShape.DOCUMENTS: DocumentStore,
    StorageShape.LOCKS: LockManager,
    StorageShape.RATE_LIMITS: RateLimiter,
    StorageShape.PRESENCE: PresenceRegistry,
    StorageShape.MESSAGES: MessageBus,
    StorageShape.BLOBS: BlobStore,
}
KIND_PORTS: dict[ResourceKind, type[Port]] = {
    kind: SHAPE_PORTS[spec.shape] for kind, spec in CATALOG.items()
}
"""The port each resource kind is served through."""


def port_for(kind: ResourceKind | str) -> type[Port]:
    """The port class of ``kind``; ``InvalidRouting`` for a kind outside the catalog."""
    try:
        return KIND_PORTS[ResourceKind(kind)]
    except ValueError:
        raise InvalidRouting(f"unknown resource kind {kind!r}", field="resource_kind") from None


class DuplicateFactory(ValueError):
    """A (resource_kind, backend) pair was registered twice: a programming error."""


@dataclass(frozen=True, slots=True)
class AdapterFactory:
    """An adapter class named by import path (``package.module:Class``), imported on first use."""

    target: str

    def load(self) -> Callable[..., Port]:
        module, _, attr = self.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        return cls  # type: ignore[no-any-return]

    def __call__(
        self, config: Mapping[str, Any], *, tenant: str, secret: str | None = None
    ) -> Port:
        return self.load()(config, tenant=tenant, secret=secret)


class FactoryRegistry:
    """Unique ``(ResourceKind, Backend)`` keys → factories."""

    def __init__(self) -> None:
        self._factories: dict[tuple[ResourceKind, Backend], AdapterFactory] = {}

    def register(
        self, kind: ResourceKind | str, backend: Backend | str, factory: AdapterFactory | str
    ) -> None:
        key = (ResourceKind(kind), Backend(backend))
        if key in self._factories:
            raise DuplicateFactory(
                f"an adapter factory for resource_kind={key[0]} backend={key[1]} is already "
                f"registered ({self._factories[key].target})"
            )
        self._factories[key] = (
            factory if isinstance(factory, AdapterFactory) else AdapterFactory(factory)
        )

    def get(self, kind: ResourceKind, backend: Backend) -> AdapterFactory | None:
        return self._factories.get((kind, backend))

    def pairs(self) -> frozenset[tuple[ResourceKind, Backend]]:
        return frozenset(self._factories)

    def __iter__(self) -> Iterator[tuple[tuple[ResourceKind, Backend], AdapterFactory]]:
        return iter(sorted(self._factories.items()))


_PKG = "engines.adapters"


def _register_defaults(reg: FactoryRegistry) -> None:
    B = Backend
    documents = [k for k, port in KIND_PORTS.items() if port is DocumentStore]
    for kind in documents:
        if kind is K.NEXUS_BACKEND:
            reg.register(kind, B.NOOP, f"{_PKG}.noop:NoopDocumentStore")
        else:
            reg.register(kind, B.MEMORY, f"{_PKG}.memory.adapters:MemoryDocumentStore")
        reg.register(kind, B.FIRESTORE, f"{_PKG}.firestore.adapters:FirestoreDocumentStore")
    reg.register(K.MEMORY, B.REDIS, f"{_PKG}.redis.documents:RedisDocumentStore")

    for kind, name in (
        (K.STRATEGY_LOCK, "LockManager"),
        (K.RATE_LIMIT, "RateLimiter"),
        (K.REALTIME_REGISTRY, "PresenceRegistry"),
    ):
        reg.register(kind, B.FIRESTORE, f"{_PKG}.firestore.adapters:Firestore{name}")
        reg.register(kind, B.REDIS, f"{_PKG}.redis.adapters:Redis{name}")
        reg.register(kind, B.MEMORY, f"{_PKG}.memory.adapters:Memory{name}")

    reg.register(K.CHAT_BUS, B.REDIS, f"{_PKG}.redis.adapters:RedisMessageBus")
    reg.register(K.CHAT_BUS, B.MEMORY, f"{_PKG}.memory.adapters:MemoryMessageBus")

    for kind in (K.MEDIA_V2_STORAGE, K.RAW_STORAGE):
        reg.register(kind, B.GCS, f"{_PKG}.gcs.adapters:GcsBlobStore")
        reg.register(kind, B.LOCAL, f"{_PKG}.local:LocalBlobStore")


registry = FactoryRegistry()
"""The process-wide registry ``build_backend`` uses."""
_register_defaults(registry)


def check_buildable(
    record: RoutingRecord, *, tenant: str, allow_test_backends: bool
) -> AdapterFactory:
    """The checks that come before anything is read or built; returns the pair's factory.

    Called before a ``secretRef`` is resolved, so a record this pod must not build (a test-only
    backend without the flag, another tenant's entry) never makes it read a Secret.
    """
    kind, backend = ResourceKind(record.resource_kind), Backend(record.backend)
    if backend not in CATALOG[kind].allowed:
        raise InvalidRouting(
            f"backend {backend} is not allowed for resource_kind {kind}; allowed: "
            + ", ".join(CATALOG[kind].allowed),
            field="backend",
        )
    if backend in TEST_ONLY_BACKENDS and not allow_test_backends:
        raise TestBackendNotAllowed(
            f"backend {backend} is test-only (resource_kind {kind}, env {record.env}); set "
            "ENGINES_ALLOW_TEST_BACKENDS=1 to build it in tests, or route to a durable backend",
            field="backend",
        )
    try:
        check_tenant(tenant)
    except InvalidArgument as exc:
        raise InvalidRouting(str(exc), field="tenant") from exc
    if record.tenant not in ("*", tenant):
        raise InvalidRouting(
            f"the entry is for tenant {record.tenant}, not the served tenant {tenant}",
            field="tenant",
        )
    factory = registry.get(kind, backend)
    if factory is None:  # the catalog test makes this unreachable
        raise InvalidRouting(f"no adapter registered for {kind}/{backend}", field="backend")
    return factory


def build_backend(
    record: RoutingRecord,
    *,
    tenant: str,
    allow_test_backends: bool,
    secret_value: str | None = None,
) -> Port:
    """Build the adapter ``record`` routes to, for the served ``tenant``.

    ``tenant`` is the tenant being served (the record's may be ``*``); ``secret_value`` is the
    resolved ``secretRef`` (Redis password, service-account JSON). Raises ``InvalidRouting``
    (naming the field), ``TestBackendNotAllowed``, or ``BackendUnavailable`` when credentials
    cannot be loaded. Does no network I/O: call ``await port.ping()`` to check reachability.
    """
    factory = check_buildable(record, tenant=tenant, allow_test_backends=allow_test_backends)
    port = factory(record.config, tenant=tenant, secret=secret_value)
    expected = port_for(record.resource_kind)
    assert isinstance(port, expected), (port, expected)
    return port
