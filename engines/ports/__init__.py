"""Service ports: one small async interface per shape of storage (DESIGN §7).

Services talk to these interfaces only; adapters under :mod:`engines.adapters` implement them,
one folder per backend, and :func:`engines.adapters.build_backend` picks one from a routing
record. Optional abilities are declared per adapter as ``features`` (:class:`Feature`).

=================  ===============================================  ==========================
port               operations                                       optional (features)
=================  ===============================================  ==========================
DocumentStore      get, put, delete, list                           query, update, increment
RateLimiter        hit -> Decision
MessageBus         publish, subscribe -> Subscription
PresenceRegistry   register, unregister, list -> [Member]
BlobStore          put, get, delete, list
LockManager        acquire -> Lease | None, renew, release
=================  ===============================================  ==========================

Every port also has ``ping()`` (raises ``BackendUnavailable``) and ``aclose()``.
"""

from __future__ import annotations

from .base import Port
from .blob_store import BlobStore
from .document_store import Document, DocumentStore, Updater
from .errors import (
    BackendUnavailable,
    Conflict,
    InvalidArgument,
    LockNotHeld,
    NotFound,
    NotSupported,
    PortError,
)
from .features import Feature
from .lock_manager import Lease, LockManager
from .message_bus import MessageBus, Subscription
from .presence import Member, PresenceRegistry
from .rate_limiter import Decision, RateLimiter

__all__ = [
    "BackendUnavailable",
    "BlobStore",
    "Conflict",
    "Decision",
    "Document",
    "DocumentStore",
    "Feature",
    "InvalidArgument",
    "Lease",
    "LockManager",
    "LockNotHeld",
    "Member",
    "MessageBus",
    "NotFound",
    "NotSupported",
    "Port",
    "PortError",
    "PresenceRegistry",
    "RateLimiter",
    "Subscription",
    "Updater",
]
