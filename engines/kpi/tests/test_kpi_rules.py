"""A KPI keeps, per metric, a running summary of the points recorded (count, sum, min, max, mean,
last) and the points themselves, oldest first.

Covers the service's own rules through its HTTP API on the in-process ``memory`` backend (the
reference adapter of the document store conformance suite, with ``query`` and ``update``).
"""

from __future__ import annotations

from pathlib import Path

from devstack.testing import service_client
from engines.kpi import router


async def test_the_summary_follows_every_point_recorded(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        for value in (3.0, -1.0, 10.0):
            resp = await client.post("/kpi/latency", json={"value": value})
            assert resp.status_code == 200, resp.text
        summary = (await client.get("/kpi/latency")).json()
        assert {k: summary[k] for k in ("count", "sum", "min", "max", "mean", "last")} == {
            "count": 3,
            "sum": 12.0,
            "min": -1.0,
            "max": 10.0,
            "mean": 4.0,
            "last": 10.0,
        }
        points = (await client.get("/kpi/latency/points")).json()
        assert [p["value"] for p in points] == [3.0, -1.0, 10.0]


async def test_a_metric_never_recorded_has_an_empty_summary(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        summary = (await client.get("/kpi/quiet")).json()
        assert summary["count"] == 0 and summary["mean"] is None and summary["last"] is None
        assert (await client.get("/kpi/quiet/points")).json() == []


async def test_metrics_do_not_mix_and_tenants_do_not_see_each_other(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        await client.post("/kpi/a", json={"value": 1.0, "labels": {"region": "eu"}})
        await client.post("/kpi/b", json={"value": 5.0})
        assert (await client.get("/kpi/a")).json()["sum"] == 1.0
        [point] = (await client.get("/kpi/a/points")).json()
        assert point["labels"] == {"region": "eu"}
        other = await client.get("/kpi/a", headers={"X-Tenant": "globex"})
        assert other.json()["count"] == 0
