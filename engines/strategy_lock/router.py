"""HTTP: ``/strategy-lock/{name}`` acquire, renew, release (409 when held by someone else)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Response
from pydantic import BaseModel, Field, StrictFloat

from engines.ports import Lease, LockManager
from engines.ports.errors import Conflict
from engines.routing.catalog import ResourceKind
from engines.runtime.http import Key, ServiceRouter, SmokeRequest, backend, error_responses

__all__ = ["AcquireRequest", "LeaseBody", "router"]

KIND = ResourceKind.STRATEGY_LOCK
router = ServiceRouter(
    kinds=[KIND],
    prefix="/strategy-lock",
    tags=[KIND.value],
    smoke=SmokeRequest("POST", "/strategy-lock/probe/acquire", {"owner": "probe", "ttl_s": 0.5}),
)
Locks = Annotated[LockManager, backend(KIND, LockManager)]


class AcquireRequest(BaseModel):
    owner: Annotated[str, Field(min_length=1, max_length=256)]
    ttl_s: Annotated[StrictFloat, Field(gt=0, le=86_400)] = 30.0


class LeaseBody(BaseModel):
    name: str
    owner: str
    token: str
    ttl_s: Annotated[StrictFloat, Field(gt=0, le=86_400)]

    @classmethod
    def of(cls, lease: Lease) -> LeaseBody:
        return cls(name=lease.name, owner=lease.owner, token=lease.token, ttl_s=lease.ttl_s)

    def lease(self) -> Lease:
        return Lease(name=self.name, owner=self.owner, token=self.token, ttl_s=self.ttl_s)


@router.post(
    "/{name}/acquire",
    summary="Take the lock if free; 409 if someone holds it",
    responses=error_responses(400, 409, 413),
)
async def acquire(name: Key, body: AcquireRequest, locks: Locks) -> LeaseBody:
    lease = await locks.acquire(name, ttl_s=body.ttl_s, owner=body.owner)
    if lease is None:
        raise Conflict(f"strategy lock {name!r} is held by someone else")
    return LeaseBody.of(lease)


@router.post(
    "/{name}/renew",
    summary="Extend a held lease; 409 if it was lost",
    responses=error_responses(400, 409, 413),
)
async def renew(name: Key, body: LeaseBody, locks: Locks) -> LeaseBody:
    return LeaseBody.of(await locks.renew(body.model_copy(update={"name": name}).lease()))


@router.post(
    "/{name}/release",
    status_code=204,
    summary="Give the lock up",
    responses=error_responses(400, 409, 413),
)
async def release(name: Key, body: LeaseBody, locks: Locks) -> Response:
    await locks.release(body.model_copy(update={"name": name}).lease())
    return Response(status_code=204)
