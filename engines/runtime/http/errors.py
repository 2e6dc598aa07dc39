"""Routing and port errors as HTTP answers: one JSON shape, ``{"error": <type>, "detail": ...}``.

The status says who must act: 500 for routing the operator must fix (``ConfigMissing``,
``InvalidRouting``), 503 for a backend that cannot be reached (retry), 4xx for the caller.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engines.ports.errors import Conflict, InvalidArgument, NotFound, NotSupported
from engines.routing.errors import BackendUnavailable, ConfigMissing, InvalidRouting, RoutingError

from ..manager import TenantNotServed

__all__ = ["STATUS_BY_ERROR", "error_response", "install_error_handlers"]

STATUS_BY_ERROR: dict[type[Exception], int] = {
    RoutingError: 500,
    ConfigMissing: 500,
    InvalidRouting: 500,
    BackendUnavailable: 503,
    NotFound: 404,
    InvalidArgument: 422,
    Conflict: 409,
    NotSupported: 501,
    TenantNotServed: 403,
}


def error_response(exc: Exception) -> JSONResponse:
    status = next((STATUS_BY_ERROR[c] for c in type(exc).__mro__ if c in STATUS_BY_ERROR), 500)
    body: dict[str, object] = {"error": type(exc).__name__, "detail": str(exc)}
    if isinstance(exc, ConfigMissing):
        body["error"] = "ConfigMissing"
        body["key"] = exc.key.as_dict()
        body["tried"] = [k.document_id for k in exc.tried]
    return JSONResponse(body, status_code=status)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in STATUS_BY_ERROR:
        app.add_exception_handler(exc_type, _handle)
