"""Feature flags decide per subject: deny wins over everything, allow wins over disabled, and an
enabled flag is on for the rollout share of subjects by a stable hash.

Covers the service's own rules through its HTTP API on the in-process ``memory`` backend (the
reference adapter of the document store conformance suite): the reason of every decision, that
a rollout decision is stable for a subject and follows ``bucket``, and 404 for an unknown flag.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from devstack.testing import service_client
from engines.feature_flags import router
from engines.feature_flags.service import bucket


async def _evaluate(client: httpx.AsyncClient, flag: str, subject: str) -> tuple[bool, str]:
    resp = await client.get(f"/feature-flags/{flag}/evaluate", params={"subject": subject})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["enabled"], body["reason"]


async def test_deny_wins_over_allow_and_allow_wins_over_disabled(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        flag = {"enabled": False, "allow": ["ann", "bob"], "deny": ["bob"]}
        assert (await client.put("/feature-flags/beta", json=flag)).status_code == 200
        assert await _evaluate(client, "beta", "bob") == (False, "denied")
        assert await _evaluate(client, "beta", "ann") == (True, "allowed")
        assert await _evaluate(client, "beta", "cid") == (False, "disabled")
        assert await _evaluate(client, "nope", "ann") == (False, "unknown_flag")
        assert (await client.get("/feature-flags/nope")).status_code == 404


async def test_rollout_is_on_for_subjects_below_the_share_and_stable(tmp_path: Path) -> None:
    subjects = [f"user-{i}" for i in range(40)]
    async with service_client(router, tmp_path) as client:
        flag = {"enabled": True, "rollout_percent": 50.0}
        assert (await client.put("/feature-flags/half", json=flag)).status_code == 200
        decisions = {s: await _evaluate(client, "half", s) for s in subjects}
        for subject, decision in decisions.items():
            expected = (
                (True, "rollout") if bucket("half", subject) < 50 else (False, "outside_rollout")
            )
            assert decision == expected, subject
            assert await _evaluate(client, "half", subject) == decision  # stable per subject
        assert {d[1] for d in decisions.values()} == {"rollout", "outside_rollout"}

        none = {"enabled": True, "rollout_percent": 0.0}
        assert (await client.put("/feature-flags/none", json=none)).status_code == 200
        for subject in subjects:
            assert await _evaluate(client, "none", subject) == (False, "outside_rollout")


async def test_flags_are_per_tenant(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        assert (await client.put("/feature-flags/beta", json={"enabled": True})).status_code == 200
        other = await client.get("/feature-flags/beta", headers={"X-Tenant": "globex"})
        assert other.status_code == 404
        assert (await client.get("/feature-flags")).json()["beta"]["enabled"] is True
