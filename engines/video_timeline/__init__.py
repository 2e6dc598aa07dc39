"""Video timelines (clips and their order) per tenant.

Kind `video_timeline`: plain JSON documents by id, served by the shared document router.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(
    ResourceKind.VIDEO_TIMELINE, prefix="/video-timeline", collection="timelines", noun="timeline"
)
