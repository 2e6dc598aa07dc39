"""One generic document-CRUD router, shared by every kind that is "just documents".

Nine services (SEO, page content, maybes, firearms, ...) store JSON documents by id and need no
logic beyond validation the port already does; they mount this router with their kind and
collection instead of each carrying a copy of the same four endpoints.
"""

from typing import Annotated, Any

from fastapi import Body, Query, Response

from engines.ports import DocumentStore
from engines.ports.document_store import MAX_LIMIT
from engines.ports.errors import NotFound
from engines.routing.catalog import ResourceKind

from .errors import error_responses
from .routers import Key, KeyQuery, ServiceRouter, SmokeRequest, backend

__all__ = ["document_router"]


def document_router(
    kind: ResourceKind, *, prefix: str, collection: str, noun: str = "document"
) -> ServiceRouter:
    """``GET {prefix}``, ``GET/PUT/DELETE {prefix}/{id}`` over ``collection`` of ``kind``."""
    router = ServiceRouter(
        kinds=[kind], prefix=prefix, tags=[kind.value], smoke=SmokeRequest("GET", prefix)
    )
    Store = Annotated[DocumentStore, backend(kind, DocumentStore)]

    @router.get("", summary=f"List {noun}s ordered by id")
    async def list_documents(
        store: Store,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        start_after: Annotated[str | None, KeyQuery] = None,
    ) -> dict[str, Any]:
        docs = await store.list(collection, limit=limit, start_after=start_after)
        items = [{"id": d.id, "data": d.data} for d in docs]
        return {"items": items, "next": docs[-1].id if len(docs) == limit else None}

    @router.get("/{doc_id}", summary=f"Read one {noun}", responses=error_responses(404))
    async def get_document(doc_id: Key, store: Store) -> dict[str, Any]:
        data = await store.get(collection, doc_id)
        if data is None:
            raise NotFound(f"{noun} {doc_id!r} does not exist")
        return {"id": doc_id, "data": data}

    @router.put(
        "/{doc_id}", summary=f"Create or replace one {noun}", responses=error_responses(400, 413)
    )
    async def put_document(
        doc_id: Key, data: Annotated[dict[str, Any], Body()], store: Store
    ) -> dict[str, Any]:
        await store.put(collection, doc_id, data)
        return {"id": doc_id, "data": data}

    @router.delete("/{doc_id}", status_code=204, summary=f"Delete one {noun}")
    async def delete_document(doc_id: Key, store: Store) -> Response:
        await store.delete(collection, doc_id)
        return Response(status_code=204)

    return router
