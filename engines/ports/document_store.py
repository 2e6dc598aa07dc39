"""DocumentStore: JSON documents in named collections, per tenant.

Base operations (every adapter): ``get``, ``put`` (replace), ``delete`` (idempotent), ``list``
(ordered by id, paged with ``start_after``). Optional, declared in ``features``: ``query``
(equality on a top-level field), ``update`` (atomic read-modify-write), ``increment`` (atomic
add). Document data is JSON: ``dict`` of str keys to str/int/float/bool/None/list/dict.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import Port, check_collection, check_key
from .errors import InvalidArgument, NotSupported
from .features import Feature

__all__ = [
    "Document",
    "DocumentStore",
    "Documents",
    "Updater",
    "add_to_field",
    "check_amount",
    "check_data",
    "check_field",
    "check_limit",
    "check_ref",
    "json_equal",
]

Updater = Callable[[dict[str, Any] | None], dict[str, Any] | None]
"""Gets the current document (``None`` if absent), returns the new one (``None`` deletes it).
May be called more than once when the transaction retries: keep it free of side effects.
Raising aborts the update and propagates unchanged."""

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    data: dict[str, Any]


Documents = list[Document]
"""What ``list`` and ``query`` return (an alias: inside the class ``list`` names the method)."""


class DocumentStore(Port):
    """Collections of JSON documents for one tenant."""

    @abstractmethod
    async def get(self, collection: str, id: str) -> dict[str, Any] | None:
        """The document, or ``None`` when absent."""

    @abstractmethod
    async def put(self, collection: str, id: str, data: dict[str, Any]) -> None:
        """Create or replace the document."""

    @abstractmethod
    async def delete(self, collection: str, id: str) -> None:
        """Remove the document; absent is fine."""

    @abstractmethod
    async def list(
        self, collection: str, *, limit: int = 100, start_after: str | None = None
    ) -> Documents:
        """Up to ``limit`` documents ordered by id, after ``start_after`` when given."""

    async def query(
        self, collection: str, field: str, value: Any, *, limit: int = 100
    ) -> Documents:
        """Documents whose top-level ``field`` equals ``value``, ordered by id (``QUERY``)."""
        raise NotSupported(f"{type(self).__name__} does not support {Feature.QUERY}")

    async def update(self, collection: str, id: str, fn: Updater) -> dict[str, Any] | None:
        """Atomically replace the document by ``fn(current)``; returns it (``TRANSACTION``)."""
        raise NotSupported(f"{type(self).__name__} does not support {Feature.TRANSACTION}")

    async def increment(
        self, collection: str, id: str, field: str, amount: int | float = 1
    ) -> int | float:
        """Atomically add ``amount`` to a numeric top-level field (absent counts as 0); returns
        the new value (``INCREMENT``). A non-numeric field raises ``InvalidArgument``.

        The default is a read-modify-write through ``update``, so any store that offers
        ``TRANSACTION`` gets it; a store with a native counter overrides it."""
        if Feature.INCREMENT not in self.features:
            raise NotSupported(f"{type(self).__name__} does not support {Feature.INCREMENT}")
        check_field(field)
        check_amount(amount)
        result: list[int | float] = []

        def add(current: dict[str, Any] | None) -> dict[str, Any]:
            doc, new = add_to_field(current, field, amount)
            result[:] = [new]
            return doc

        await self.update(collection, id, add)
        return result[0]


def check_field(field: str) -> str:
    if not isinstance(field, str) or not _FIELD.match(field):
        raise InvalidArgument(f"field {field!r} must be an identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return field


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be an integer in 1..{MAX_LIMIT}, got {limit!r}")
    return limit


def check_data(data: Any) -> dict[str, Any]:
    """Documents are JSON objects; anything else is refused the same way by every adapter."""
    if not isinstance(data, dict):
        raise InvalidArgument(f"document data must be a dict, got {type(data).__name__}")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"document data must be JSON-serialisable: {exc}") from exc
    return data


def check_ref(collection: str, id: str) -> None:
    check_collection(collection)
    check_key(id, "id")


def check_amount(amount: Any) -> int | float:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise InvalidArgument(f"amount must be a number, got {amount!r}")
    return amount


def add_to_field(
    current: dict[str, Any] | None, field: str, amount: int | float
) -> tuple[dict[str, Any], int | float]:
    """The shared increment rule: absent field/document counts as 0; non-numbers are refused."""
    doc = dict(current or {})
    old = doc.get(field, 0)
    if isinstance(old, bool) or not isinstance(old, int | float):
        raise InvalidArgument(f"field {field!r} holds {type(old).__name__}, not a number")
    new = old + amount
    doc[field] = new
    return doc, new


def json_equal(a: Any, b: Any) -> bool:
    """Equality the way Firestore compares values: booleans are not numbers; 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b
