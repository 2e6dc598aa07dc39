"""Live backend switch, end to end: ``kubectl apply`` → operator → Firestore → a running
``FirestoreRoutingRegistry`` consumer; and the running engines app, with both routing sources.

Operator part (real kube-apiserver, operator subprocess, Firestore emulator): a consumer that is
already listening sees the new backend after ``kubectl apply`` changes the entry, no restart.

App part:
Covers (Firestore emulator, real Redis, GCS emulator): while a loop of requests runs,
``feature_flags`` moves from one Firestore collection to another and ``rate_limit`` from Redis to
Firestore after a registry update — no request fails, and afterwards data lands in the new
backend. Run once with the Firestore registry and once with mounted ConfigMap files. Then the
whole app under ``uvicorn --factory``: 503 listing all 17 kinds, 200 once the entries exist, 503
naming the one kind whose entry was removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import free_port
from devstack.handles import FirestoreEmulator, GcsEmulator, RedisServer
from devstack.testing import (
    app_client,
    async_wait_for,
    durable_records,
    record,
    uvicorn_argv,
    wait_for,
)
from engines import feature_flags
from engines.app import create_app
from engines.config.runtime_config import RoutingSource, RuntimeConfig
from engines.nexus import hardening
from engines.routing import (
    FileRoutingRegistry,
    FirestoreRoutingRegistry,
    ResourceKind,
    RoutingRecord,
    RoutingRegistry,
)

K = ResourceKind
BUCKET = "engines-switch-test"
Write = Callable[[RoutingRecord], None]


@pytest.fixture(params=["firestore", "files"])
def source(
    request: pytest.FixtureRequest, firestore_emulator: FirestoreEmulator, tmp_path: Path
) -> Iterator[tuple[RoutingSource, RoutingRegistry, Write]]:
    if request.param == "firestore":
        registry = FirestoreRoutingRegistry(
            collection=f"routing-{uuid.uuid4().hex[:10]}",
            env="prod",
            project=firestore_emulator.project,
        )

        def write_doc(rec: RoutingRecord) -> None:
            if registry.fetch(rec.key) is None:
                registry.create(rec)
            else:
                registry.update(rec)

        yield RoutingSource.FIRESTORE, registry, write_doc
        registry.close()
        return
    directory = tmp_path / "routing"
    directory.mkdir()
    files = FileRoutingRegistry([directory], env="prod", poll_interval=0.05)

    def write_file(rec: RoutingRecord) -> None:  # as kubelet does: write aside, then rename
        tmp = directory / f".{rec.key.configmap_key}.tmp"
        tmp.write_text(json.dumps(rec.to_document()))
        tmp.replace(directory / rec.key.configmap_key)

    yield RoutingSource.FILES, files, write_file
    files.close()


async def _serving(client: httpx.AsyncClient, kind: K, backend: str, revision: str) -> bool:
    entries = (await client.get("/routing")).json()["entries"]
    return any(
        e["resource_kind"] == kind.value
        and e["tenant"] == "acme"
        and e.get("serving", {}).get("revision") == revision
        and e["serving"]["backend"] == backend
        for e in entries
    )


async def test_switch_under_load_without_restart(
    source: tuple[RoutingSource, RoutingRegistry, Write],
    firestore_emulator: FirestoreEmulator,
    redis_server: RedisServer,
) -> None:
    kind_source, registry, write = source
    uid = uuid.uuid4().hex[:8]
    flags_a, flags_b, limits = f"flags-a-{uid}", f"flags-b-{uid}", f"limits-{uid}"
    write(record(K.FEATURE_FLAGS, "firestore", {"collection": flags_a}, env="prod"))
    write(
        record(
            K.RATE_LIMIT, "redis", {"url": redis_server.url, "key_prefix": f"{uid}:"}, env="prod"
        )
    )
    config = RuntimeConfig(env="prod", tenants=("acme",), routing_source=kind_source)
    app = create_app(config, registry, routers=[feature_flags.router, hardening.router])
    failures: list[str] = []
    done = {"n": 0}
    stop = asyncio.Event()

    async def loop(client: httpx.AsyncClient, i: int) -> None:
        while not stop.is_set():
            for method, path, body in (
                ("GET", "/feature-flags/f1/evaluate?subject=u", None),
                ("POST", f"/nexus/hardening/rate-limit/k{i}", {"limit": 10**9}),
            ):
                resp = await client.request(method, path, json=body)
                if resp.status_code != 200:
                    failures.append(f"{method} {path}: {resp.status_code} {resp.text}")
                done["n"] += 1

    async with app_client(app, tenant="acme") as client:
        assert (await client.get("/readyz")).status_code == 200
        put = await client.put("/feature-flags/f1", json={"enabled": True})
        assert put.status_code == 200
        loops = [asyncio.create_task(loop(client, i)) for i in range(8)]
        await async_wait_for(lambda: _ran(done, 50), timeout=10, what="requests before switch")

        new_flags = record(K.FEATURE_FLAGS, "firestore", {"collection": flags_b}, env="prod")
        write(new_flags)
        await async_wait_for(
            lambda: _serving(client, K.FEATURE_FLAGS, "firestore", new_flags.revision),
            timeout=60,
            what="feature_flags on collection B",
        )
        new_limits = record(K.RATE_LIMIT, "firestore", {"collection": limits}, env="prod")
        write(new_limits)
        await async_wait_for(
            lambda: _serving(client, K.RATE_LIMIT, "firestore", new_limits.revision),
            timeout=60,
            what="rate_limit on Firestore",
        )
        before = done["n"]
        await async_wait_for(lambda: _ran(done, before + 50), timeout=60, what="after switch")
        stop.set()
        await asyncio.gather(*loops)
        assert failures == []

        # The flag lives in collection A; B starts empty, and new writes land in B.
        assert (await client.get("/feature-flags/f1")).status_code == 404
        assert (await client.put("/feature-flags/f2", json={"enabled": True})).status_code == 200
        assert (await client.get("/readyz")).status_code == 200

    db = firestore_emulator.client()
    assert db.collection(flags_a).document("acme").collection("flags").document("f1").get().exists
    assert db.collection(flags_b).document("acme").collection("flags").document("f2").get().exists
    counted = list(db.collection(limits).document("acme").collection("_rate_limits").stream())
    assert counted, "rate_limit hits after the switch are counted in Firestore"
    assert redis_server.client().keys(f"{uid}:acme:*"), "hits before the switch were in Redis"


async def _ran(done: dict[str, int], n: int) -> bool:
    return done["n"] >= n


def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    resp = httpx.get(f"{base}/readyz", timeout=5)
    return resp.status_code, resp.json()


def test_uvicorn_readiness_follows_the_registry(
    firestore_emulator: FirestoreEmulator, redis_server: RedisServer, gcs_emulator: GcsEmulator
) -> None:
    gcs = gcs_emulator.client()
    if gcs.lookup_bucket(BUCKET) is None:
        gcs.create_bucket(BUCKET)
    collection = f"routing-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {
        **os.environ,
        "ENGINES_ENV": "prod",
        "ENGINES_TENANTS": "acme",
        "ENGINES_ROUTING_SOURCE": "firestore",
        "ENGINES_ROUTING_COLLECTION": collection,
    }
    proc = subprocess.Popen(
        uvicorn_argv(port),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    writer = FirestoreRoutingRegistry(
        collection=collection, env="prod", project=firestore_emulator.project
    )
    try:

        def answered() -> tuple[int, dict[str, Any]] | None:
            try:
                return _readyz(base)
            except httpx.TransportError:
                assert proc.poll() is None, "uvicorn exited"
                return None

        status, body = wait_for(answered, timeout=60, what="uvicorn answering")
        assert status == 503
        assert {m["resource_kind"] for m in body["missing"]} == {k.value for k in K}

        uid = uuid.uuid4().hex[:8]
        records = durable_records(
            "prod",
            collection=f"data-{uid}",
            redis_url=redis_server.url,
            bucket=BUCKET,
            key_prefix=f"{uid}-",
        )
        for rec in records:
            writer.create(rec)
        wait_for(lambda: _readyz(base)[0] == 200, timeout=60, what="ready once seeded")

        seo = next(r for r in records if r.resource_kind is K.SEO)
        writer.delete(seo.key)
        wait_for(lambda: _readyz(base)[0] == 503, timeout=60, what="not ready after delete")
        assert _readyz(base)[1]["missing"] == [
            {"tenant": "acme", "env": "prod", "project": "*", "resource_kind": "seo"}
        ]
        resp = httpx.get(f"{base}/seo", timeout=5)
        assert resp.status_code == 500 and resp.json()["error"] == "ConfigMissing"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        writer.close()


# -- kubectl apply → operator → Firestore → a listening consumer --------------------------------


def _manifest(namespace: str, backend: str, settings: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "routing.engines.io/v1alpha1",
            "kind": "RoutingEntry",
            "metadata": {"name": "acme-rate-limit", "namespace": namespace},
            "spec": {
                "tenant": "acme",
                "env": "prod",
                "resourceKind": "rate_limit",
                "backend": backend,
                backend: settings,
            },
        }
    )


def test_consumer_sees_kubectl_apply_without_restart(
    kube_cluster: Any, firestore_emulator: FirestoreEmulator, namespace: str, tmp_path: Path
) -> None:
    from operator_harness import running_operator

    collection = f"routing-{uuid.uuid4().hex[:10]}"
    consumer = FirestoreRoutingRegistry(
        collection=collection, env="prod", project=firestore_emulator.project
    )
    consumer.start()
    try:
        assert consumer.wait_ready(15)
        with running_operator(kube_cluster.kubeconfig, namespace, collection, tmp_path):
            applied = kube_cluster.kubectl(
                "apply",
                "-f",
                "-",
                input=_manifest(namespace, "redis", {"url": "redis://redis-a.engines:6379/0"}),
            )
            assert applied.returncode == 0, applied.stderr
            first = wait_for(
                lambda: _resolved(consumer),
                timeout=60,
                what="the first entry to reach the consumer",
            )
            assert first.backend.value == "redis"

            applied = kube_cluster.kubectl(
                "apply",
                "-f",
                "-",
                input=_manifest(namespace, "firestore", {"collection": "rate_limits"}),
            )
            assert applied.returncode == 0, applied.stderr

            def switched_entry() -> RoutingRecord | None:
                now = _resolved(consumer)
                return now if now is not None and now.backend.value == "firestore" else None

            switched = wait_for(
                switched_entry, timeout=60, what="the switched entry to reach the consumer"
            )
            assert switched.config["collection"] == "rate_limits"
            assert switched.revision != first.revision
            assert switched.generation == 2
    finally:
        consumer.close()


def _resolved(consumer: FirestoreRoutingRegistry) -> RoutingRecord | None:
    from engines.routing import ConfigMissing

    try:
        return consumer.resolve("rate_limit", "acme", "prod")
    except ConfigMissing:
        return None
