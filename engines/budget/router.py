"""HTTP: ``PUT /budget/{name}`` sets the limit, ``POST .../spend`` spends (409 when over)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from pydantic import BaseModel, Field, StrictFloat

from engines.ports import DocumentStore
from engines.routing.catalog import ResourceKind
from engines.runtime.http import Key, ServiceRouter, SmokeRequest, backend, error_responses

from .service import Budget, Budgets

__all__ = ["LimitRequest", "SpendRequest", "router"]

KIND = ResourceKind.BUDGET
router = ServiceRouter(
    kinds=[KIND],
    prefix="/budget",
    tags=[KIND.value],
    smoke=SmokeRequest("PUT", "/budget/probe", {"limit": 1}),
)


def _budgets(store: Annotated[DocumentStore, backend(KIND, DocumentStore)]) -> Budgets:
    return Budgets(store)


BudgetService = Annotated[Budgets, Depends(_budgets)]


class LimitRequest(BaseModel):
    limit: Annotated[StrictFloat, Field(ge=0)]
    currency: Annotated[str, Field(min_length=3, max_length=3)] = "USD"


class SpendRequest(BaseModel):
    amount: Annotated[StrictFloat, Field(gt=0)]


def _body(budget: Budget) -> dict[str, Any]:
    return {**budget.model_dump(), "remaining": budget.remaining}


@router.put(
    "/{name}",
    summary="Set the budget's limit (spent amount is kept)",
    responses=error_responses(400, 409, 413),
)
async def set_limit(name: Key, body: LimitRequest, budgets: BudgetService) -> dict[str, Any]:
    return _body(await budgets.set(name, body.limit, body.currency))


@router.get(
    "/{name}", summary="The budget: limit, spent, remaining", responses=error_responses(404)
)
async def get_budget(name: Key, budgets: BudgetService) -> dict[str, Any]:
    return _body(await budgets.get(name))


@router.post(
    "/{name}/spend",
    summary="Spend from the budget; 409 when it does not fit",
    responses=error_responses(400, 404, 409, 413),
)
async def spend(name: Key, body: SpendRequest, budgets: BudgetService) -> dict[str, Any]:
    return _body(await budgets.spend(name, body.amount))
