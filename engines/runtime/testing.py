"""Helpers for tests and benchmarks of the engines app: records, one request per service, a client.

``record()`` builds a validated ``RoutingRecord`` the way the operator would; ``durable_records``
gives one durable entry per catalog kind (what a production environment needs);
``SERVICE_PROBES`` is one harmless request per kind, to show which kinds a running app serves;
``app_client`` runs the app's lifespan and hands back an httpx client bound to it in process;
``served_app`` runs it the way a pod does (``uvicorn --factory``, a real socket), for what only a
real server shows: the admin port, bodies on the wire, clients that disconnect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from engines.routing.catalog import CATALOG, Backend, ResourceKind
from engines.routing.model import RoutingRecord, parse_spec

__all__ = [
    "SERVICE_PROBES",
    "ServedApp",
    "app_client",
    "durable_records",
    "record",
    "served_app",
    "test_records",
    "uvicorn_argv",
]

K = ResourceKind

SERVICE_PROBES: dict[ResourceKind, tuple[str, str, Any]] = {
    K.FEATURE_FLAGS: ("GET", "/feature-flags/probe/evaluate?subject=s", None),
    K.STRATEGY_LOCK: ("POST", "/strategy-lock/probe/acquire", {"owner": "probe", "ttl_s": 0.5}),
    K.KPI: ("GET", "/kpi/probe", None),
    K.BUDGET: ("PUT", "/budget/probe", {"limit": 1}),
    K.MAYBES: ("GET", "/maybes", None),
    K.MEMORY: ("GET", "/memory", None),
    K.ANALYTICS_EVENTS: ("GET", "/analytics-events", None),
    K.RATE_LIMIT: ("POST", "/nexus/hardening/rate-limit/probe", {"limit": 1_000_000}),
    K.FIREARMS: ("GET", "/firearms", None),
    K.PAGE_CONTENT: ("GET", "/page-content", None),
    K.SEO: ("GET", "/seo", None),
    K.REALTIME_REGISTRY: ("GET", "/realtime/presence", None),
    K.CHAT_BUS: ("POST", "/chat/probe/messages", {"probe": True}),
    K.NEXUS_BACKEND: ("GET", "/nexus/backends", None),
    K.MEDIA_V2_STORAGE: ("GET", "/media-v2/blobs", None),
    K.RAW_STORAGE: ("GET", "/nexus/raw-storage/blobs", None),
    K.VIDEO_TIMELINE: ("GET", "/video-timeline", None),
}
"""One request per kind that any working backend answers with 2xx."""


def record(
    kind: ResourceKind | str,
    backend: Backend | str,
    config: Mapping[str, Any] | None = None,
    *,
    tenant: str = "*",
    env: str = "test",
    project: str = "*",
) -> RoutingRecord:
    """A record validated by the same model as a RoutingEntry (``InvalidRouting`` otherwise)."""
    b = Backend(backend)
    spec = {
        "tenant": tenant,
        "env": env,
        "project": project,
        "resourceKind": ResourceKind(kind).value,
        "backend": b.value,
        b.value: dict(config or {}),
    }
    return RoutingRecord.from_spec(parse_spec(spec))


def durable_records(
    env: str, *, collection: str, redis_url: str, bucket: str, key_prefix: str = ""
) -> list[RoutingRecord]:
    """One wildcard-tenant entry per kind on its first durable backend."""
    configs: dict[Backend, dict[str, Any]] = {
        Backend.FIRESTORE: {"collection": collection},
        Backend.REDIS: {"url": redis_url, "key_prefix": key_prefix},
        Backend.GCS: {"bucket": bucket, "prefix": key_prefix},
    }
    return [
        record(k, spec.durable[0], configs[spec.durable[0]], env=env) for k, spec in CATALOG.items()
    ]


def test_records(local_path: str) -> list[RoutingRecord]:
    """One env=test entry per kind on its test-only backend (``local`` under ``local_path``)."""
    out = []
    for kind, spec in CATALOG.items():
        backend = spec.test_only[0]
        config = {"path": local_path} if backend is Backend.LOCAL else {}
        out.append(record(kind, backend, config))
    return out


test_records.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@asynccontextmanager
async def app_client(
    app: FastAPI, *, tenant: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app (lifespan), yield a client on it, stop it on exit."""
    headers = {"X-Tenant": tenant} if tenant else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://engines", headers=headers
        ) as client:
            yield client


def uvicorn_argv(port: int) -> list[str]:
    """The documented serve command (DESIGN §9) on loopback ``port``, run by this interpreter."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "engines.chat.service.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@dataclass
class ServedApp:
    """An engines app served by its own ``uvicorn --factory`` process."""

    url: str
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def served_app(
    tmp_path: Path, *, port: int, env: Mapping[str, str] | None = None, tenants: str = "acme"
) -> Iterator[ServedApp]:
    """``uvicorn --factory engines.chat.service.server:create_app`` on ``port``, until exit.

    Routing comes from files (as a mounted ConfigMap): one env=test entry per kind on its
    test-only backend, with ``ENGINES_ALLOW_TEST_BACKENDS=1``, so the app is ready without any
    emulator; ``env`` adds or overrides settings. Yields once ``/livez`` answers (or the process
    exited: check ``process.poll()``); stops the process with SIGTERM on exit.
    """
    routing, local = tmp_path / "routing", tmp_path / "local"
    routing.mkdir(parents=True)
    local.mkdir(parents=True)
    for rec in test_records(str(local)):
        (routing / rec.key.configmap_key).write_text(json.dumps(rec.to_document()))
    log = tmp_path / "uvicorn.log"
    settings = {
        "ENGINES_ENV": "test",
        "ENGINES_TENANTS": tenants,
        "ENGINES_ROUTING_SOURCE": "files",
        "ENGINES_ROUTING_DIR": str(routing),
        "ENGINES_ALLOW_TEST_BACKENDS": "1",
        **(env or {}),
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            uvicorn_argv(port),
            env={**os.environ, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    served = ServedApp(url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None:
            try:
                if httpx.get(f"{served.url}/livez", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not answer within 60s:\n{served.output()}")
            time.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
