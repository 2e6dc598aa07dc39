"""The HTTP side of the runtime: service routers, the backend dependency, probes, error mapping.

Services build on :class:`ServiceRouter` and :func:`backend`; the pure-document and blob kinds
share :func:`document_router` / :func:`blob_router`.
"""

from .blobs import blob_router
from .documents import document_router
from .errors import error_response, install_error_handlers
from .probes import probes_router
from .routers import TENANT_HEADER, ServiceRouter, Tenant, backend, get_slots, served_tenant

__all__ = [
    "TENANT_HEADER",
    "ServiceRouter",
    "Tenant",
    "backend",
    "blob_router",
    "document_router",
    "error_response",
    "get_slots",
    "install_error_handlers",
    "probes_router",
    "served_tenant",
]
