"""Handing an identity over: when the entry that holds a document id goes, the next claimant in
the §3 order must be reconciled again to take it, at once rather than at the next drift sweep.

kopf reconciles an object only when it changes, so a requeue is a change: a fresh value of
:data:`REQUEUE_ANNOTATION` (an annotation the operator owns, allowed by the chart's admission
policy). The deleted entry's handler wakes its fellow claimants; :func:`watch_takeovers` covers
what that handler cannot see.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from engines.routing.contract import API_GROUP, API_VERSION, PLURAL

from .claims import Contender
from .conditions import now_rfc3339

if TYPE_CHECKING:
    from .reconciler import Reconciler

__all__ = ["REQUEUE_ANNOTATION", "hand_over", "requeue", "watch_takeovers"]

log = logging.getLogger(__name__)
REQUEUE_ANNOTATION = "routing.engines.io/requeue"


def requeue(custom_api: Any, other: Contender) -> None:
    """Have kopf reconcile ``other`` again (an entry already gone needs nothing)."""
    from kubernetes.client.exceptions import ApiException

    try:
        custom_api.patch_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            other.namespace,
            PLURAL,
            other.name,
            {
                "metadata": {
                    "annotations": {REQUEUE_ANNOTATION: now_rfc3339() + f"/{time.monotonic_ns()}"}
                }
            },
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


async def hand_over(reconciler: Reconciler, document_id: str, uid: str) -> None:
    """The entry ``uid`` no longer claims ``document_id``: wake every other claimant so the next
    oldest takes it (a kept projection included: it is an orphan now, and the same identity's)."""
    reconciler.claims.forget(uid)
    for other in reconciler.claims.of(document_id):
        if other.uid != uid and not other.deleting:
            await reconciler.run_blocking(reconciler.requeue, other)


async def watch_takeovers(reconciler: Reconciler, period: float) -> None:
    """Requeue a Conflict loser as soon as the claims say its winner is gone. The winner's
    delete handler requeues its losers at once; this covers what that cannot see (a loser
    whose reconcile read the claims just before the winner's deletion reached them, a
    requeue that failed)."""
    while True:
        await asyncio.sleep(period)
        for uid, (me, document_id) in list(reconciler.losers.items()):
            winner = reconciler.claims.winner(document_id)
            if winner is None or winner.uid != uid:
                continue
            log.info("%s/%s: its identity's winner is gone; requeueing", me.namespace, me.name)
            reconciler.losers.pop(uid, None)
            try:
                await reconciler.run_blocking(reconciler.requeue, me)
            except Exception as exc:  # keep watching; the drift sweep is the last resort
                log.warning("requeue of %s/%s failed: %s", me.namespace, me.name, exc)
