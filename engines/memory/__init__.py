"""Agent memory: what an assistant remembers about a tenant, one document per memory.

Kind `memory`: plain JSON documents by id, served by the shared document router.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(
    ResourceKind.MEMORY, prefix="/memory", collection="memories", noun="memory"
)
