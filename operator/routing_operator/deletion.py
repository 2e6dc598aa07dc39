"""The deletion path of a RoutingEntry (kopf's finalizer handler): remove its projections, or
keep them serving, then hand its identity over.

What a deleted entry served stays served unless the deletion was meant: only an entry in
``env: test`` or one annotated ``allow-delete: "true"`` takes its Firestore document and
ConfigMap key with it; any other deletion (a namespace or the CRD deleted, a plain delete where
the admission policy is not installed) keeps them, says so in an event, and leaves them for an
entry of the same identity to take back or for ``routingctl prune``. A backend that cannot be
reached keeps the finalizer: the deletion is retried, never half done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import kopf

from engines.routing.contract import ALLOW_DELETE_ANNOTATION, annotated
from engines.routing.errors import BackendUnavailable

from . import metrics
from .claims import identity_of
from .conditions import READY, Reason, Wanted
from .handover import hand_over
from .status import backoff, previous, set_status
from .terminating import gone_with_namespace

if TYPE_CHECKING:
    from .reconciler import Reconciler

__all__ = ["delete"]

log = logging.getLogger(__name__)


async def delete(reconciler: Reconciler, *, body: kopf.Body, patch: kopf.Patch, retry: int) -> None:
    """kopf's delete handler: raises ``kopf.TemporaryError`` (keeping the finalizer) while a
    projection that must go cannot be removed yet."""
    meta = body.meta
    uid, ns = str(meta.uid), str(meta.namespace)
    key = identity_of(body.spec)
    reconciler.losers.pop(uid, None)
    allowed = annotated(meta, ALLOW_DELETE_ANNOTATION)
    if key is not None and key.env != "test" and not allowed:
        # Whatever removed it (a namespace or the CRD deleted, a plain delete where the
        # admission policy is not installed), what it serves stays served.
        if owned_something(body.status):
            metrics.PROJECTIONS_KEPT.inc()
            kopf.event(
                body,
                type="Warning",
                reason="ProjectionsKept",
                message=f'deleted without {ALLOW_DELETE_ANNOTATION}="true": its Firestore '
                f"document {reconciler.collection}/{key.document_id} and ConfigMap "
                f"{ns}/{key.configmap_name} key {key.configmap_key} are kept and keep "
                "serving; an entry with the same identity takes them back, `routingctl "
                "prune` deletes them",
            )
            log.warning(
                "%s/%s deleted without %s: projections of %s kept",
                ns,
                meta.name,
                ALLOW_DELETE_ANNOTATION,
                key.document_id,
            )
    elif key is not None:
        from kubernetes.client.exceptions import ApiException

        try:
            await reconciler.run_blocking(reconciler.firestore.remove, key, uid)
            try:
                await reconciler.run_blocking(reconciler.configmaps.remove, ns, key, uid)
            except ApiException as exc:
                # A namespace being deleted takes the ConfigMap (and our Role) with it.
                what = f"ConfigMap {ns}/{key.configmap_name} key {key.configmap_key}"
                api = reconciler.configmaps.api
                if not await reconciler.run_blocking(gone_with_namespace, api, ns, exc, what):
                    raise
        except BackendUnavailable as exc:
            message = f"deleting: projections not removed yet ({exc}); retrying"
            kopf.event(body, type="Warning", reason=Reason.BACKEND_UNAVAILABLE, message=message)
            set_status(
                patch,
                body.status,
                meta.get("generation"),
                [Wanted(READY, "False", Reason.BACKEND_UNAVAILABLE, message)],
            )
            raise kopf.TemporaryError(message, delay=backoff(retry)) from exc
    if key is not None:
        reconciler.firestore.forget(key.document_id)
        await hand_over(reconciler, key.document_id, uid)
    metrics.forget_entry(uid)


def owned_something(status: Mapping[str, Any]) -> bool:
    """Did this entry write its projections (and not lose its identity since)?"""
    ready = previous(status, READY)
    return bool(status.get("firestore") or status.get("configMap")) and ready.get("reason") not in (
        Reason.CONFLICT,
        Reason.INVALID_CONFIG,
    )
