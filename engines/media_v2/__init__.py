"""Media v2: tenant media files (images, video) stored as blobs.

Kind ``media_v2_storage``: blobs through the shared blob router (GCS in production).
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import blob_router

__all__ = ["router"]

router = blob_router(ResourceKind.MEDIA_V2_STORAGE, prefix="/media-v2/blobs")
