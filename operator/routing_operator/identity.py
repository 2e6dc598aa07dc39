"""This operator's cluster identity (``source.cluster`` of every document it writes), read at start.

Given with ``--cluster-id`` it is known before anything runs (a malformed one stops the process
at once: bad input). Otherwise it is the uid of namespace ``kube-system``, which may not be
readable yet (RBAC not granted, API server down): then the operator does not exit but waits,
the way it waits for anything else it needs, and says why. A kopf startup handler retries the
read, so kopf watches no entry and nothing is written until the identity is known (writing
without it would make this cluster's documents indistinguishable from another's); a readiness
check reports ``ClusterIdentityUnknown`` with its fix in the log, on ``/readyz`` and in
``routing_operator_blocked`` meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from engines.routing.cluster import ClusterIdentityError, cluster_identity
from engines.routing.collection import RoutingCollection

from .diagnostics import Blocker

__all__ = ["ClusterIdentity"]

log = logging.getLogger(__name__)
REASON = "ClusterIdentityUnknown"


class ClusterIdentity:
    def __init__(self, core_api: Any, projection: RoutingCollection) -> None:
        self.core_api = core_api
        self.projection = projection
        """Holds the identity once known (its ``cluster``; empty until then)."""
        self.error: ClusterIdentityError | None = None

    def resolve(self) -> str:
        """The identity; reads it when not known yet (blocking). Empty while it cannot be had
        (``error`` says why)."""
        if not self.projection.cluster:
            try:
                self.projection.cluster = cluster_identity(self.core_api, None)
                self.error = None
            except ClusterIdentityError as exc:
                self.error = exc
        return self.projection.cluster

    def check(self) -> list[Blocker]:
        """The readiness check: what keeps the identity unknown, if anything."""
        if self.resolve() or self.error is None:
            return []
        return [Blocker(REASON, self.error.problem, self.error.fix)]

    def register(self, registry: kopf.OperatorRegistry) -> None:
        @kopf.on.startup(id="cluster-identity", registry=registry)
        async def wait_for_identity(**_: Any) -> None:
            if not await asyncio.to_thread(self.resolve):
                assert self.error is not None
                raise kopf.TemporaryError(str(self.error), delay=5)
            log.info("cluster identity: %s", self.projection.cluster)
