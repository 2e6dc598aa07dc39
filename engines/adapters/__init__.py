"""Adapters behind the service ports, one folder per backend, and the factory that picks one.

``build_backend(record, tenant=..., allow_test_backends=...)`` turns a resolved routing record
into a port instance; ``port_for(kind)`` says which port a kind is served through. Adapter
modules (and their cloud SDKs) are imported only when a backend of that kind is built.

    memory/     every port, in process (test-only; the conformance reference)
    firestore/  DocumentStore, RateLimiter, PresenceRegistry, LockManager
    redis/      RateLimiter, MessageBus, PresenceRegistry, LockManager, DocumentStore
    gcs/        BlobStore
    local/      BlobStore on a local directory (test-only)
    noop/       DocumentStore that stores nothing (test-only)
"""

from __future__ import annotations

from .factory import (
    KIND_PORTS,
    DuplicateFactory,
    FactoryRegistry,
    build_backend,
    check_buildable,
    port_for,
)

__all__ = [
    "KIND_PORTS",
    "DuplicateFactory",
    "FactoryRegistry",
    "build_backend",
    "check_buildable",
    "port_for",
]
