"""KPI record/query over a ``DocumentStore`` (needs ``query`` and ``update``: Firestore, memory)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel

from engines.ports import DocumentStore

__all__ = ["POINTS", "SUMMARIES", "Kpis", "Point", "Summary"]

POINTS = "kpi_points"
SUMMARIES = "kpi_summaries"


class Point(BaseModel):
    metric: str
    value: float
    at: float
    labels: dict[str, str] = {}


class Summary(BaseModel):
    metric: str
    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    last: float | None = None
    last_at: float | None = None

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


class Kpis:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    async def record(
        self, metric: str, value: float, *, labels: dict[str, str] | None = None
    ) -> Summary:
        point = Point(metric=metric, value=value, at=time.time(), labels=labels or {})
        point_id = f"{metric}.{time.time_ns():020d}.{uuid.uuid4().hex[:8]}"
        await self.store.put(POINTS, point_id, point.model_dump(mode="json"))

        def add(current: dict[str, Any] | None) -> dict[str, Any]:
            s = Summary.model_validate(current or {"metric": metric})
            s.count += 1
            s.sum += value
            s.min = value if s.min is None else min(s.min, value)
            s.max = value if s.max is None else max(s.max, value)
            s.last, s.last_at = value, point.at
            return s.model_dump(mode="json")

        updated = await self.store.update(SUMMARIES, metric, add)
        return Summary.model_validate(updated)

    async def summary(self, metric: str) -> Summary:
        data = await self.store.get(SUMMARIES, metric)
        return Summary.model_validate(data or {"metric": metric})

    async def points(self, metric: str, limit: int = 100) -> list[Point]:
        docs = await self.store.query(POINTS, "metric", metric, limit=limit)
        return [Point.model_validate(d.data) for d in docs]
