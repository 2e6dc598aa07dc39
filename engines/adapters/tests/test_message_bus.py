"""MessageBus conformance: one suite, run against every registered MessageBus adapter.

Covers: delivery to every live subscriber, per-topic ordering (sequential publishes, and each
publisher's order preserved when two instances publish at once), no replay of messages sent
before a subscription, topics and tenants kept apart, ``aclose`` ending iteration, argument
checks. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engines.ports import InvalidArgument, MessageBus, Subscription

PORT = MessageBus
WAIT_S = 10.0


async def take(sub: Subscription, n: int) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        out = []
        async for message in sub:
            out.append(message)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(run(), WAIT_S)


async def nothing_more(sub: Subscription, marker_bus: MessageBus, topic: str) -> None:
    """Prove ``sub`` got nothing else: publish a marker and check it is the next message."""
    await marker_bus.publish(topic, {"marker": True})
    assert await take(sub, 1) == [{"marker": True}]


async def test_ordered_delivery_to_every_subscriber(make: Any) -> None:
    bus: MessageBus = make()
    subs = [await bus.subscribe("room.1"), await make().subscribe("room.1")]
    sent = [{"seq": i, "text": f"msg {i}", "nested": {"ok": True}} for i in range(200)]
    for message in sent:
        await bus.publish("room.1", message)
    for sub in subs:
        assert await take(sub, 200) == sent
        await sub.aclose()


async def test_each_publisher_order_kept_under_concurrency(make: Any) -> None:
    pods = [make(), make()]
    sub = await make().subscribe("room")

    async def publisher(p: int) -> None:
        for i in range(100):
            await pods[p].publish("room", {"p": p, "i": i})

    await asyncio.gather(publisher(0), publisher(1))
    got = await take(sub, 200)
    for p in (0, 1):
        assert [m["i"] for m in got if m["p"] == p] == list(range(100))
    await sub.aclose()


async def test_no_replay_of_earlier_messages(make: Any) -> None:
    bus: MessageBus = make()
    await bus.publish("t", {"n": "before"})
    sub = await bus.subscribe("t")
    await bus.publish("t", {"n": "after"})
    assert await take(sub, 1) == [{"n": "after"}]
    await sub.aclose()


async def test_topics_are_apart(make: Any) -> None:
    bus: MessageBus = make()
    a, b = await bus.subscribe("a"), await bus.subscribe("b")
    await bus.publish("a", {"to": "a"})
    await bus.publish("b", {"to": "b"})
    assert await take(a, 1) == [{"to": "a"}]
    assert await take(b, 1) == [{"to": "b"}]
    await nothing_more(a, bus, "a")
    await a.aclose()
    await b.aclose()


async def test_tenants_are_apart(make: Any) -> None:
    acme, beta = make("acme"), make("beta")
    acme_sub, beta_sub = await acme.subscribe("room"), await beta.subscribe("room")
    await acme.publish("room", {"tenant": "acme"})
    await beta.publish("room", {"tenant": "beta"})
    assert await take(acme_sub, 1) == [{"tenant": "acme"}]
    assert await take(beta_sub, 1) == [{"tenant": "beta"}]
    await nothing_more(beta_sub, beta, "room")
    await acme_sub.aclose()
    await beta_sub.aclose()


async def test_aclose_ends_iteration(make: Any) -> None:
    bus: MessageBus = make()
    sub = await bus.subscribe("t")
    received: list[dict[str, Any]] = []

    async def drain() -> None:
        async for message in sub:
            received.append(message)

    task = asyncio.create_task(drain())
    await bus.publish("t", {"n": 1})
    async with asyncio.timeout(WAIT_S):
        while not received:
            await asyncio.sleep(0.005)
    await sub.aclose()  # ends the consumer blocked in __anext__
    await asyncio.wait_for(task, WAIT_S)
    assert received == [{"n": 1}]
    await sub.aclose()  # idempotent
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()
    async with await bus.subscribe("t") as other:  # the bus still serves others
        await bus.publish("t", {"n": 2})
        assert await take(other, 1) == [{"n": 2}]


async def test_bad_arguments_are_refused(make: Any) -> None:
    bus: MessageBus = make()
    for topic in ("", "a/b", "_internal", "x" * 200):
        with pytest.raises(InvalidArgument):
            await bus.publish(topic, {"a": 1})
        with pytest.raises(InvalidArgument):
            await bus.subscribe(topic)
    with pytest.raises(InvalidArgument):
        await bus.publish("t", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await bus.publish("t", {"x": object()})
