"""Agent memory: what an assistant remembers about a tenant, one document per memory.

Kind `memory` (the catalog's name, unrelated to the test-only ``memory`` backend): plain JSON
documents by id, served by the shared document router. The package is ``agent_memory`` so that in
module names "memory" only ever means the in-process backend.
"""

from engines.routing.catalog import ResourceKind
from engines.runtime.http import document_router

__all__ = ["router"]

router = document_router(
    ResourceKind.MEMORY, prefix="/memory", collection="memories", noun="memory"
)
