"""Nexus raw storage: request/response payloads kept verbatim for audit and replay.

Kind ``raw_storage``: blobs through the shared blob router (a GCS bucket in production; a
missing bucket fails when the backend is built, never at the first write).
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import blob_router

__all__ = ["router"]

router = blob_router(ResourceKind.RAW_STORAGE, prefix="/nexus/raw-storage/blobs")
