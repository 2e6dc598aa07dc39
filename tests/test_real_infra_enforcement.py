"""Production pods refuse to pretend: no entry → not ready and ConfigMissing, never a fallback.

Covers, against the Firestore emulator as the routing registry: an app with no entries answers
``/readyz`` 503 listing all 17 kinds and every service answers 500 ConfigMissing; test-only
backends are refused (``invalid``) unless ``ENGINES_ALLOW_TEST_BACKENDS=1``, and never allowed
outside env ``test``; a GCS entry without ``bucket`` or a Redis entry without ``url`` fails when
the entry is read or the backend built, not at first use; environment variables that name a
backend (``REDIS_URL``...) change nothing; the files source with no valid file is not ready. The
503 body is exactly §6 (no other top-level key); refused entries carry the key their id names.
"""

from __future__ import annotations

import ast
import importlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from devstack.handles import FirestoreEmulator, RedisServer
from devstack.testing import app_client, async_wait_for, record, smoke_requests, test_records
from engines.adapters import build_backend
from engines.app import SERVICE_ROUTERS, create_app
from engines.config.runtime_config import RuntimeConfig
from engines.routing import (
    FirestoreRoutingRegistry,
    InvalidRouting,
    ResourceKind,
    RoutingRecord,
    TestBackendNotAllowed,
)

ALL_KINDS = {k.value for k in ResourceKind}
SERVICE_PACKAGES = (
    "feature_flags",
    "strategy_lock",
    "kpi",
    "budget",
    "maybes",
    "agent_memory",
    "analytics_events",
    "nexus.hardening",
    "firearms",
    "page_content",
    "seo",
    "realtime",
    "chat.service",
    "nexus.backends",
    "media_v2",
    "nexus.raw_storage",
    "video_timeline",
)


def firestore_app(
    emulator: FirestoreEmulator, *, env: str, allow_test_backends: bool = False
) -> tuple[Any, FirestoreRoutingRegistry]:
    collection = f"routing-{uuid.uuid4().hex[:10]}"
    registry = FirestoreRoutingRegistry(collection=collection, env=env, project=emulator.project)
    config = RuntimeConfig(
        env=env,
        tenants=("acme",),
        routing_collection=collection,
        allow_test_backends=allow_test_backends,
    )
    return create_app(config, registry), registry


async def test_no_entries_means_not_ready_and_config_missing(
    firestore_emulator: FirestoreEmulator,
) -> None:
    app, registry = firestore_app(firestore_emulator, env="prod")
    try:
        async with app_client(app, tenant="acme") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert set(body) == {"status", "missing", "invalid", "unavailable"}  # exactly §6
            assert body["status"] == "not_ready"
            assert {m["resource_kind"] for m in body["missing"]} == ALL_KINDS
            assert all(
                m
                == {
                    "tenant": "acme",
                    "env": "prod",
                    "project": "*",
                    "resource_kind": m["resource_kind"],
                }
                for m in body["missing"]
            )
            assert body["invalid"] == [] and body["unavailable"] == []
            for kind, smoke in smoke_requests(SERVICE_ROUTERS).items():
                resp = await client.request(smoke.method, smoke.path, json=smoke.json)
                assert resp.status_code == 500, (kind, resp.text)
                assert resp.json()["error"] == "ConfigMissing"
                assert kind.value in resp.json()["detail"]
            assert (await client.get("/livez")).status_code == 200
    finally:
        registry.close()


async def test_every_router_declares_its_kind_and_together_they_cover_the_catalog() -> None:
    declared = [k for r in SERVICE_ROUTERS for k in r.kinds]
    assert len(SERVICE_ROUTERS) == 17
    assert sorted(declared) == sorted(ResourceKind)


async def test_test_only_backends_refused_without_the_flag(
    firestore_emulator: FirestoreEmulator, tmp_path: Path
) -> None:
    app, registry = firestore_app(firestore_emulator, env="test", allow_test_backends=False)
    for rec in test_records(str(tmp_path)):
        registry.create(rec)
    try:
        async with app_client(app, tenant="acme") as client:
            await async_wait_for(
                lambda: _invalid_count(client, 17), timeout=15, what="17 invalid kinds"
            )
            body = (await client.get("/readyz")).json()
            assert all("test-only" in item["message"] for item in body["invalid"])
            resp = await client.get("/seo")
            assert resp.status_code == 500 and resp.json()["error"] == "InvalidRouting"
    finally:
        registry.close()

    allowed, registry2 = firestore_app(firestore_emulator, env="test", allow_test_backends=True)
    for rec in test_records(str(tmp_path)):
        registry2.create(rec)
    try:
        async with app_client(allowed, tenant="acme") as client:
            await async_wait_for(lambda: _status(client, 200), timeout=15, what="ready")
    finally:
        registry2.close()


async def _invalid_count(client: Any, n: int) -> bool:
    body = (await client.get("/readyz")).json()
    return len(body.get("invalid", [])) == n


async def _status(client: Any, code: int) -> bool:
    return bool((await client.get("/readyz")).status_code == code)


