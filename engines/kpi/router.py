"""HTTP: ``POST /kpi/{metric}`` records a point; ``GET /kpi/{metric}`` and ``/points`` query."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel, StrictFloat

from engines.ports import DocumentStore
from engines.routing.catalog import ResourceKind
from engines.runtime.http import Key, ServiceRouter, SmokeRequest, backend, error_responses

from .service import Kpis, Point

__all__ = ["RecordRequest", "router"]

KIND = ResourceKind.KPI
router = ServiceRouter(
    kinds=[KIND],
    prefix="/kpi",
    tags=[KIND.value],
    smoke=SmokeRequest("GET", "/kpi/probe"),
)


def _kpis(store: Annotated[DocumentStore, backend(KIND, DocumentStore)]) -> Kpis:
    return Kpis(store)


KpiService = Annotated[Kpis, Depends(_kpis)]


class RecordRequest(BaseModel):
    value: StrictFloat
    labels: dict[str, str] = {}


def _summary_body(summary: Any) -> dict[str, Any]:
    return {**summary.model_dump(mode="json"), "mean": summary.mean}


@router.post("/{metric}", summary="Record one data point", responses=error_responses(400, 413))
async def record(metric: Key, body: RecordRequest, kpis: KpiService) -> dict[str, Any]:
    return _summary_body(await kpis.record(metric, body.value, labels=body.labels))


@router.get("/{metric}", summary="The metric's summary (count, sum, min, max, mean, last)")
async def summary(metric: Key, kpis: KpiService) -> dict[str, Any]:
    return _summary_body(await kpis.summary(metric))


@router.get("/{metric}/points", summary="Recorded points of the metric, oldest first")
async def points(
    metric: Key, kpis: KpiService, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[Point]:
    return await kpis.points(metric, limit)
