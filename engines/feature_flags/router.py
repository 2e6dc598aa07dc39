"""HTTP: ``/feature-flags`` list, get, set, evaluate."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from engines.ports import DocumentStore
from engines.ports.errors import NotFound
from engines.routing.catalog import ResourceKind
from engines.runtime.http import Key, ServiceRouter, SmokeRequest, backend, error_responses

from .service import Evaluation, FeatureFlags, Flag

__all__ = ["router"]

KIND = ResourceKind.FEATURE_FLAGS
router = ServiceRouter(
    kinds=[KIND],
    prefix="/feature-flags",
    tags=[KIND.value],
    smoke=SmokeRequest("GET", "/feature-flags/probe/evaluate?subject=s"),
)


def _flags(store: Annotated[DocumentStore, backend(KIND, DocumentStore)]) -> FeatureFlags:
    return FeatureFlags(store)


Flags = Annotated[FeatureFlags, Depends(_flags)]


@router.get("", summary="All flags of the tenant")
async def list_flags(
    flags: Flags, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Flag]:
    return await flags.list(limit)


@router.get("/{name}", summary="One flag", responses=error_responses(404))
async def get_flag(name: Key, flags: Flags) -> Flag:
    flag = await flags.get(name)
    if flag is None:
        raise NotFound(f"flag {name!r} does not exist")
    return flag


@router.put("/{name}", summary="Create or replace a flag", responses=error_responses(400, 413))
async def set_flag(name: Key, flag: Flag, flags: Flags) -> Flag:
    return await flags.set(name, flag)


@router.get("/{name}/evaluate", summary="Is the flag on for this subject?")
async def evaluate_flag(
    name: Key, flags: Flags, subject: Annotated[str, Query(min_length=1)]
) -> Evaluation:
    return await flags.evaluate(name, subject)
