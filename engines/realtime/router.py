"""HTTP: ``PUT/DELETE /realtime/presence/{member_id}``, ``GET /realtime/presence``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Response
from pydantic import BaseModel, Field, StrictFloat

from engines.ports import PresenceRegistry
from engines.routing.catalog import ResourceKind
from engines.runtime.http import Key, ServiceRouter, SmokeRequest, backend, error_responses

__all__ = ["Heartbeat", "router"]

KIND = ResourceKind.REALTIME_REGISTRY
router = ServiceRouter(
    kinds=[KIND],
    prefix="/realtime/presence",
    tags=[KIND.value],
    smoke=SmokeRequest("GET", "/realtime/presence"),
)
Presence = Annotated[PresenceRegistry, backend(KIND, PresenceRegistry)]


class Heartbeat(BaseModel):
    info: dict[str, Any] = Field(default_factory=dict)
    ttl_s: Annotated[StrictFloat, Field(gt=0, le=3600)] = 30.0


@router.put(
    "/{member_id}",
    summary="Register or refresh a member for ttl_s seconds",
    responses=error_responses(400, 413),
)
async def register(member_id: Key, body: Heartbeat, presence: Presence) -> dict[str, Any]:
    await presence.register(member_id, body.info, body.ttl_s)
    return {"member_id": member_id, "ttl_s": body.ttl_s}


@router.delete("/{member_id}", status_code=204, summary="Remove a member")
async def unregister(member_id: Key, presence: Presence) -> Response:
    await presence.unregister(member_id)
    return Response(status_code=204)


@router.get("", summary="Live members, ordered by id")
async def members(presence: Presence) -> dict[str, list[dict[str, Any]]]:
    return {
        "members": [
            {"member_id": m.member_id, "info": m.info, "expires_in": m.expires_in}
            for m in await presence.list()
        ]
    }
