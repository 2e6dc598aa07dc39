"""kopf wiring: which events call the reconciler, on a registry built from the CLI settings.

Handlers are registered on an explicit ``kopf.OperatorRegistry`` (not at import time) so the
drift period and the clients come from the command line, and tests can build as many operators
as they need.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import kopf

from engines.routing.contract import API_GROUP, API_VERSION, DEFAULT_COLLECTION, PLURAL

from . import claims, heap, kopf_internals
from .deletion import delete as delete_entry
from .diffbase import HandledInMemory
from .drift_listeners import DriftListeners
from .drift_sweep import DriftSweeper
from .finalizing import EarlyFinalizer
from .handover import watch_takeovers
from .intake import Intake
from .listing import ListingGate
from .peering import Peering
from .reconciler import Reconciler
from .trimming import TrimmedResponse, strip, stripped

__all__ = ["OperatorConfig", "build_registry", "pooled_session", "quiet_event_handler"]

log = logging.getLogger(__name__)


RESOURCE = (API_GROUP, API_VERSION, PLURAL)
PREFIX = API_GROUP
KOPF_PREFIX = f"kopf.{API_GROUP}"
"""kopf's own annotations (handler progress while an entry is retried). Distinct from PREFIX:
changes to kopf's annotations are ignored, and ours (paused, requeue) must trigger handlers."""


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    collection: str = DEFAULT_COLLECTION
    drift_period: float = 1800.0
    """Seconds between drift sweeps (three list calls each, whatever the number of entries): the
    safety net behind the drift listeners, which repair as changes happen."""
    drift_listen: bool = True
    """Whether the drift listeners run (off: the sweep alone finds drift)."""
    namespaces: list[str] | None = None
    """Watched namespaces; None means every namespace."""
    peering_lifetime: int = 60
    """Seconds a replica's peering record lives without a heartbeat (how fast a standby takes
    over from a replica that died without saying goodbye)."""
    trim_period: float = 10.0
    """Seconds between returns of freed heap memory to the kernel (glibc ``malloc_trim``)."""
    takeover_period: float = 5.0
    """Seconds between checks of the Conflict losers against the claims (in memory, no API
    call unless a loser is now the winner)."""
    concurrent_entries: int = 64
    """Entries kopf handles at once (``worker_limit``); events of the others wait in the watch
    stream. Unbounded, a burst of N new entries holds N workers, their bodies and N API
    connections at the same time."""
    api_connections: int = 64
    """kopf's pooled connections to the API server for requests, on top of one per watch
    stream. kopf's own session has no limit, and each TLS connection holds a 256 KiB buffer.
    Keep it at least ``concurrent_entries``: waiting for a pooled connection counts against
    kopf's request timeout."""
    peering: Peering | None = None
    """This replica in kopf's peering (None: standalone). A standby does not sweep for drift."""
    list_page: int = claims.PAGE
    """Entries per page of kopf's list; the next page waits until at most one page of listed
    entries waits for a worker (see listing.py)."""


INTAKE_PER_WORKER = 2
"""New entries let into kopf's queue per ``concurrent_entries`` slot; the others wait in the
intake (intake.py)."""

REQUEST_TIMEOUT_S = 30.0
"""kopf's timeout of one API request (a held page of the list waits a third of it at most)."""

IDLE_CONNECTION_S = 5.0
"""Seconds a pooled API connection may sit unused before it is closed. Each open TLS connection
holds asyncio's read buffer and OpenSSL's state; with aiohttp's default (15 s, checked every
15 s) a full pool stays open long after a burst has ended. Reopening one costs only a TLS
handshake."""


def pooled_session(
    info: kopf.ConnectionInfo, limit: int, gate: ListingGate | None = None
) -> kopf.AiohttpSession:
    """kopf's credentials as an aiohttp session with a bounded connection pool (kopf builds its
    own with ``limit=0``) whose idle connections are closed after ``IDLE_CONNECTION_S``, and
    whose list requests pass the ``gate``. kopf closes the session when the credentials are
    replaced or at exit."""
    import aiohttp

    traces = []
    if gate is not None:

        async def before_request(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
            await gate.before_request(params.method, params.url)

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(before_request)
        traces.append(trace)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=limit, keepalive_timeout=IDLE_CONNECTION_S, ssl=info.as_ssl_context()
        ),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        trace_configs=traces,
        response_class=TrimmedResponse,  # answers lose the fields nobody reads (trimming.py)
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


class _QuietEventHandler(logging.Filter):
    """Drops kopf's info line for each successful call of the ``claims`` event handler: kopf
    calls it for every watch event (three per new entry), and the line says nothing that the
    reconcile's own lines do not."""

    LINE = "Handler 'claims' succeeded."

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg == self.LINE)


def quiet_event_handler() -> None:
    """Leave out kopf's per-event success line of the ``claims`` handler (not with ``-v``)."""
    logging.getLogger("kopf.objects").addFilter(_QuietEventHandler())


