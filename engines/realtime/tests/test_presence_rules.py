"""Presence lists the live members of a tenant, ordered by id: a member stays for its ``ttl_s``
unless refreshed, and leaves at once when it unregisters.

Covers the service's own rules through its HTTP API on the in-process ``memory`` backend (the
reference adapter of the presence conformance suite).
"""

from __future__ import annotations

from pathlib import Path

from devstack.testing import async_wait_for, service_client
from engines.realtime import router


async def test_members_lapse_after_their_ttl_and_leave_when_unregistered(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        for member, ttl in (("zed", 60.0), ("amy", 60.0), ("brief", 0.2)):
            body = {"info": {"name": member}, "ttl_s": ttl}
            assert (await client.put(f"/realtime/presence/{member}", json=body)).status_code == 200

        async def ids() -> list[str]:
            members = (await client.get("/realtime/presence")).json()["members"]
            return [m["member_id"] for m in members]

        assert await ids() == ["amy", "brief", "zed"]

        async def brief_gone() -> bool:
            return await ids() == ["amy", "zed"]

        await async_wait_for(brief_gone, timeout=10, what="the lapsed member to leave")
        assert (await client.delete("/realtime/presence/zed")).status_code == 204
        assert await ids() == ["amy"]
        other = await client.get("/realtime/presence", headers={"X-Tenant": "globex"})
        assert other.json() == {"members": []}
