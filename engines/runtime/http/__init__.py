"""The HTTP side of the runtime: service routers, the backend dependency, probes, error mapping.

Services build on :class:`ServiceRouter` and :func:`backend`; the pure-document and blob kinds
share :func:`document_router` / :func:`blob_router`.
"""

from .blobs import blob_router
from .documents import document_router
from .errors import ErrorBody, error_response, error_responses, install_error_handlers
from .probes import probes_router
from .routers import (
    TENANT_HEADER,
    BlobName,
    Key,
    ServiceRouter,
    Tenant,
    TopicName,
    backend,
    document_served_tenants,
    get_slots,
    json_integer,
    served_tenant,
)

__all__ = [
    "TENANT_HEADER",
    "BlobName",
    "ErrorBody",
    "Key",
    "ServiceRouter",
    "Tenant",
    "TopicName",
    "backend",
    "blob_router",
    "document_router",
    "document_served_tenants",
    "error_response",
    "error_responses",
    "get_slots",
    "install_error_handlers",
    "json_integer",
    "probes_router",
    "served_tenant",
]
