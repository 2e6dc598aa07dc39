"""PresenceRegistry conformance: one suite, run against every registered PresenceRegistry adapter.

Covers: register/list/unregister, info round-trips, re-register as heartbeat (info replaced, TTL
renewed), expiry (a lapsed member disappears from ``list`` while live ones stay), visibility
across two instances of one tenant, tenants kept apart, argument checks.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.testing import async_wait_for
from engines.ports import InvalidArgument, Member, PresenceRegistry

PORT = PresenceRegistry


async def ids(reg: PresenceRegistry) -> list[str]:
    return [m.member_id for m in await reg.list()]


async def test_register_list_unregister(make: Any) -> None:
    reg: PresenceRegistry = make()
    assert await reg.list() == []
    await reg.register("user-b", {"name": "Bé", "tabs": [1, 2]}, ttl_s=30)
    await reg.register("user-a", {}, ttl_s=60)
    members = await reg.list()
    assert [m.member_id for m in members] == ["user-a", "user-b"]
    assert members[1].info == {"name": "Bé", "tabs": [1, 2]}
    assert isinstance(members[0], Member)
    assert 0 < members[0].expires_in <= 60 and 0 < members[1].expires_in <= 30
    await reg.unregister("user-a")
    await reg.unregister("user-a")  # absent is fine
    assert await ids(reg) == ["user-b"]


async def test_register_again_replaces_info_and_renews(make: Any) -> None:
    reg: PresenceRegistry = make()
    await reg.register("u", {"v": 1}, ttl_s=0.5)
    await reg.register("u", {"v": 2}, ttl_s=60)
    (member,) = await reg.list()
    assert member.info == {"v": 2}
    assert member.expires_in > 30


async def test_lapsed_members_disappear(make: Any) -> None:
    reg: PresenceRegistry = make()
    await reg.register("brief", {}, ttl_s=0.3)
    await reg.register("stays", {}, ttl_s=60)
    assert await ids(reg) == ["brief", "stays"]

    async def only_stays() -> bool:
        return await ids(reg) == ["stays"]

    await async_wait_for(only_stays, timeout=5, what="lapsed member to disappear")
    assert await ids(make()) == ["stays"]


async def test_instances_of_a_tenant_share_the_registry(make: Any) -> None:
    a, b = make(), make()
    await a.register("from-a", {"pod": "a"}, ttl_s=30)
    await b.register("from-b", {"pod": "b"}, ttl_s=30)
    assert await ids(a) == await ids(b) == ["from-a", "from-b"]
    await b.unregister("from-a")
    assert await ids(a) == ["from-b"]


async def test_tenants_are_apart(make: Any) -> None:
    acme, beta = make("acme"), make("beta")
    await acme.register("u", {"t": "acme"}, ttl_s=30)
    assert await beta.list() == []
    await beta.register("u", {"t": "beta"}, ttl_s=30)
    assert [m.info for m in await acme.list()] == [{"t": "acme"}]
    await beta.unregister("u")
    assert await ids(acme) == ["u"]


@pytest.mark.parametrize(
    ("member", "info", "ttl"),
    [
        ("", {}, 1),
        ("a/b", {}, 1),
        ("m", {}, 0),
        ("m", {}, -1),
        ("m", [], 1),
        ("m", {"x": object()}, 1),
    ],
)
async def test_bad_arguments_are_refused(make: Any, member: str, info: Any, ttl: float) -> None:
    with pytest.raises(InvalidArgument):
        await make().register(member, info, ttl_s=ttl)
