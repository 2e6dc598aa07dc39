"""The no-op DocumentStore (test-only): accepts every write, stores nothing, reads nothing.

It claims no feature, not even ``READ_YOUR_WRITES``; the conformance suite holds it to exactly
that (writes accepted, reads empty, optional operations ``NotSupported``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engines.ports.base import check_collection, check_key, check_tenant
from engines.ports.document_store import (
    Documents,
    DocumentStore,
    check_data,
    check_limit,
    check_ref,
)
from engines.routing.catalog import Backend, NoopSettings

from .._settings import parse_settings

__all__ = ["NoopDocumentStore"]


class NoopDocumentStore(DocumentStore):
    backend = Backend.NOOP

    def __init__(
        self,
        config: Mapping[str, Any] | NoopSettings | None = None,
        *,
        tenant: str,
        secret: str | None = None,
    ) -> None:
        self.settings = parse_settings(Backend.NOOP, NoopSettings, config or {})
        self.tenant = check_tenant(tenant)

    async def get(self, collection: str, id: str) -> dict[str, Any] | None:
        check_ref(collection, id)
        return None

    async def put(self, collection: str, id: str, data: dict[str, Any]) -> None:
        check_ref(collection, id)
        check_data(data)

    async def delete(self, collection: str, id: str) -> None:
        check_ref(collection, id)

    async def list(
        self, collection: str, *, limit: int = 100, start_after: str | None = None
    ) -> Documents:
        check_collection(collection)
        check_limit(limit)
        if start_after is not None:
            check_key(start_after)
        return []
