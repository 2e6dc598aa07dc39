"""The HTTP side of the runtime: service routers, the backend dependency, probes, error mapping.

Services build on :class:`ServiceRouter` and :func:`backend`; the pure-document and blob kinds
share :func:`document_router` / :func:`blob_router`. Every error answers the one schema of
:mod:`.errors`; :mod:`.limits` bounds bodies and event streams; :mod:`.admin` moves ``/routing``
and ``/metrics`` to ``ENGINES_ADMIN_PORT``.
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
    SmokeRequest,
    Tenant,
    TopicName,
    backend,
    complete_openapi,
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
    "SmokeRequest",
    "Tenant",
    "TopicName",
    "backend",
    "blob_router",
    "complete_openapi",
    "document_router",
    "error_response",
    "error_responses",
    "get_slots",
    "install_error_handlers",
    "json_integer",
    "probes_router",
    "served_tenant",
]
