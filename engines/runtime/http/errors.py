"""Every error the app answers has one JSON shape, :class:`ErrorBody`, and is in the OpenAPI doc.

``{"error": <type>, "detail": <what happened and what to do>}``, plus the fields a type adds
(``key``/``tried`` for ``ConfigMissing``, ``problems`` for ``ValidationError``, ``limit`` for
``ContentTooLarge``). Routing and port errors, FastAPI's request validation, Starlette's HTTP
errors (404 unknown path, 405 with ``Allow``, 413) and unexpected exceptions all go through
here, so a client parses one schema whatever went wrong.

The status says who must act: 500 for routing the operator must fix (``ConfigMissing``,
``InvalidRouting``), 503 for a backend that cannot be reached (retry), 4xx for the caller.
:func:`error_responses` documents those statuses on each operation with the same schema.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from engines.ports.errors import Conflict, InvalidArgument, NotFound, NotSupported
from engines.routing.errors import BackendUnavailable, ConfigMissing, InvalidRouting, RoutingError

from ..manager import TenantNotServed

__all__ = [
    "STATUS_BY_ERROR",
    "ErrorBody",
    "HTTPError",
    "Problem",
    "error_response",
    "error_responses",
    "install_error_handlers",
]

log = logging.getLogger("engines.runtime")

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


class Problem(BaseModel):
    """One broken rule of a request: where (``loc``), what (``msg``), which rule (``type``)."""

    loc: list[str | int] = Field(description='Where: ["body", "limit"], ["path", "doc_id"]...')
    msg: str = Field(description="The rule that was broken (never the value that broke it)")
    type: str = Field(description="Machine-readable rule name, e.g. missing, string_too_long")


class ErrorBody(BaseModel):
    """The body of every error response of the app."""

    error: str = Field(
        description="The error's type: ConfigMissing, InvalidRouting, BackendUnavailable, "
        "NotFound, Conflict, ValidationError, InvalidArgument, TenantNotServed, "
        "ContentTooLarge, TooManySubscribers, MethodNotAllowed, NotSupported, InternalError...",
        examples=["NotFound"],
    )
    detail: str = Field(description="What happened and, where the caller can act, what to do")
    problems: list[Problem] | None = Field(
        None, description="ValidationError: every broken rule of the request"
    )
    key: dict[str, str] | None = Field(
        None, description="ConfigMissing: the (tenant, env, project, resource_kind) resolved"
    )
    tried: list[str] | None = Field(
        None, description="ConfigMissing: the routing entry ids tried, most specific first"
    )
    limit: int | None = Field(
        None, description="ContentTooLarge: the largest body accepted, in bytes"
    )


class HTTPError(HTTPException):
    """An HTTP error with a named ``error`` type and extra body fields (``limit``...)."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.error = error
        self.fields = fields


_DESCRIPTIONS: dict[int, str] = {
    400: "BadRequest: the body cannot be read as JSON text (it is not UTF-8)",
    403: "TenantNotServed: the X-Tenant header names a tenant this pod does not serve",
    404: "NotFound: the named item does not exist",
    409: "Conflict: the operation lost a race or a precondition failed (a blob name that "
    "clashes with a prefix of other blobs, on a file-system backend)",
    413: "ContentTooLarge: the body is over ENGINES_MAX_BODY_BYTES (never read past it)",
    422: "ValidationError (the request breaks the schema) or InvalidArgument (a port rule)",
    500: "ConfigMissing or InvalidRouting: no usable RoutingEntry for this kind; the "
    "operator must fix the routing (the body names the key and the entries tried). "
    "InternalError: an unexpected failure, logged by the pod",
    501: "NotSupported: the backend routed for this kind lacks an optional ability",
    503: "BackendUnavailable: the backend cannot be reached; retry later",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``statuses``, each with the :class:`ErrorBody` schema."""
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses
    }


def _body(error: str, detail: str, **fields: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail, **{k: v for k, v in fields.items() if v is not None}}


def error_response(exc: Exception) -> JSONResponse:
    status = next((STATUS_BY_ERROR[c] for c in type(exc).__mro__ if c in STATUS_BY_ERROR), 500)
    body = _body(type(exc).__name__, str(exc))
    if isinstance(exc, ConfigMissing):
        body["error"] = "ConfigMissing"
        body["key"] = exc.key.as_dict()
        body["tried"] = [k.document_id for k in exc.tried]
    return JSONResponse(body, status_code=status)


def _error_name(status: int) -> str:
    if status == 413:  # Python 3.11 still spells it "Request Entity Too Large"
        return "ContentTooLarge"
    try:
        return re.sub(r"[^A-Za-z]", "", HTTPStatus(status).phrase.title())
    except ValueError:
        return f"HTTP{status}"


async def _routing_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, HTTPError):
        body = _body(exc.error, exc.detail, **exc.fields)
    else:
        body = _body(_error_name(exc.status_code), str(exc.detail))
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the path takes (Starlette lists only the first route's)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


def too_large_detail(limit: int) -> str:
    return (
        f"the request body is larger than {limit} bytes, the limit this pod accepts "
        "(ENGINES_MAX_BODY_BYTES)"
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # loc/msg/type only: pydantic's "input" would echo the value, which may be a secret.
    problems = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in exc.errors()
    ]
    detail = "; ".join(
        f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}" for problem in problems
    )
    return JSONResponse(
        _body("ValidationError", f"invalid request: {detail}", problems=problems),
        status_code=422,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        _body("InternalError", "unexpected error; the pod's log has the details"),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in STATUS_BY_ERROR:
        app.add_exception_handler(exc_type, _routing_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
