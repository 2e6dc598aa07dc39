"""Firearms catalogue records per tenant.

Kind `firearms`: plain JSON documents by id, served by the shared document router.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(
    ResourceKind.FIREARMS, prefix="/firearms", collection="firearms", noun="firearm record"
)
