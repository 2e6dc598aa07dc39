"""What every port shares: the ``Port`` base class and the name rules all adapters enforce.

The name rules are the intersection of what every backend accepts (Firestore document ids are the
strictest), checked in one place so an invalid name fails the same way on every adapter instead
of working on Redis and failing on Firestore.
"""

from __future__ import annotations

import math
import re
from abc import ABC
from types import TracebackType
from typing import ClassVar, Self

from engines.routing.catalog import Backend

from .errors import InvalidArgument
from .features import Feature

__all__ = ["Port", "check_collection", "check_key", "check_positive", "check_tenant"]

_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_RESERVED = re.compile(r"^__.*__$")
MAX_KEY_BYTES = 500


class Port(ABC):
    """Base of every port: declared features, a health check and an explicit close.

    Adapters are built by :func:`engines.adapters.build_backend` for one tenant; every durable
    adapter keeps that tenant's data apart from other tenants' (path, key or object prefix).
    """

    features: ClassVar[frozenset[Feature]] = frozenset()
    backend: ClassVar[Backend]

    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the backend answers (no-op for in-process ones)."""

    async def aclose(self) -> None:
        """Release connections; the adapter must not be used afterwards. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def check_tenant(tenant: str) -> str:
    """A served tenant is a DNS label (never ``*``): it becomes part of paths and keys."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidArgument(f"tenant {tenant!r} must be a DNS label (the served tenant, not *)")
    return tenant


def check_collection(collection: str) -> str:
    """Collection and topic names: ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 128 characters.

    A leading ``_`` is reserved for the adapters' own bookkeeping (``_locks``, ``_presence``...).
    """
    if not isinstance(collection, str) or not _COLLECTION.match(collection):
        raise InvalidArgument(
            f"collection {collection!r} must match [A-Za-z0-9][A-Za-z0-9_.-]* (max 128 chars)"
        )
    return collection


def check_key(key: str, what: str = "key") -> str:
    """Ids and keys: non-empty, at most 500 UTF-8 bytes, no ``/``, not ``.``/``..``/``__x__``."""
    if (
        not isinstance(key, str)
        or not key
        or "/" in key
        or "\x00" in key
        or key in (".", "..")
        or _RESERVED.match(key)
        or len(key.encode()) > MAX_KEY_BYTES
    ):
        raise InvalidArgument(
            f"{what} {key!r} must be 1..{MAX_KEY_BYTES} bytes without '/', "
            "and not '.', '..' or __x__"
        )
    return key


def check_positive(value: float, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise InvalidArgument(f"{what} must be a positive number, got {value!r}")
    return value
