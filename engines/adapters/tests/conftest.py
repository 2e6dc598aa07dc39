"""Shared machinery of the conformance suites: which adapters each port has, and how to build one.

A suite module declares ``PORT = SomePort``; every test in it that takes ``backend`` runs once
per backend registered for that port in the *real* factory registry, and ``make(tenant=...)``
builds the adapter through :func:`engines.adapters.build_backend` — the same path production
uses. Adding an adapter to the registry therefore adds it to its port's suite automatically (and
fails here until it has an entry in :data:`VARIANTS` saying how to point it at a local service).

Each test gets fresh, private backend state (a unique Redis key prefix, Firestore collection,
GCS object prefix or local directory), so tests never see each other's data.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.testing import record
from engines.adapters.factory import KIND_PORTS, build_backend, registry
from engines.ports import Port
from engines.routing.catalog import Backend, ResourceKind

GCS_BUCKET = "routing-conformance"


@dataclass(frozen=True)
class Variant:
    service: str | None
    """The devstack fixture the backend needs (None: in process)."""
    config: Callable[[Any, str, Path], dict[str, Any]]
    """(service handle, unique test id, tmp dir) -> the routing entry's settings."""


VARIANTS: dict[Backend, Variant] = {
    Backend.MEMORY: Variant(None, lambda svc, uid, tmp: {}),
    Backend.NOOP: Variant(None, lambda svc, uid, tmp: {}),
    Backend.LOCAL: Variant(None, lambda svc, uid, tmp: {"path": str(tmp)}),
    Backend.REDIS: Variant(
        "redis_server", lambda svc, uid, tmp: {"url": svc.url, "key_prefix": f"conf-{uid}:"}
    ),
    Backend.FIRESTORE: Variant(
        "firestore_emulator", lambda svc, uid, tmp: {"collection": f"conf-{uid}"}
    ),
    Backend.GCS: Variant(
        "gcs_bucket", lambda svc, uid, tmp: {"bucket": GCS_BUCKET, "prefix": f"conf-{uid}/"}
    ),
}


IN_PROCESS = frozenset({Backend.MEMORY, Backend.NOOP})


def backends_of(port: type[Port]) -> dict[Backend, ResourceKind]:
    """Every backend registered for ``port``, with one kind that routes to it."""
    found: dict[Backend, ResourceKind] = {}
    for (kind, backend), _factory in registry:
        if KIND_PORTS[kind] is port:
            found.setdefault(backend, kind)
    return dict(sorted(found.items()))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    port = getattr(metafunc.module, "PORT", None)
    if port is not None and "backend" in metafunc.fixturenames:
        backends = list(backends_of(port))
        metafunc.parametrize("backend", backends, ids=[b.value for b in backends])


@pytest.fixture(scope="session")
def gcs_bucket(gcs_emulator: Any) -> Any:
    """The conformance bucket in the GCS emulator (buckets are provisioned, never auto-created)."""
    from google.api_core.exceptions import Conflict

    client = gcs_emulator.client()
    with contextlib.suppress(Conflict):
        client.create_bucket(GCS_BUCKET)
    return gcs_emulator


@pytest.fixture
def backend_config(
    request: pytest.FixtureRequest, backend: Backend, tmp_path: Path
) -> dict[str, Any]:
    variant = VARIANTS[backend]
    service = request.getfixturevalue(variant.service) if variant.service else None
    return variant.config(service, uuid.uuid4().hex[:12], tmp_path)


Make = Callable[..., Any]


@pytest.fixture
async def make(
    request: pytest.FixtureRequest, backend: Backend, backend_config: dict[str, Any]
) -> AsyncIterator[Make]:
    """``make(tenant="acme")`` → a new adapter of the module's PORT, closed after the test.

    Instances built for the same tenant share backend state (two "pods"); different tenants
    must not see each other's data. In-process backends (memory, noop) have nothing to share
    between instances, so there ``make`` returns one instance per tenant: the process is the pod.
    """
    port: type[Port] = request.module.PORT
    kind = backends_of(port)[backend]
    built: list[Port] = []
    in_process: dict[str, Port] = {}

    def _make(tenant: str = "acme") -> Any:
        if backend in IN_PROCESS and tenant in in_process:
            return in_process[tenant]
        adapter = build_backend(
            record(kind, backend, backend_config), tenant=tenant, allow_test_backends=True
        )
        assert isinstance(adapter, port)
        built.append(adapter)
        in_process[tenant] = adapter
        return adapter

    yield _make
    for adapter in built:
        await adapter.aclose()
