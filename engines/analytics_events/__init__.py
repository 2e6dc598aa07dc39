"""Analytics events recorded per tenant (stored as documents; aggregation happens downstream).

Kind `analytics_events`: plain JSON documents by id, served by the shared document router.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(
    ResourceKind.ANALYTICS_EVENTS, prefix="/analytics-events", collection="events", noun="event"
)