def build_registry(config: OperatorConfig, reconciler: Reconciler) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    clusterwide = config.namespaces is None
    handled = HandledInMemory(KOPF_PREFIX, clusterwide=clusterwide)
    finalizer = EarlyFinalizer(f"{PREFIX}/finalizer")
    intake = Intake(INTAKE_PER_WORKER * config.concurrent_entries, strip=strip)

    def watched(source: Any, resource: kopf.Resource | None) -> Any:
        if resource is not None and (resource.group, resource.plural) == (API_GROUP, PLURAL):
            return intake.stream(source)
        return stripped(source)

    gate = ListingGate(
        RESOURCE[2],
        config.list_page,
        clusterwide=clusterwide,
        max_wait=REQUEST_TIMEOUT_S / 3,
        on_list=handled.relisting,
    )

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress of retried handlers in annotations: status belongs to our declared schema.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        # The last handled state in memory, not written back to every entry (see diffbase.py).
        settings.persistence.diffbase_storage = handled
        settings.persistence.finalizer = finalizer.finalizer
        finalizer.settings = settings
        # Events lose the fields nobody reads, and new entries beyond what the workers can
        # take wait outside kopf, before kopf queues them (trimming.py, intake.py).
        kopf_internals.wrap_watches(watched)
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = REQUEST_TIMEOUT_S
        settings.peering.lifetime = config.peering_lifetime
        # Bounded, which is safe because no kopf index is declared (see claims.py).
        settings.queueing.worker_limit = config.concurrent_entries
        # A worker holds its slot until it has been idle this long; kopf's default (5 s) would
        # cap throughput at worker_limit/5 entries per second, and an idle worker keeps its
        # queue and coroutine in memory. A late event just starts a new worker.
        settings.queueing.idle_timeout = 0.1
        # kopf's lists of the entries a page at a time (by default kopf reads all of them in
        # one response and parses it at once); the session's gate holds further pages back.
        settings.watching.chunk_size = config.list_page

    sweeper = DriftSweeper(reconciler, config.namespaces, config.peering)
    listeners = DriftListeners(reconciler, config.namespaces, sweeper)
    tasks: list[asyncio.Task[None]] = []

    async def trim_memory(period: float) -> None:
        while True:
            await asyncio.sleep(period)
            heap.trim()

    @kopf.on.startup(id="claims", backoff=5, registry=registry)
    async def load_claims(**_: Any) -> None:
        # Startup handlers finish before kopf watches anything: the first reconcile of an
        # entry already sees every older claimant of its identity.
        from kubernetes.client.exceptions import ApiException

        try:
            count = await reconciler.run_blocking(reconciler.load_claims, config.namespaces)
        except ApiException as exc:
            if exc.status not in (401, 403, 404):
                raise
            # A missing CRD or missing rights: diagnostics.py says which and how to fix it;
            # a traceback every 5 s would only bury that.
            raise kopf.TemporaryError(
                f"cannot list the RoutingEntries (HTTP {exc.status} {exc.reason}): see the "
                "'cannot work' line of this log or /readyz",
                delay=5,
            ) from None
        log.info("claims loaded: %d RoutingEntries", count)

    @kopf.on.startup(id="background-tasks", registry=registry)
    async def start_background_tasks(**_: Any) -> None:
        tasks.append(asyncio.create_task(trim_memory(config.trim_period), name="malloc-trim"))
        tasks.append(asyncio.create_task(sweeper.run(config.drift_period), name="drift-sweep"))
        if config.drift_listen:
            tasks.append(asyncio.create_task(listeners.run(), name="drift-listen"))
        tasks.append(
            asyncio.create_task(
                watch_takeovers(reconciler, config.takeover_period),
                name="takeover-watch",
            )
        )

    @kopf.on.cleanup(id="background-tasks-stop", registry=registry)
    async def stop_background_tasks(**_: Any) -> None:
        for task in tasks:
            task.cancel()

    @kopf.on.login(id="login", registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        # In a pod: the ServiceAccount token; elsewhere: KUBECONFIG / ~/.kube/config.
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        if info is None:
            return None
        # Watches: entries and peering per watched namespace, plus the cluster-wide ones kopf
        # may open (CRDs, namespaces); requests share the pool above that.
        watches = 2 * len(config.namespaces or ["*"]) + 2
        return pooled_session(info, watches + config.api_connections, gate)

    @kopf.on.event(*RESOURCE, id="claims", registry=registry)
    async def observe(
        *, type: str | None, body: kopf.Body, resource: kopf.Resource, logger: Any, **_: Any
    ) -> None:
        # Async on purpose: kopf runs it inline, before this event's changing handlers and
        # before it decides about the finalizer (finalizing.py).
        if type is None:  # from kopf's list, not the watch
            gate.reached(body.meta.namespace)
        intake.reached(str(body.meta.uid), gone=type == "DELETED")
        if type == "DELETED":
            reconciler.claims.forget(str(body.meta.uid))
            handled.forget(body)
        else:
            reconciler.claims.observe(body.meta, body.spec)
            await finalizer.ensure(body, resource, logger)

    @kopf.on.resume(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    @kopf.on.create(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    @kopf.on.update(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    async def reconcile(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        await reconciler.reconcile(body=body, patch=patch, retry=int(kwargs.get("retry", 0)))

    @kopf.on.delete(*RESOURCE, id="delete", backoff=5, registry=registry)
    async def delete(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        await delete_entry(reconciler, body=body, patch=patch, retry=int(kwargs.get("retry", 0)))

    return registry
