"""Budget set/spend over a ``DocumentStore`` (atomic ``update``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from engines.ports import DocumentStore
from engines.ports.errors import Conflict, NotFound

__all__ = ["COLLECTION", "Budget", "Budgets", "OverBudget"]

COLLECTION = "budgets"


class OverBudget(Conflict):
    """The spend does not fit in what is left of the budget."""


class Budget(BaseModel):
    name: str
    limit: Annotated[float, Field(ge=0)]
    spent: Annotated[float, Field(ge=0)] = 0.0
    currency: str = "USD"

    @property
    def remaining(self) -> float:
        return self.limit - self.spent


class Budgets:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    async def set(self, name: str, limit: float, currency: str = "USD") -> Budget:
        """Set (or change) the limit; what was spent so far is kept."""

        def apply(current: dict[str, Any] | None) -> dict[str, Any]:
            spent = float((current or {}).get("spent", 0.0))
            return Budget(name=name, limit=limit, spent=spent, currency=currency).model_dump()

        return Budget.model_validate(await self.store.update(COLLECTION, name, apply))

    async def get(self, name: str) -> Budget:
        data = await self.store.get(COLLECTION, name)
        if data is None:
            raise NotFound(f"budget {name!r} does not exist; set its limit first")
        return Budget.model_validate(data)

    async def spend(self, name: str, amount: float) -> Budget:
        """Add ``amount`` to what is spent; ``OverBudget`` (nothing changes) if it does not fit."""

        def apply(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                raise NotFound(f"budget {name!r} does not exist; set its limit first")
            budget = Budget.model_validate(current)
            if amount > budget.remaining:
                raise OverBudget(
                    f"spending {amount} on budget {name!r} exceeds what is left "
                    f"({budget.remaining} of {budget.limit} {budget.currency})"
                )
            budget.spent += amount
            return budget.model_dump()

        return Budget.model_validate(await self.store.update(COLLECTION, name, apply))
