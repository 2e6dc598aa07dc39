"""A strategy lock has one holder at a time: a second owner gets 409 until the holder releases
it or its lease lapses, and a lease that was lost can be neither renewed nor released.

Covers the service's own rules through its HTTP API on the in-process ``memory`` backend (the
reference adapter of the lock manager conformance suite).
"""

from __future__ import annotations

from pathlib import Path

from devstack.testing import async_wait_for, service_client
from engines.strategy_lock import router


async def test_a_held_lock_is_a_409_for_another_owner_until_released(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        held = await client.post("/strategy-lock/plan/acquire", json={"owner": "pod-a"})
        assert held.status_code == 200, held.text
        lease = held.json()
        assert lease["owner"] == "pod-a" and lease["token"]

        refused = await client.post("/strategy-lock/plan/acquire", json={"owner": "pod-b"})
        assert refused.status_code == 409
        assert "held by someone else" in refused.json()["detail"]

        renewed = await client.post("/strategy-lock/plan/renew", json={**lease, "ttl_s": 60.0})
        assert renewed.status_code == 200 and renewed.json()["ttl_s"] == 60.0
        assert (await client.post("/strategy-lock/plan/release", json=lease)).status_code == 204
        taken = await client.post("/strategy-lock/plan/acquire", json={"owner": "pod-b"})
        assert taken.status_code == 200 and taken.json()["owner"] == "pod-b"


async def test_a_lapsed_lease_is_lost_and_the_lock_free_again(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        short = {"owner": "pod-a", "ttl_s": 0.2}
        lease = (await client.post("/strategy-lock/plan/acquire", json=short)).json()

        async def taken_by_b() -> bool:
            resp = await client.post("/strategy-lock/plan/acquire", json={"owner": "pod-b"})
            return resp.status_code == 200

        await async_wait_for(taken_by_b, timeout=10, what="the lapsed lock to be free")
        lost = await client.post("/strategy-lock/plan/renew", json=lease)
        assert lost.status_code == 409 and lost.json()["error"] == "LockNotHeld"
        assert (await client.post("/strategy-lock/plan/release", json=lease)).status_code == 409
