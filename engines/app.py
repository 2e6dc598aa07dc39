"""The engines app's composition root: every service router, the probes, and the backend slots.

``uvicorn --factory engines.chat.service.server:create_app`` (the path DESIGN §9 documents, which
re-exports this module's :func:`create_app`) reads the runtime settings
(``ENGINES_*``), opens the routing registry they name, and serves. This module only wires: the
services own their endpoints, :mod:`engines.runtime` owns backends and readiness.

Start-up (the lifespan): start the registry and wait for its first load, build every
(tenant, kind) slot, log each one that cannot serve; with ``ENGINES_STRICT_STARTUP=1`` refuse
to start instead. Shutdown drains and closes every backend, then the registry. With
``ENGINES_ADMIN_PORT`` the lifespan also runs the admin port (``/routing``, ``/metrics``) around
all of that; bodies and event streams are bounded by ``ENGINES_MAX_BODY_BYTES`` and
``ENGINES_MAX_SSE_SUBSCRIBERS`` (:mod:`engines.runtime.http`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from engines.agent_memory import router as agent_memory
from engines.analytics_events import router as analytics_events
from engines.budget import router as budget
from engines.chat.service.bus import router as chat_bus
from engines.config.runtime_config import RuntimeConfig, load_runtime_config
from engines.feature_flags import router as feature_flags
from engines.firearms import router as firearms
from engines.kpi import router as kpi
from engines.maybes import router as maybes
from engines.media_v2 import router as media_v2
from engines.nexus.backends import router as nexus_backends
from engines.nexus.hardening import router as nexus_hardening
from engines.nexus.raw_storage import router as raw_storage
from engines.page_content import router as page_content
from engines.realtime import router as realtime
from engines.routing.registry import RoutingRegistry
from engines.runtime import BackendFactory, BackendSlots, SecretResolver, adapter_factory
from engines.runtime.http import (
    ServiceRouter,
    complete_openapi,
    install_error_handlers,
    probes_router,
)
from engines.runtime.http.admin import mount_admin_endpoints, with_admin_port
from engines.runtime.http.limits import BodyLimit, SubscriberCap
from engines.runtime.startup import StartupRefused, check_startup, open_routing_registry
from engines.seo import router as seo
from engines.strategy_lock import router as strategy_lock
from engines.video_timeline import router as video_timeline

__all__ = ["SERVICE_ROUTERS", "StartupRefused", "create_app"]

log = logging.getLogger("engines.runtime")

SERVICE_ROUTERS: tuple[ServiceRouter, ...] = (
    feature_flags,
    strategy_lock,
    kpi,
    budget,
    maybes,
    agent_memory,
    analytics_events,
    nexus_hardening,
    firearms,
    page_content,
    seo,
    realtime,
    chat_bus,
    nexus_backends,
    media_v2,
    raw_storage,
    video_timeline,
)
"""The 17 services; together they need every catalog kind."""


def create_app(
    config: RuntimeConfig | None = None,
    registry: RoutingRegistry | None = None,
    *,
    backend_factory: BackendFactory | None = None,
    routers: Sequence[ServiceRouter] = SERVICE_ROUTERS,
    secrets: SecretResolver | None = None,
    registry_timeout: float = 30.0,
    drain_timeout: float = 30.0,
) -> FastAPI:
    """Build the engines app.

    ``config`` defaults to :func:`load_runtime_config` (the environment); ``registry`` to the
    one ``ENGINES_ROUTING_SOURCE`` names (an injected registry is started but not closed by the
    app: its owner closes it). ``backend_factory`` defaults to the adapters' ``build_backend``
    with ``ENGINES_ALLOW_TEST_BACKENDS`` and the mounted ``secrets``.
    """
    _configure_logging()
    config = config or load_runtime_config()
    owns_registry = registry is None
    registry = registry if registry is not None else open_routing_registry(config)
    kinds = frozenset().union(*(r.kinds for r in routers))
    slots = BackendSlots(
        registry,
        env=config.env,
        tenants=config.tenants,
        project=config.project,
        kinds=kinds,
        factory=backend_factory
        or adapter_factory(allow_test_backends=config.allow_test_backends, secrets=secrets),
        drain_timeout=drain_timeout,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(registry.start)
        if not await asyncio.to_thread(registry.wait_ready, registry_timeout):
            log.error(
                "the %s routing registry has not loaded (%s); every kind counts as missing "
                "until it does",
                config.routing_source.value,
                getattr(registry, "last_error", None) or f"not within {registry_timeout:.0f}s",
            )
        await slots.start()
        try:
            check_startup(slots, registry, strict=config.strict_startup)
        except StartupRefused:
            await _shutdown(slots, registry, owns_registry)
            raise
        try:
            yield
        finally:
            await _shutdown(slots, registry, owns_registry)

    app = FastAPI(
        title="engines",
        summary="Tenant services whose backends come from the routing registry",
        lifespan=with_admin_port(lifespan, config.admin_port),
    )
    app.state.config = config
    app.state.registry = registry
    app.state.slots = slots
    app.state.routing_source = config.routing_source.value
    app.state.sse_subscribers = SubscriberCap(config.max_sse_subscribers)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_body_bytes=config.max_body_bytes)
    app.include_router(probes_router())
    for router in routers:
        app.include_router(router)
    if config.admin_port is None:  # else only the admin port serves them
        mount_admin_endpoints(app)
    complete_openapi(app, config.tenants)
    return app


async def _shutdown(slots: BackendSlots, registry: RoutingRegistry, owns_registry: bool) -> None:
    await slots.aclose()
    if owns_registry:
        await asyncio.to_thread(registry.close)


def _configure_logging() -> None:
    """Make the runtime's log lines visible under uvicorn, unless logging is configured."""
    logger = logging.getLogger("engines")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
