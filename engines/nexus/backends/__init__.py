"""Nexus backend descriptors: which model backends a tenant's nexus may call.

Kind `nexus_backend`: plain JSON documents by id, served by the shared document router.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(
    ResourceKind.NEXUS_BACKEND,
    prefix="/nexus/backends",
    collection="backends",
    noun="backend descriptor",
)
