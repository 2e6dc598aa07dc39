"""``/livez``, ``/readyz`` and ``/routing`` (§6): liveness without I/O, readiness from the slots.

``/livez`` never touches a backend or the registry: a slow Firestore must not get the pod
restarted. ``/readyz`` answers from in-memory slot state only (see :mod:`..reports`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..reports import readiness, routing_table
from .routers import get_slots

__all__ = ["probes_router", "routing_router"]

_READY = JSONResponse({"status": "ready"})
_ALIVE = JSONResponse({"status": "alive"})


class Alive(BaseModel):
    status: Literal["alive"]


class NotReady(BaseModel):
    """Why the pod is not ready: each (tenant, kind) key with no entry, a bad one, or no backend."""

    model_config = ConfigDict(extra="allow")

    status: Literal["not_ready"]
    missing: list[dict[str, Any]] = Field(description="{tenant, env, project, resource_kind}")
    invalid: list[dict[str, Any]] = Field(description="The key, reason, message and revision")
    unavailable: list[dict[str, Any]] = Field(description="The key, reason, message and revision")


class Ready(BaseModel):
    status: Literal["ready"]


def probes_router() -> APIRouter:
    router = APIRouter(tags=["probes"])

    @router.get(
        "/livez", summary="200 while the process is alive (no backend I/O)", response_model=Alive
    )
    async def livez() -> JSONResponse:
        return _ALIVE

    @router.get(
        "/readyz",
        summary="200 when every mounted kind serves every tenant, else 503",
        response_model=Ready,
        responses={503: {"model": NotReady, "description": "Not ready; the body says why"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        ready, body = readiness(get_slots(request), request.app.state.registry)
        if ready:
            return _READY
        return JSONResponse(body, status_code=503)

    return router


def routing_router() -> APIRouter:
    """``/routing``: on the app port, or on the admin port when ``ENGINES_ADMIN_PORT`` is set."""
    router = APIRouter(tags=["admin"])

    @router.get("/routing", summary="The effective routing table (no secrets), with revisions")
    async def routing(request: Request) -> dict[str, Any]:
        state = request.app.state
        return routing_table(get_slots(request), state.registry, source=state.routing_source)

    return router
