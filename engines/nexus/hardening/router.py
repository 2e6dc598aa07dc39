"""HTTP: ``POST /nexus/hardening/rate-limit/{key}`` counts a hit; 429 once over the limit."""

from __future__ import annotations

from typing import Annotated

from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field, StrictFloat

from engines.ports import RateLimiter
from engines.routing.catalog import ResourceKind
from engines.runtime.http import (
    Key,
    ServiceRouter,
    SmokeRequest,
    backend,
    error_responses,
    json_integer,
)

__all__ = ["HitDecision", "HitRequest", "router"]

KIND = ResourceKind.RATE_LIMIT
router = ServiceRouter(
    kinds=[KIND],
    prefix="/nexus/hardening",
    tags=[KIND.value],
    smoke=SmokeRequest("POST", "/nexus/hardening/rate-limit/probe", {"limit": 1_000_000}),
)
Limiter = Annotated[RateLimiter, backend(KIND, RateLimiter)]


class HitRequest(BaseModel):
    limit: Annotated[int, Field(ge=1), BeforeValidator(json_integer)] = 60
    window_s: Annotated[StrictFloat, Field(ge=0.001, le=86_400)] = 60.0


class HitDecision(BaseModel):
    allowed: bool
    limit: int
    remaining: int
    reset_after: float


@router.post(
    "/rate-limit/{key}",
    summary="Count one hit for the key: 200 when allowed, 429 when over the limit",
    responses={
        429: {
            "description": "Over the limit for this window (same body, allowed=false)",
            "model": HitDecision,
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
        **error_responses(400, 413),
    },
    response_model=HitDecision,
)
async def hit(key: Key, body: HitRequest, limiter: Limiter) -> JSONResponse:
    decision = await limiter.hit(key, limit=body.limit, window_s=body.window_s)
    payload = {
        "allowed": decision.allowed,
        "limit": decision.limit,
        "remaining": decision.remaining,
        "reset_after": decision.reset_after,
    }
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": f"{decision.reset_after:.3f}",
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, round(decision.reset_after)))
    return JSONResponse(payload, status_code=200 if decision.allowed else 429, headers=headers)
