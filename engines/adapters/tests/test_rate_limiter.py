"""RateLimiter conformance: one suite, run against every registered RateLimiter adapter.

Covers: the fixed-window contract (exactly ``limit`` allowed, ``remaining`` counting down,
``reset_after`` within the window), accuracy under parallel callers spread over two instances
("pods"), the window reopening after it lapses, keys and tenants kept apart, argument checks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from devstack.testing import async_wait_for
from engines.ports import Decision, InvalidArgument, RateLimiter

PORT = RateLimiter


async def test_counts_down_then_refuses(make: Any) -> None:
    rl: RateLimiter = make()
    decisions = [await rl.hit("user:1", limit=5, window_s=60) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    assert all(d.limit == 5 for d in decisions)
    assert all(0 < d.reset_after <= 60 for d in decisions)
    assert decisions[-1].reset_after <= decisions[0].reset_after


async def test_keys_are_independent(make: Any) -> None:
    rl: RateLimiter = make()
    assert (await rl.hit("a", limit=1, window_s=60)).allowed
    assert not (await rl.hit("a", limit=1, window_s=60)).allowed
    assert (await rl.hit("b", limit=1, window_s=60)).allowed
    assert (await rl.hit("10.0.0.1", limit=1, window_s=60)).allowed
    assert (await rl.hit("::1", limit=1, window_s=60)).allowed


async def test_tenants_are_apart(make: Any) -> None:
    acme, beta = make("acme"), make("beta")
    assert (await acme.hit("k", limit=1, window_s=60)).allowed
    assert not (await acme.hit("k", limit=1, window_s=60)).allowed
    assert (await beta.hit("k", limit=1, window_s=60)).allowed


async def test_exact_under_parallel_callers(make: Any) -> None:
    pods = [make(), make()]
    decisions: list[Decision] = await asyncio.gather(
        *(pods[i % 2].hit("hot", limit=15, window_s=60) for i in range(40))
    )
    assert sum(d.allowed for d in decisions) == 15
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(15))
    assert not (await pods[0].hit("hot", limit=15, window_s=60)).allowed


async def test_window_reopens_after_it_lapses(make: Any) -> None:
    rl: RateLimiter = make()
    first = await rl.hit("short", limit=2, window_s=0.5)
    await rl.hit("short", limit=2, window_s=0.5)
    refused = await rl.hit("short", limit=2, window_s=0.5)
    assert first.allowed and not refused.allowed
    assert refused.reset_after <= 0.5

    async def probe() -> Decision:
        return await rl.hit("short", limit=2, window_s=0.5)

    async def allowed() -> Decision | None:
        decision = await probe()
        return decision if decision.allowed else None

    reopened = await async_wait_for(allowed, timeout=5, interval=0.05, what="window to reopen")
    assert reopened.remaining == 1


@pytest.mark.parametrize(
    ("key", "limit", "window_s"),
    [
        ("", 1, 1),
        ("a/b", 1, 1),
        ("k", 0, 1),
        ("k", 1.5, 1),
        ("k", 1, 0),
        ("k", 1, -1),
        ("k", 1, float("inf")),
        ("k", True, 1),
    ],
)
async def test_bad_arguments_are_refused(make: Any, key: str, limit: int, window_s: float) -> None:
    with pytest.raises(InvalidArgument):
        await make().hit(key, limit=limit, window_s=window_s)
