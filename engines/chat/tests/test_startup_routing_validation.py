"""Start-up routing validation of the engines app (``create_app``) against real services.

Covers: with entries missing, start-up logs each missing kind and ``ENGINES_STRICT_STARTUP=1``
refuses to start (in process and under ``uvicorn --factory``); seeded with one durable entry per
kind (Firestore, Redis, the GCS emulator) it starts, is ready and every service answers; the chat
bus requires a Redis entry with a url; the realtime registry requires a durable backend.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from devstack.handles import FirestoreEmulator, GcsEmulator, RedisServer
from devstack.testing import app_client, durable_records, record, smoke_requests
from engines.app import SERVICE_ROUTERS, StartupRefused, create_app
from engines.config.runtime_config import RuntimeConfig
from engines.routing import FirestoreRoutingRegistry, InvalidRouting, ResourceKind

BUCKET = "engines-startup-test"


def _registry(emulator: FirestoreEmulator, env: str) -> FirestoreRoutingRegistry:
    collection = f"routing-{uuid.uuid4().hex[:10]}"
    return FirestoreRoutingRegistry(collection=collection, env=env, project=emulator.project)


def _config(registry: FirestoreRoutingRegistry, env: str, **kw: Any) -> RuntimeConfig:
    return RuntimeConfig(
        env=env, tenants=("acme", "globex"), routing_collection=registry.collection_name, **kw
    )


@pytest.fixture(scope="module")
def bucket(gcs_emulator: GcsEmulator) -> str:
    client = gcs_emulator.client()
    if client.lookup_bucket(BUCKET) is None:
        client.create_bucket(BUCKET)
    return BUCKET


async def test_strict_startup_refuses_while_entries_are_missing(
    firestore_emulator: FirestoreEmulator,
) -> None:
    registry = _registry(firestore_emulator, "prod")
    app = create_app(_config(registry, "prod", strict_startup=True), registry)
    try:
        with pytest.raises(StartupRefused) as info:
            async with app.router.lifespan_context(app):
                pytest.fail("a strict app without entries must not start")
        message = str(info.value)
        for kind in ResourceKind:
            assert f"resource_kind={kind.value} " in message
    finally:
        registry.close()


async def test_lenient_startup_logs_each_missing_kind(
    firestore_emulator: FirestoreEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _registry(firestore_emulator, "prod")
    registry.create(record(ResourceKind.SEO, "firestore", {"collection": "seo"}, env="prod"))
    app = create_app(_config(registry, "prod"), registry)
    try:
        with caplog.at_level(logging.ERROR, logger="engines.runtime"):
            async with app_client(app, tenant="acme") as client:
                assert (await client.get("/readyz")).status_code == 503
                assert (await client.get("/seo")).status_code == 200
        lines = [
            r.getMessage() for r in caplog.records if "start-up routing check" in r.getMessage()
        ]
        assert len(lines) == 16  # one per missing kind, naming its tenants
        assert not any("resource_kind=seo " in line for line in lines)
        assert any("resource_kind=chat_bus " in line and "acme, globex" in line for line in lines)
    finally:
        registry.close()


async def test_strict_startup_passes_when_seeded(
    firestore_emulator: FirestoreEmulator, redis_server: RedisServer, bucket: str
) -> None:
    registry = _registry(firestore_emulator, "prod")
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    for rec in durable_records(
        "prod",
        collection=f"data-{prefix}",
        redis_url=redis_server.url,
        bucket=bucket,
        key_prefix=prefix,
    ):
        registry.create(rec)
    app = create_app(_config(registry, "prod", strict_startup=True), registry)
    try:
        async with app_client(app, tenant="globex") as client:
            assert (await client.get("/readyz")).json() == {"status": "ready"}
            for kind, smoke in smoke_requests(SERVICE_ROUTERS).items():
                resp = await client.request(smoke.method, smoke.path, json=smoke.json)
                assert resp.status_code < 300, (kind, resp.status_code, resp.text)
            routing = (await client.get("/routing")).json()
            backends = {e["resource_kind"]: e["serving"]["backend"] for e in routing["entries"]}
            assert backends["chat_bus"] == "redis" and backends["raw_storage"] == "gcs"
            assert backends["feature_flags"] == "firestore"
    finally:
        registry.close()


def test_uvicorn_factory_refuses_to_start_when_strict(
    firestore_emulator: FirestoreEmulator,
) -> None:
    env = {
        **os.environ,
        "ENGINES_ENV": "prod",
        "ENGINES_TENANTS": "acme",
        "ENGINES_ROUTING_SOURCE": "firestore",
        "ENGINES_ROUTING_COLLECTION": f"routing-{uuid.uuid4().hex[:10]}",
        "ENGINES_STRICT_STARTUP": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "engines.chat.service.server:create_app",
            "--port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "refusing to start" in proc.stderr
    assert "resource_kind=chat_bus" in proc.stderr


def test_chat_bus_requires_redis_config() -> None:
    with pytest.raises(InvalidRouting, match="not allowed for resourceKind chat_bus"):
        record(ResourceKind.CHAT_BUS, "firestore", {"collection": "chat"}, env="prod")
    with pytest.raises(InvalidRouting, match=r"redis\.url"):
        record(ResourceKind.CHAT_BUS, "redis", {"key_prefix": "chat:"}, env="prod")
    with pytest.raises(InvalidRouting, match=r"redis\.url"):
        record(ResourceKind.CHAT_BUS, "redis", {"url": "localhost:6379"}, env="prod")
    assert record(ResourceKind.CHAT_BUS, "redis", {"url": "redis://r:6379"}, env="prod")


async def test_realtime_registry_requires_a_durable_backend(
    firestore_emulator: FirestoreEmulator, redis_server: RedisServer
) -> None:
    kind = ResourceKind.REALTIME_REGISTRY
    with pytest.raises(InvalidRouting, match="test-only"):
        record(kind, "memory", env="prod")
    # env=test with a memory entry: refused without ENGINES_ALLOW_TEST_BACKENDS=1
    registry = _registry(firestore_emulator, "test")
    registry.create(record(kind, "memory"))
    app = create_app(_config(registry, "test"), registry)
    try:
        async with app_client(app, tenant="acme") as client:
            body = (await client.get("/readyz")).json()
            invalid = {(i["tenant"], i["resource_kind"]) for i in body["invalid"]}
            assert invalid == {("acme", kind.value), ("globex", kind.value)}
            resp = await client.get("/realtime/presence")
            assert resp.status_code == 500 and resp.json()["error"] == "InvalidRouting"
    finally:
        registry.close()
    # both durable backends serve it, and members registered on one pod are seen by another
    for backend, config in (
        ("redis", {"url": redis_server.url, "key_prefix": f"rt-{uuid.uuid4().hex[:6]}:"}),
        ("firestore", {"collection": f"rt-{uuid.uuid4().hex[:6]}"}),
    ):
        registry = _registry(firestore_emulator, "prod")
        registry.create(record(kind, backend, config, env="prod"))
        apps = [create_app(_config(registry, "prod"), registry) for _ in range(2)]
        try:
            async with (
                app_client(apps[0], tenant="acme") as one,
                app_client(apps[1], tenant="acme") as two,
            ):
                put = await one.put("/realtime/presence/u1", json={"ttl_s": 30})
                assert put.status_code == 200
                members = (await two.get("/realtime/presence")).json()["members"]
                assert [m["member_id"] for m in members] == ["u1"], backend
        finally:
            registry.close()
