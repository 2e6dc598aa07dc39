"""The operator's API session (``handlers.pooled_session``) against the real kube-apiserver."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf
import pytest
from routing_operator.handlers import IDLE_CONNECTION_S, pooled_session


async def test_idle_pooled_connections_are_closed_after_the_idle_timeout(
    kube_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst leaves the pool full of TLS connections (about 300 KiB each in the operator);
    they are reused while busy and closed once idle, instead of staying open for aiohttp's
    default keep-alive (15 s, checked every 15 s: still open 12 s later)."""
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    api = pooled_session(info, limit=8)
    session = api.aiohttp_session
    transports: dict[int, asyncio.BaseTransport] = {}

    async def get_large() -> None:
        # A body of megabytes: the response still holds its connection when it is returned.
        async with session.get(f"{info.server}/openapi/v2") as resp:
            assert resp.status == 200, await resp.text()
            assert resp.connection is not None
            transport = resp.connection.transport
            assert transport is not None
            transports[id(transport)] = transport
            await resp.read()

    try:
        await asyncio.gather(*(get_large() for _ in range(4)))
        assert len(transports) == 4
        assert not any(t.is_closing() for t in transports.values()), (
            "closed at once: no reuse at all"
        )
        await get_large()  # an idle pooled connection is reused, not a fifth one opened
        assert len(transports) == 4

        deadline = time.monotonic() + 2 * IDLE_CONNECTION_S + 2
        while open_ := sum(not t.is_closing() for t in transports.values()):
            assert time.monotonic() < deadline, (
                f"{open_} of 4 idle connections still open "
                f"{2 * IDLE_CONNECTION_S + 2:.0f} s after their last use"
            )
            await asyncio.sleep(0.1)
    finally:
        await session.close()
