"""SEO metadata (title, description, canonical URL) per page and tenant.

Kind `seo`: plain JSON documents by id, served by the shared document router.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(
    ResourceKind.SEO, prefix="/seo", collection="pages", noun="SEO page metadata"
)
