"""HTTP: ``POST /nexus/hardening/rate-limit/{key}`` counts a hit; 429 once over the limit."""

from __future__ import annotations

from typing import Annotated

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from engines.ports import RateLimiter
from engines.routing.catalog import ResourceKind
from engines.runtime.http import ServiceRouter, backend

__all__ = ["HitRequest", "router"]

KIND = ResourceKind.RATE_LIMIT
router = ServiceRouter(kinds=[KIND], prefix="/nexus/hardening", tags=[KIND.value])
Limiter = Annotated[RateLimiter, backend(KIND, RateLimiter)]


class HitRequest(BaseModel):
    limit: Annotated[int, Field(ge=1)] = 60
    window_s: Annotated[float, Field(ge=0.001, le=86_400)] = 60.0


@router.post(
    "/rate-limit/{key}",
    summary="Count one hit for the key: 200 when allowed, 429 when over the limit",
    responses={429: {"description": "over the limit for this window"}},
)
async def hit(key: str, body: HitRequest, limiter: Limiter) -> JSONResponse:
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
