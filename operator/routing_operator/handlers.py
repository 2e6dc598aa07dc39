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

from . import memory
from .reconciler import Contender, DriftSweeper, Reconciler, identity_of

__all__ = ["OperatorConfig", "build_registry"]


RESOURCE = ("routing.engines.io", "v1alpha1", "routingentries")
PREFIX = "routing.engines.io"
KOPF_PREFIX = "kopf.routing.engines.io"
"""kopf's own annotations (progress, diff-base). Distinct from PREFIX: kopf ignores changes to
annotations under its storage prefix, and ours (paused, requeue) must trigger handlers."""


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    collection: str = "routing_entries"
    drift_period: float = 60.0
    """Seconds between drift sweeps (three list calls each, whatever the number of entries)."""
    namespaces: list[str] | None = None
    """Watched namespaces; None means every namespace."""
    peering_lifetime: int = 60
    """Seconds a replica's peering record lives without a heartbeat (how fast a standby takes
    over from a replica that died without saying goodbye)."""
    trim_period: float = 10.0
    """Seconds between returns of freed heap memory to the kernel (glibc ``malloc_trim``)."""
    takeover_period: float = 5.0
    """Seconds between checks of the Conflict losers against the identity index (in memory,
    no API call unless a loser is now the winner)."""


def build_registry(config: OperatorConfig, reconciler: Reconciler) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress and diff-base in annotations: status belongs to our declared schema only.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=KOPF_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{PREFIX}/finalizer"
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 30
        settings.peering.lifetime = config.peering_lifetime
        # No settings.queueing.worker_limit: with kopf indexes it deadlocks an operator that
        # starts with more entries than the limit (the first workers wait for every entry to
        # be indexed, the rest wait for a free worker). Measured: 1,000 entries, limit 64,
        # nothing ever handled.

    sweeper = DriftSweeper(reconciler, config.namespaces)
    tasks: list[asyncio.Task[None]] = []

    live: dict[str, kopf.Index[str, Contender]] = {}
    """kopf's identity index, captured from the first handler call: a live view (kopf keeps one
    Index object per indexer), read by the takeover watch between handler calls."""

    async def trim_memory(period: float) -> None:
        while True:
            await asyncio.sleep(period)
            memory.trim()

    @kopf.on.startup(id="background-tasks", registry=registry)
    async def start_background_tasks(**_: Any) -> None:
        tasks.append(asyncio.create_task(trim_memory(config.trim_period), name="malloc-trim"))
        tasks.append(asyncio.create_task(sweeper.run(config.drift_period), name="drift-sweep"))
        tasks.append(
            asyncio.create_task(
                reconciler.watch_takeovers(lambda: live.get("identities"), config.takeover_period),
                name="takeover-watch",
            )
        )

    @kopf.on.cleanup(id="background-tasks-stop", registry=registry)
    async def stop_background_tasks(**_: Any) -> None:
        for task in tasks:
            task.cancel()

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount token; elsewhere: KUBECONFIG / ~/.kube/config.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.index(*RESOURCE, id="identities", registry=registry)
    def identities(body: kopf.Body, **_: Any) -> dict[str, Contender] | None:
        key = identity_of(body.spec)
        if key is None:
            return None
        return {key.document_id: Contender.of(body.meta)}

    def claims(body: kopf.Body, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The reconciler's arguments from a handler call: this identity's claimants, retry."""
        index: kopf.Index[str, Contender] = kwargs["identities"]
        live["identities"] = index
        key = identity_of(body.spec)
        return {
            "contenders": list(index.get(key.document_id, [])) if key is not None else [],
            "retry": int(kwargs.get("retry", 0)),
        }

    @kopf.on.resume(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    @kopf.on.create(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    @kopf.on.update(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    async def reconcile(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        await reconciler.reconcile(body=body, patch=patch, **claims(body, kwargs))

    @kopf.on.delete(*RESOURCE, id="delete", backoff=5, registry=registry)
    async def delete(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        await reconciler.delete(body=body, patch=patch, **claims(body, kwargs))

    return registry
