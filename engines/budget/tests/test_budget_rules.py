"""A budget refuses a spend that does not fit in what is left (409, nothing changes) and keeps
what was spent when its limit changes.

Covers the service's own rules through its HTTP API on the in-process ``memory`` backend (the
reference adapter of the document store conformance suite).
"""

from __future__ import annotations

from pathlib import Path

from devstack.testing import service_client
from engines.budget import router


async def test_overspend_is_a_409_and_changes_nothing(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        assert (await client.put("/budget/ads", json={"limit": 100})).status_code == 200
        ok = await client.post("/budget/ads/spend", json={"amount": 60})
        assert ok.status_code == 200, ok.text
        assert ok.json()["remaining"] == 40

        over = await client.post("/budget/ads/spend", json={"amount": 41})
        assert over.status_code == 409
        assert over.json()["error"] == "OverBudget"
        assert "exceeds what is left" in over.json()["detail"]
        after = (await client.get("/budget/ads")).json()
        assert after["spent"] == 60 and after["remaining"] == 40

        exact = await client.post("/budget/ads/spend", json={"amount": 40})
        assert exact.status_code == 200 and exact.json()["remaining"] == 0


async def test_a_new_limit_keeps_what_was_spent(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        await client.put("/budget/ads", json={"limit": 100})
        await client.post("/budget/ads/spend", json={"amount": 30})
        raised = await client.put("/budget/ads", json={"limit": 200})
        assert raised.json()["spent"] == 30 and raised.json()["remaining"] == 170


async def test_spending_on_an_unknown_budget_is_a_404(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        resp = await client.post("/budget/ghost/spend", json={"amount": 1})
        assert resp.status_code == 404
        assert "set its limit first" in resp.json()["detail"]
        assert (await client.get("/budget/ghost")).status_code == 404
