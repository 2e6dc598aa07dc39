"""The admin port: ``/routing`` and ``/metrics`` served by the same process on a second port.

The routing table names every backend (buckets, collections, Redis hosts) and the metrics name
every tenant: neither belongs on the port a public Service exposes. With ``ENGINES_ADMIN_PORT``
set, the app's lifespan opens that port and runs a second uvicorn server on it, in the same event
loop, for a small app holding only those two endpoints (and sharing the app's slots and
registry); the public app does not mount them, so it answers 404 for both.

The second server leaves signals to the server that runs the app (it is stopped by the app's
lifespan, which that server ends on SIGTERM), and binds its socket itself so that a port in
use fails start-up with an error naming ``ENGINES_ADMIN_PORT`` instead of exiting the process
from inside uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import uvicorn
from fastapi import FastAPI
from prometheus_client import make_asgi_app
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .errors import install_error_handlers
from .probes import routing_router

__all__ = [
    "AdminPortError",
    "AdminServer",
    "admin_app",
    "mount_admin_endpoints",
    "with_admin_port",
]

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

log = logging.getLogger("engines.runtime")


class AdminPortError(RuntimeError):
    """``ENGINES_ADMIN_PORT`` cannot be listened on; the message names the variable."""


class _Metrics:
    """The Prometheus exposition as a plain route: ``/metrics`` itself, not a redirect to
    ``/metrics/`` as a mount would answer."""

    def __init__(self) -> None:
        self.app = make_asgi_app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def mount_admin_endpoints(app: FastAPI) -> None:
    """``/routing`` and ``/metrics`` on ``app`` (its ``state`` holds the slots and registry)."""
    app.include_router(routing_router())
    # A Route whose endpoint is not a function serves it as an ASGI app.
    app.router.routes.append(
        Route("/metrics", _Metrics(), methods=["GET"], include_in_schema=False)
    )


def admin_app(main: FastAPI) -> FastAPI:
    """The admin port's app: the admin endpoints over ``main``'s slots and registry."""
    app = FastAPI(
        title="engines admin",
        summary="Routing table and metrics of an engines pod (not for the public Service)",
        openapi_url=None,  # two endpoints, documented in the app's own document when unmoved
    )
    app.state.config = main.state.config
    app.state.registry = main.state.registry
    app.state.slots = main.state.slots
    app.state.routing_source = main.state.routing_source
    install_error_handlers(app)
    mount_admin_endpoints(app)
    return app


def with_admin_port(lifespan: Lifespan, port: int | None) -> Lifespan:
    """``lifespan`` run inside the admin server's life (``port`` None: ``lifespan`` as is)."""
    if port is None:
        return lifespan

    @asynccontextmanager
    async def serving_admin(app: FastAPI) -> AsyncIterator[None]:
        admin = AdminServer(admin_app(app), port)
        await admin.start()  # first: a port in use fails start-up before any backend I/O
        try:
            async with lifespan(app):
                yield
        finally:
            await admin.stop()

    return serving_admin


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The server running the app owns SIGTERM/SIGINT; this one is stopped by the lifespan.
        yield


class AdminServer:
    """A uvicorn server for the admin app, started and stopped from the main app's lifespan."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self.port = port
        self._server = _Server(
            uvicorn.Config(
                app,
                port=port,
                lifespan="off",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = _listen(self.port)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="engines-admin")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped the server
                raise AdminPortError(f"the admin server on port {self.port} stopped at start")
            await asyncio.sleep(0.01)
        log.info("admin endpoints /routing and /metrics on port %d (ENGINES_ADMIN_PORT)", self.port)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._task = None


def _listen(port: int) -> socket.socket:
    """A listening socket on every interface (IPv6 and IPv4 where the host has both)."""
    try:
        if socket.has_dualstack_ipv6():
            try:
                return socket.create_server(
                    ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=128
                )
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise
                # IPv6 compiled in but off on this host (common in containers): IPv4 only.
        return socket.create_server(("0.0.0.0", port), backlog=128)
    except OSError as exc:
        raise AdminPortError(
            f"ENGINES_ADMIN_PORT={port}: cannot listen on port {port} ({exc.strerror}); choose "
            "a free port that differs from the app's port, or unset ENGINES_ADMIN_PORT to serve "
            "/routing and /metrics on the app port"
        ) from exc
