"""kopf wiring: which events call the reconciler, on a registry built from the CLI settings.

Handlers are registered on an explicit ``kopf.OperatorRegistry`` (not at import time) so the
drift period and the clients come from the command line, and tests can build as many operators
as they need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import kopf

from .reconciler import Contender, Reconciler, identity_of

__all__ = ["OperatorConfig", "build_registry"]

RESOURCE = ("routing.engines.io", "v1alpha1", "routingentries")
PREFIX = "routing.engines.io"


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    collection: str = "routing_entries"
    drift_period: float = 60.0
    """Seconds between drift checks of each entry (a full re-reconcile, cheap when in sync)."""
    peering_lifetime: int = 60
    """Seconds a replica's peering record lives without a heartbeat (how fast a standby takes
    over from a replica that died without saying goodbye)."""


def build_registry(config: OperatorConfig, reconciler: Reconciler) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Progress and diff-base in annotations: status belongs to our declared schema only.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{PREFIX}/finalizer"
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 30
        settings.peering.lifetime = config.peering_lifetime

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the ServiceAccount token; elsewhere: KUBECONFIG / ~/.kube/config.
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.index(*RESOURCE, id="identities", registry=registry)
    def identities(body: kopf.Body, **_: Any) -> dict[str, Contender] | None:
        key = identity_of(body.spec)
        if key is None:
            return None
        meta = body.meta
        return {
            key.document_id: Contender(
                created=str(meta.get("creationTimestamp") or ""),
                namespace=str(meta.namespace),
                name=str(meta.name),
                uid=str(meta.uid),
                deleting=bool(meta.get("deletionTimestamp")),
            )
        }

    def contenders(body: kopf.Body, index: kopf.Index[str, Contender]) -> list[Contender]:
        key = identity_of(body.spec)
        return list(index.get(key.document_id, [])) if key is not None else []

    @kopf.on.resume(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    @kopf.on.create(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    @kopf.on.update(*RESOURCE, id="reconcile", backoff=5, registry=registry)
    async def reconcile(
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        identities: kopf.Index[str, Contender],
        **_: Any,
    ) -> None:
        await reconciler.reconcile(
            body=body, patch=patch, contenders=contenders(body, identities), retry=retry
        )

    @kopf.timer(
        *RESOURCE,
        id="drift",
        interval=config.drift_period,
        backoff=5,
        initial_delay=config.drift_period,
        registry=registry,
    )
    async def drift(
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        identities: kopf.Index[str, Contender],
        **_: Any,
    ) -> None:
        await reconciler.reconcile(
            body=body, patch=patch, contenders=contenders(body, identities), retry=retry
        )

    @kopf.on.delete(*RESOURCE, id="delete", backoff=5, registry=registry)
    async def delete(
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        identities: kopf.Index[str, Contender],
        **_: Any,
    ) -> None:
        await reconciler.delete(
            body=body, patch=patch, contenders=contenders(body, identities), retry=retry
        )

    return registry
