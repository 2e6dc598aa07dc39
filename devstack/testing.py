"""The one kit for tests and benchmarks: wait on a condition, build records, run the app.

Dev tooling, beside the local stack's fixtures and outside the runtime package (the image never
ships it). Tests never sleep and hope: :func:`wait_for` (and its asyncio twin
:func:`async_wait_for`) poll a condition until a deadline and fail saying what they waited for.
``record()`` builds a validated ``RoutingRecord`` the way the operator would; ``durable_records``
gives one durable entry per catalog kind (what a production environment needs);
``smoke_requests`` collects the harmless request each mounted service declares for its kinds
(:class:`~engines.runtime.http.SmokeRequest`), to show which kinds a running app serves;
``app_client`` runs the app's lifespan and hands back an httpx client bound to it in process;
``served_app`` runs it the way a pod does (``uvicorn --factory``, a real socket), for what only a
real server shows: the admin port, bodies on the wire, clients that disconnect.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from engines.routing.catalog import CATALOG, Backend, ResourceKind
from engines.routing.model import RoutingRecord, parse_spec
from engines.runtime.http import ServiceRouter, SmokeRequest

__all__ = [
    "ServedApp",
    "app_client",
    "async_wait_for",
    "durable_records",
    "metric_sum",
    "record",
    "served_app",
    "service_client",
    "smoke_requests",
    "test_records",
    "uvicorn_argv",
    "wait_for",
]

T = TypeVar("T")


class _Deadline:
    """The shared half of both waits: when to give up, and what to say then."""

    def __init__(self, timeout: float, what: str | Callable[[], str], condition: object) -> None:
        self.timeout, self.what, self.condition = timeout, what, condition
        self.at = time.monotonic() + timeout
        self.last_error: AssertionError | None = None

    def check(self) -> None:
        """Raise the timeout, describing the state that failed the wait, once it has passed."""
        if time.monotonic() < self.at:
            return
        detail = f": {self.last_error}" if self.last_error else ""
        raise AssertionError(
            f"timed out after {self.timeout}s waiting for {self._describe()}{detail}"
        )

    def _describe(self) -> str:
        # A callable is called at the deadline, so it reports the state that failed the wait,
        # not the state when the wait began.
        if callable(self.what):
            try:
                return self.what()
            except Exception as exc:  # the description must never hide the timeout
                return f"<description failed: {exc!r}>"
        return self.what or str(self.condition)


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll ``condition`` until it returns a truthy value and return that value; fail with
    ``what`` at the deadline. A condition may also be written as assertions: an
    ``AssertionError`` counts as not yet, and the last one is reported at the deadline."""
    deadline = _Deadline(timeout, what, condition)
    while True:
        try:
            value = condition()
            if value:
                return value
        except AssertionError as exc:
            deadline.last_error = exc
        deadline.check()
        time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str | Callable[[], str] = "",
) -> T:
    """:func:`wait_for` for a coroutine condition, sleeping on the event loop between polls."""
    deadline = _Deadline(timeout, what, condition)
    while True:
        try:
            value = await condition()
            if value:
                return value
        except AssertionError as exc:
            deadline.last_error = exc
        deadline.check()
        await asyncio.sleep(interval)


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the samples called ``name`` (with exactly these ``labels``, when given) in a
    Prometheus text exposition; 0 when there are none."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and (labels is None or sample.labels == dict(labels))
    )


def smoke_requests(routers: Iterable[ServiceRouter]) -> dict[ResourceKind, SmokeRequest]:
    """The request each router declares for its kinds: any working backend answers it with 2xx.

    Fails naming the router that declares none, so a new service cannot be left out of the
    checks that walk every kind.
    """
    out: dict[ResourceKind, SmokeRequest] = {}
    for router in routers:
        if router.smoke is None:
            raise AssertionError(f"the router of {sorted(router.kinds)} declares no smoke request")
        for kind in router.kinds:
            out[kind] = router.smoke
    return out


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


@asynccontextmanager
async def service_client(
    router: ServiceRouter,
    local_path: Path,
    *,
    tenants: tuple[str, ...] = ("acme", "globex"),
    records: Iterable[RoutingRecord] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """One service alone in an app whose kinds route to their test backends (``memory``, or
    ``local`` under ``local_path``) unless ``records`` says otherwise, serving ``tenants``; the
    client speaks for the first one.

    For the services' own rules: the backends are the in-process reference adapters the
    conformance suite holds to the same contract as the production ones.
    """
    from engines.app import create_app
    from engines.config.runtime_config import RuntimeConfig
    from engines.routing.registry import InMemoryRoutingRegistry

    registry = InMemoryRoutingRegistry()
    for rec in test_records(str(local_path)) if records is None else records:
        if rec.resource_kind in router.kinds:
            registry.create(rec)
    config = RuntimeConfig(env="test", tenants=tenants, allow_test_backends=True)
    app = create_app(config, registry, routers=[router])
    async with app_client(app, tenant=tenants[0]) as client:
        assert (await client.get("/readyz")).status_code == 200, "the service is not ready"
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
