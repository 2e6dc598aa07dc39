"""Page content (the body of a page) per tenant.

Kind `page_content`: plain JSON documents by id, served by the shared document router.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(
    ResourceKind.PAGE_CONTENT, prefix="/page-content", collection="pages", noun="page"
)
