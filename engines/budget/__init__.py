"""Budgets per tenant: set a limit, spend against it atomically, never overspend (kind ``budget``).

``spend`` is one read-modify-write transaction: two concurrent spends can never both pass a check
that only one of them fits, on any backend that claims ``transaction``.
"""

from .router import router
from .service import Budget, Budgets, OverBudget

__all__ = ["Budget", "Budgets", "OverBudget", "router"]
