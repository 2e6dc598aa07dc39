"""LockManager conformance: one suite, run against every registered LockManager adapter.

Covers: acquire/renew/release, exclusivity (one winner among parallel acquirers on two
instances; a critical section never entered twice), expiry (a lapsed lease can be taken over
and the old holder's renew/release raise ``LockNotHeld``), renew keeping a lease alive, names and
tenants kept apart, argument checks.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from devstack.testing import async_wait_for
from engines.ports import InvalidArgument, Lease, LockManager, LockNotHeld

PORT = LockManager


async def test_acquire_release_cycle(make: Any) -> None:
    locks: LockManager = make()
    lease = await locks.acquire("job", ttl_s=30, owner="pod-a")
    assert isinstance(lease, Lease)
    assert (lease.name, lease.owner, lease.ttl_s) == ("job", "pod-a", 30)
    assert await locks.acquire("job", ttl_s=30, owner="pod-b") is None
    assert await locks.acquire("job", ttl_s=30, owner="pod-a") is None  # not re-entrant
    await locks.release(lease)
    again = await locks.acquire("job", ttl_s=30, owner="pod-b")
    assert again is not None and again.token != lease.token
    with pytest.raises(LockNotHeld):
        await locks.release(lease)  # released already, and taken by pod-b since
    with pytest.raises(LockNotHeld):
        await locks.renew(lease)
    await locks.release(again)
    with pytest.raises(LockNotHeld):
        await locks.release(again)


async def test_one_winner_among_parallel_acquirers(make: Any) -> None:
    pods = [make(), make()]
    leases = await asyncio.gather(
        *(pods[i % 2].acquire("leader", ttl_s=30, owner=f"w{i}") for i in range(20))
    )
    winners = [lease for lease in leases if lease is not None]
    assert len(winners) == 1


async def test_critical_section_is_exclusive(make: Any) -> None:
    pods = [make(), make()]
    inside = 0
    entered: list[int] = []

    async def worker(i: int) -> None:
        nonlocal inside
        locks = pods[i % 2]
        deadline = time.monotonic() + 30
        while True:
            lease = await locks.acquire("section", ttl_s=30, owner=f"w{i}")
            if lease is not None:
                break
            assert time.monotonic() < deadline, "never got the lock"
            await asyncio.sleep(0.005)
        inside += 1
        assert inside == 1
        entered.append(i)
        await asyncio.sleep(0.001)
        inside -= 1
        await locks.release(lease)

    await asyncio.gather(*(worker(i) for i in range(8)))
    assert sorted(entered) == list(range(8))


async def test_lapsed_lease_can_be_taken_over(make: Any) -> None:
    a, b = make(), make()
    old = await a.acquire("job", ttl_s=0.3, owner="pod-a")
    assert old is not None

    async def probe() -> Lease | None:
        return await b.acquire("job", ttl_s=30, owner="pod-b")

    new = await async_wait_for(probe, timeout=5, what="lapsed lease to be free")
    assert new is not None and new.owner == "pod-b"
    with pytest.raises(LockNotHeld):
        await a.renew(old)
    with pytest.raises(LockNotHeld):
        await a.release(old)
    assert await a.acquire("job", ttl_s=30, owner="pod-a") is None  # pod-b still holds it
    await b.release(new)


async def test_lapsed_lease_cannot_be_renewed_or_released(make: Any) -> None:
    locks: LockManager = make()
    lease = await locks.acquire("job", ttl_s=0.2, owner="pod-a")
    assert lease is not None

    async def probe() -> Lease | None:
        return await locks.acquire("probe-clock", ttl_s=0.01, owner="x")

    started = time.monotonic()

    async def lapsed() -> bool:
        await probe()
        return time.monotonic() - started > 0.4

    await async_wait_for(lapsed, timeout=5, what="lease to lapse")
    with pytest.raises(LockNotHeld):
        await locks.renew(lease)
    with pytest.raises(LockNotHeld):
        await locks.release(lease)


async def test_renew_keeps_the_lease(make: Any) -> None:
    a, b = make(), make()
    lease = await a.acquire("job", ttl_s=0.5, owner="pod-a")
    assert lease is not None
    renewed = await a.renew(lease, ttl_s=30)
    assert renewed.token == lease.token and renewed.ttl_s == 30
    started = time.monotonic()

    async def probe() -> Lease | None:
        return await b.acquire("job", ttl_s=30, owner="pod-b")

    # Past the original 0.5 s the lock must still be held: every probe until then fails.
    while time.monotonic() - started < 1.0:
        assert await probe() is None
        await asyncio.sleep(0.05)
    renewed_again = await a.renew(renewed)
    assert renewed_again.ttl_s == 30
    await a.release(renewed_again)
    assert await probe() is not None


async def test_names_and_tenants_are_apart(make: Any) -> None:
    acme, beta = make("acme"), make("beta")
    assert await acme.acquire("job", ttl_s=30, owner="a") is not None
    assert await acme.acquire("other-job", ttl_s=30, owner="a") is not None
    assert await beta.acquire("job", ttl_s=30, owner="b") is not None


@pytest.mark.parametrize(
    ("name", "ttl_s", "owner"),
    [
        ("", 1, "o"),
        ("a/b", 1, "o"),
        ("n", 0, "o"),
        ("n", -1, "o"),
        ("n", 1, ""),
        ("n", float("nan"), "o"),
    ],
)
async def test_bad_arguments_are_refused(make: Any, name: str, ttl_s: float, owner: str) -> None:
    with pytest.raises(InvalidArgument):
        await make().acquire(name, ttl_s=ttl_s, owner=owner)