def test_test_only_backend_never_allowed_outside_env_test() -> None:
    with pytest.raises(InvalidRouting, match="test-only"):
        record(ResourceKind.REALTIME_REGISTRY, "memory", env="prod")
    stored = record(ResourceKind.REALTIME_REGISTRY, "memory").to_document()
    with pytest.raises(InvalidRouting, match="test-only"):
        RoutingRecord.from_document({**stored, "env": "prod"})
    rec = record(ResourceKind.SEO, "memory")
    with pytest.raises(TestBackendNotAllowed):
        build_backend(rec, tenant="acme", allow_test_backends=False)


async def test_missing_bucket_and_redis_url_fail_fast(
    firestore_emulator: FirestoreEmulator,
) -> None:
    app, registry = firestore_app(firestore_emulator, env="prod")
    raw = firestore_emulator.client().collection(registry.collection_name)
    gcs = record(ResourceKind.RAW_STORAGE, "gcs", {"bucket": "some-bucket"}, env="prod")
    rds = record(
        ResourceKind.RATE_LIMIT, "redis", {"url": "redis://redis.example:6379"}, env="prod"
    )
    # Hand-written documents that skip the operator's validation: the pod must refuse them.
    raw.document(gcs.key.document_id).set({**gcs.to_document(), "config": {}})
    raw.document(rds.key.document_id).set({**rds.to_document(), "config": {"key_prefix": "x"}})
    try:
        async with app_client(app, tenant="acme") as client:
            await async_wait_for(lambda: _invalid_count(client, 2), timeout=15, what="refused")
            body = (await client.get("/readyz")).json()
            assert set(body) == {"status", "missing", "invalid", "unavailable"}
            reasons = {i["source"]: i["message"] for i in body["invalid"]}
            assert "bucket" in reasons[gcs.key.document_id]
            assert "url" in reasons[rds.key.document_id]
            # a refused document is reported under the key its id names, like a missing entry
            keys = {
                i["source"]: (i["tenant"], i["env"], i["project"], i["resource_kind"])
                for i in body["invalid"]
            }
            assert keys == {
                gcs.key.document_id: ("*", "prod", "*", "raw_storage"),
                rds.key.document_id: ("*", "prod", "*", "rate_limit"),
            }
            missing = {m["resource_kind"] for m in body["missing"]}
            assert {"raw_storage", "rate_limit"} <= missing
            resp = await client.post("/nexus/hardening/rate-limit/k", json={})
            assert resp.status_code == 500 and resp.json()["error"] == "ConfigMissing"
    finally:
        registry.close()
    # The adapter checks again when built, naming the field: no default bucket, no localhost.
    for kind, backend in ((ResourceKind.RAW_STORAGE, "gcs"), (ResourceKind.RATE_LIMIT, "redis")):
        unchecked = RoutingRecord.model_construct(
            tenant="*",
            env="prod",
            project="*",
            resource_kind=kind,
            backend=backend,
            config={},
            revision="x",
            secret_ref=None,
        )
        with pytest.raises(InvalidRouting) as info:
            build_backend(unchecked, tenant="acme", allow_test_backends=False)
        assert info.value.field == {"gcs": "gcs.bucket", "redis": "redis.url"}[backend]


async def test_backend_environment_variables_select_nothing(
    firestore_emulator: FirestoreEmulator,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("REDIS_URL", "FEATURE_FLAGS_BACKEND", "RATE_LIMIT_BACKEND", "GCS_BUCKET"):
        monkeypatch.setenv(var, redis_server.url if var == "REDIS_URL" else "memory")
    app, registry = firestore_app(firestore_emulator, env="prod", allow_test_backends=True)
    try:
        async with app_client(app, tenant="acme") as client:
            resp = await client.post("/nexus/hardening/rate-limit/k", json={})
            assert resp.status_code == 500 and resp.json()["error"] == "ConfigMissing"
            assert (await client.get("/readyz")).status_code == 503
    finally:
        registry.close()


def test_services_never_read_the_environment() -> None:
    """No service module reads ``os.environ``/``getenv``: only the registry picks backends."""
    offenders = []
    packages = {
        Path(importlib.import_module(f"engines.{p}").__file__ or "").parent
        for p in SERVICE_PACKAGES
    }
    for path in sorted(p for package in packages for p in package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == []


async def test_files_source_with_no_valid_files_is_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINES_ENV", "prod")
    monkeypatch.setenv("ENGINES_TENANTS", "acme,globex")
    monkeypatch.setenv("ENGINES_ROUTING_SOURCE", "files")
    monkeypatch.setenv("ENGINES_ROUTING_DIR", str(tmp_path))
    bad = tmp_path / "acme._.seo.json"  # named for seo, holds nothing valid
    bad.write_text("{not json")
    app = create_app()
    async with app_client(app, tenant="globex") as client:
        body = (await client.get("/readyz")).json()
        assert set(body) == {"status", "missing", "invalid", "unavailable"}
        assert body["status"] == "not_ready" and len(body["missing"]) == 2 * 17
        # a refused file is reported under the key its name (and the pod's env) tell
        [item] = body["invalid"]
        assert item["source"] == str(bad) and item["message"]
        assert (item["tenant"], item["env"], item["project"], item["resource_kind"]) == (
            "acme",
            "prod",
            "*",
            "seo",
        )
        resp = await client.get("/feature-flags/x")
        assert resp.status_code == 500 and resp.json()["error"] == "ConfigMissing"
        assert (await client.get("/seo", headers={"X-Tenant": "initech"})).status_code == 403
