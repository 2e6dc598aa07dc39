"""The rate limit counts hits per key and window: within the limit a hit is 200 with what
remains, over it 429 with ``Retry-After``; keys and tenants count apart.

Covers the service's own rules through its HTTP API on the in-process ``memory`` backend (the
reference adapter of the rate limiter conformance suite).
"""

from __future__ import annotations

from pathlib import Path

from devstack.testing import service_client
from engines.nexus.hardening import router


async def test_hits_over_the_limit_are_429_with_retry_after(tmp_path: Path) -> None:
    async with service_client(router, tmp_path) as client:
        body = {"limit": 2, "window_s": 60.0}
        first = await client.post("/nexus/hardening/rate-limit/login", json=body)
        second = await client.post("/nexus/hardening/rate-limit/login", json=body)
        third = await client.post("/nexus/hardening/rate-limit/login", json=body)
        assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
        assert first.json()["remaining"] == 1 and second.json()["remaining"] == 0
        assert third.json()["allowed"] is False
        assert int(third.headers["Retry-After"]) >= 1
        assert third.headers["X-RateLimit-Limit"] == "2"

        other_key = await client.post("/nexus/hardening/rate-limit/search", json=body)
        assert other_key.status_code == 200
        other_tenant = await client.post(
            "/nexus/hardening/rate-limit/login", json=body, headers={"X-Tenant": "globex"}
        )
        assert other_tenant.status_code == 200
