"""The engines app while its routing registry cannot be trusted: not loaded, or its feed is down.

Against real components: the Firestore emulator is stopped and started again (it loses its data,
as a store restored empty would: every entry it held is deleted while the pod is disconnected),
and a registry pointed at a port nobody listens on never loads. A registry that never loaded is
an ``unavailable`` item of a 503 with exactly the §6 body (never an extra top-level key). A feed
that goes down after the first load keeps the pod ready — every kind still resolves and its
last known-good backend serves — and is reported as unhealthy in ``/routing``; once the store is
back the table converges (new entries arrive, entries lost while down are gone).
"""

from __future__ import annotations

import logging
import socket
import uuid
from typing import Any

import pytest

from devstack.handles import FirestoreEmulator
from devstack.testing import app_client, async_wait_for, record, wait_for
from engines.app import SERVICE_ROUTERS, create_app
from engines.config.runtime_config import RuntimeConfig
from engines.routing import FirestoreRoutingRegistry, ResourceKind, RoutingRecord

SEO_ROUTERS = [r for r in SERVICE_ROUTERS if r.kinds == {ResourceKind.SEO}]
BODY_KEYS = {"status", "missing", "invalid", "unavailable"}


def registry_item(env: str, reason: str) -> dict[str, Any]:
    return {
        "tenant": None,
        "env": env,
        "project": "*",
        "resource_kind": None,
        "source": "registry",
        "reason": reason,
    }


async def _status(client: Any, code: int) -> bool:
    return bool((await client.get("/readyz")).status_code == code)


async def _serving_tenant(client: Any, tenant: str) -> bool:
    entry = (await client.get("/routing")).json()["entries"][0]
    return bool(entry.get("serving", {}).get("entry", {}).get("tenant") == tenant)


async def _true(value: bool) -> bool:
    return value


def _create(collection: str, rec: RoutingRecord) -> None:
    """Write as another pod would, retrying while the restarted emulator's channel comes up."""

    def attempt() -> bool:
        writer = FirestoreRoutingRegistry(collection=collection)
        try:
            writer.create(rec)
        except Exception as exc:  # BackendUnavailable while the connection is re-established
            raise AssertionError(f"write failed: {exc}") from exc
        return True

    wait_for(attempt, timeout=60, interval=0.5, what=f"write {rec.key.document_id}")


async def test_firestore_outage_is_unavailable_then_converges(
    firestore_emulator: FirestoreEmulator,
) -> None:
    if firestore_emulator.stack is None:
        pytest.skip("the emulator comes from FIRESTORE_EMULATOR_HOST: cannot stop/start it")
    collection = f"routing-{uuid.uuid4().hex[:10]}"
    registry = FirestoreRoutingRegistry(
        collection=collection,
        env="test",
        project=firestore_emulator.project,
        supervise_interval=0.1,
    )
    wildcard = record(ResourceKind.SEO, "memory")
    lost = record(ResourceKind.KPI, "memory", tenant="acme")  # deleted while the pod is cut off
    _create(collection, wildcard)
    _create(collection, lost)
    config = RuntimeConfig(
        env="test", tenants=("acme",), routing_collection=collection, allow_test_backends=True
    )
    app = create_app(config, registry, routers=SEO_ROUTERS)
    try:
        async with app_client(app, tenant="acme") as client:
            await async_wait_for(lambda: _status(client, 200), timeout=15, what="ready")
            assert registry.healthy
            firestore_emulator.stop()
            try:
                await async_wait_for(
                    lambda: _true(not registry.healthy), timeout=30, what="registry unhealthy"
                )
                resp = await client.get("/readyz")
                assert resp.status_code == 200, "a control-plane blink must not unready the fleet"
                # the last known-good backend keeps serving meanwhile
                assert (await client.get("/seo")).status_code == 200
                routing = (await client.get("/routing")).json()
                assert routing["registry"]["healthy"] is False
            finally:
                firestore_emulator.start()  # empty: `wildcard` and `lost` are gone

            acme = record(ResourceKind.SEO, "memory", tenant="acme")
            _create(collection, acme)  # a change made after the restart
            await async_wait_for(
                lambda: _true(registry.get(acme.key) == acme), timeout=60, what="new entry"
            )
            gone = (lost.key, wildcard.key)
            await async_wait_for(
                lambda: _true(all(registry.get(k) is None for k in gone)),
                timeout=30,
                what="entries lost while down removed",
            )
            await async_wait_for(lambda: _status(client, 200), timeout=60, what="ready again")
            assert registry.healthy
            await async_wait_for(
                lambda: _serving_tenant(client, "acme"),
                timeout=15,
                what="the slot switched to the new entry",
            )
    finally:
        registry.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_registry_that_never_loads_is_an_unavailable_item(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "routing-test")
    registry = FirestoreRoutingRegistry(collection="routing_entries", env="prod")
    app = create_app(
        RuntimeConfig(env="prod", tenants=("acme",)),
        registry,
        routers=SEO_ROUTERS,
        registry_timeout=0.2,
    )
    try:
        with caplog.at_level(logging.ERROR, logger="engines.runtime"):
            async with app_client(app, tenant="acme") as client:
                resp = await client.get("/readyz")
        assert any(
            "routing registry unavailable (not_loaded)" in r.getMessage() for r in caplog.records
        )
        assert resp.status_code == 503
        body = resp.json()
        assert set(body) == BODY_KEYS  # no extra top-level key for the registry
        assert body["missing"] == [
            {"tenant": "acme", "env": "prod", "project": "*", "resource_kind": "seo"}
        ]
        [item] = body["unavailable"]
        assert {k: item[k] for k in registry_item("prod", "not_loaded")} == registry_item(
            "prod", "not_loaded"
        )
        assert "has not completed its first load" in item["message"]
        assert not registry.healthy
    finally:
        registry.close()
