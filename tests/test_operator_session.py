"""The operator's API session (``handlers.pooled_session``) against the real kube-apiserver."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf
import pytest
from operator_harness import Entries, entry
from routing_operator.handlers import IDLE_CONNECTION_S, pooled_session
from routing_operator.listing import ListingGate


@pytest.fixture
def credentials(kube_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    """kopf's credentials for the test cluster, as the operator's login handler gets them."""
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    return info


async def test_idle_pooled_connections_are_closed_after_the_idle_timeout(
    credentials: kopf.ConnectionInfo,
) -> None:
    """A burst leaves the pool full of TLS connections (about 300 KiB each in the operator);
    they are reused while busy and closed once idle, instead of staying open for aiohttp's
    default keep-alive (15 s, checked every 15 s: still open 12 s later)."""
    info = credentials
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


def _listed_session(
    kube_cluster: Any, credentials: kopf.ConnectionInfo, namespace: str, gate: ListingGate, n: int
) -> tuple[Any, str]:
    """``n`` RoutingEntries in ``namespace``, and a pooled session through ``gate`` with the URL
    of their list."""
    kinds = ["kpi", "seo", "budget", "maybes", "firearms"][:n]
    with kube_cluster.api_client() as client_api:
        entries = Entries(client_api, namespace)
        for i, kind in enumerate(kinds):
            entries.create(entry(f"e{i}", kind=kind))
    session = pooled_session(credentials, limit=4, gate=gate).aiohttp_session
    path = f"/apis/routing.engines.io/v1alpha1/namespaces/{namespace}/routingentries"
    url = f"{credentials.server}{path}"
    return session, url


async def test_next_page_of_the_list_waits_until_the_listed_entries_reached_their_workers(
    kube_cluster: Any, credentials: kopf.ConnectionInfo, namespace: str
) -> None:
    """kopf hands every listed entry to a queue at once; the gate holds the request for a
    further page while more than a page of listed entries has not reached its worker. Pages of
    2 entries here, against real RoutingEntries."""
    # Without progress a held page would go after `stall` seconds: far beyond this test's waits.
    gate = ListingGate("routingentries", 2, clusterwide=False, stall=60, max_wait=60)
    session, url = _listed_session(kube_cluster, credentials, namespace, gate, 5)

    async def page(token: str | None = None) -> dict[str, Any]:
        params = {"limit": "2", **({"continue": token} if token else {})}
        async with session.get(url, params=params) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()  # type: ignore[no-any-return]

    try:
        first = await page()
        second = await page(first["metadata"]["continue"])  # one page may wait in the queue
        assert gate.waits == 0
        third = asyncio.create_task(page(second["metadata"]["continue"]))
        deadline = time.monotonic() + 10
        while gate.waits == 0:
            assert time.monotonic() < deadline, "the third page was not held"
            await asyncio.sleep(0.01)
        assert not third.done()
        for _ in first["items"]:  # the first page's entries reach their workers
            gate.reached(namespace)
        got = await asyncio.wait_for(third, timeout=10)
        assert [o["metadata"]["name"] for o in got["items"]] == ["e4"]
        async with session.get(url, params={"watch": "true", "timeoutSeconds": "1"}) as resp:
            assert resp.status == 200  # a watch is never held
        assert gate.waits == 1
    finally:
        await session.close()


async def test_a_held_page_goes_when_no_listed_entry_reaches_a_worker(
    kube_cluster: Any, credentials: kopf.ConnectionInfo, namespace: str
) -> None:
    """kopf watches only after its list: a worker waiting for the watch event of its own PATCH
    cannot go on until the list is done, so the gate must not wait on workers that stand
    still (nor let the list's continue token expire)."""
    gate = ListingGate("routingentries", 1, clusterwide=False, stall=0.3, max_wait=60)
    session, url = _listed_session(kube_cluster, credentials, namespace, gate, 3)
    try:
        started = time.monotonic()
        names, token = [], None
        while True:
            params = {"limit": "1", **({"continue": token} if token else {})}
            async with session.get(url, params=params) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            names += [o["metadata"]["name"] for o in body["items"]]
            token = body["metadata"].get("continue")
            if not token:
                break
        assert names == ["e0", "e1", "e2"]
        assert gate.waits == 1  # the third page was held (two listed, none reached), then went
        assert time.monotonic() - started < 30, "released by max_wait, not by the stall"
    finally:
        await session.close()
