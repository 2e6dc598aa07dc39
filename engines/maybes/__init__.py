"""Maybes: ideas parked for later, kept per tenant until someone decides on them.

Kind `maybes`: plain JSON documents by id, served by the shared document router.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(ResourceKind.MAYBES, prefix="/maybes", collection="maybes", noun="maybe")
