"""One generic blob router (put/get/delete/list), shared by the media and raw-storage services."""

from typing import Annotated

from fastapi import Request, Response

from engines.ports import BlobStore
from engines.routing.catalog import ResourceKind

from .errors import error_responses
from .routers import BlobName, BlobPrefix, ServiceRouter, SmokeRequest, backend

__all__ = ["blob_router"]


def blob_router(kind: ResourceKind, *, prefix: str) -> ServiceRouter:
    """``GET {prefix}?prefix=``, ``PUT/GET/DELETE {prefix}/{name:path}`` (raw bytes)."""
    router = ServiceRouter(
        kinds=[kind], prefix=prefix, tags=[kind.value], smoke=SmokeRequest("GET", prefix)
    )
    Blobs = Annotated[BlobStore, backend(kind, BlobStore)]

    @router.get("", summary="List blob names starting with a prefix")
    async def list_blobs(blobs: Blobs, prefix: BlobPrefix = "") -> dict[str, list[str]]:
        return {"names": await blobs.list(prefix)}

    @router.put(
        "/{name:path}",
        summary="Store a blob (the request body, as is)",
        openapi_extra={
            "requestBody": {
                "required": False,
                "description": "The blob's bytes (none: an empty blob); its Content-Type is "
                "stored with it",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
        responses=error_responses(409, 413),
    )
    async def put_blob(name: BlobName, request: Request, blobs: Blobs) -> dict[str, object]:
        data = await request.body()
        content_type = request.headers.get("content-type", "application/octet-stream")
        await blobs.put(name, data, content_type)
        return {"name": name, "size": len(data)}

    @router.get(
        "/{name:path}",
        summary="Read a blob",
        response_class=Response,
        responses={
            200: {
                "description": "The blob's bytes",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            },
            **error_responses(404),
        },
    )
    async def get_blob(name: BlobName, blobs: Blobs) -> Response:
        return Response(await blobs.get(name), media_type="application/octet-stream")

    @router.delete("/{name:path}", status_code=204, summary="Delete a blob")
    async def delete_blob(name: BlobName, blobs: Blobs) -> Response:
        await blobs.delete(name)
        return Response(status_code=204)

    return router
