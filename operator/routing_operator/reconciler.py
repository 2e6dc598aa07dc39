"""One reconciliation of a RoutingEntry, shared by the create/update/resume handlers and the
drift repair (so drift repair and first sync are the same code path).

Decision order: paused → invalid → conflict → write both projections → status. The ConfigMap
key of an entry is written only once its Firestore document is not someone else's, so an entry in
Conflict is written nowhere (batcher.py). Failures are mapped deliberately (status.py): an invalid
spec is permanent (status says why, nothing is written, no retry until the spec changes); an
unreachable Firestore or API server is temporary (status says ``BackendUnavailable``, the handler
raises ``kopf.TemporaryError`` with a growing delay). The deletion path is deletion.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kopf

from engines.routing.collection import RoutingCollection
from engines.routing.contract import (
    ADOPT_ANNOTATION,
    API_GROUP,
    API_VERSION,
    PAUSED_ANNOTATION,
    PLURAL,
    annotated,
    expected_record,
)
from engines.routing.errors import InvalidRouting
from engines.routing.model import Source, parse_spec

from . import metrics
from .batcher import ConfigMapBatcher
from .claims import Claims, Contender, iter_entries
from .conditions import (
    CONFIGMAP_SYNCED,
    FIRESTORE_SYNCED,
    READY,
    Reason,
    Wanted,
    now_rfc3339,
)
from .handover import requeue
from .projections import ConfigMapProjection, Outcome
from .status import backoff, previous, set_status, sync

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Reconciler:
    """Holds the clients and does the work; kopf handlers are thin wrappers around it."""

    def __init__(
        self,
        *,
        firestore: RoutingCollection,
        configmaps: ConfigMapProjection,
        custom_api: Any,
        collection: str,
        workers: int = 32,
    ) -> None:
        self.firestore = firestore
        self.configmaps = configmaps
        self.custom_api = custom_api
        self.collection = collection
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self.claims = Claims()
        """Who claims which identity (filled before kopf starts, kept current by its events)."""
        self.losers: dict[str, tuple[Contender, str]] = {}
        """Entries this process last reported as Conflict: uid → (entry, document id)."""
        self.cm_batcher = ConfigMapBatcher(self)

    # -- helpers -----------------------------------------------------------------------------

    @property
    def cluster(self) -> str:
        """This operator's cluster identity (``source.cluster`` of what it writes); empty until
        it is known (nothing is written before: see identity.py)."""
        return self.firestore.cluster

    def source(self, namespace: str, name: str, uid: str) -> Source:
        """The ``source`` of a projection this operator writes for an entry."""
        return Source(cluster=self.cluster, namespace=namespace, name=name, uid=uid)

    def owner_alive(self, source: Source) -> bool:
        """Does the RoutingEntry named by a projection's ``source`` still exist (same uid) in
        this cluster?"""
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self.custom_api.get_namespaced_custom_object(
                API_GROUP, API_VERSION, source.namespace, PLURAL, source.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 403:
                # An owner in a namespace this operator may not read: assume it is alive, so a
                # projection another operator manages is never taken over (reported as Conflict).
                return True
            raise
        meta = obj.get("metadata", {})
        return bool(meta.get("uid") == source.uid and not meta.get("deletionTimestamp"))

    def load_claims(self, namespaces: list[str] | None) -> int:
        """Observe every RoutingEntry once (before kopf watches: a first decision must already
        see every older claimant). Returns how many entries were listed."""
        return self.claims.load(iter_entries(self.custom_api, namespaces))

    async def _verified_winner(self, document_id: str, me: str) -> Contender | None:
        """The identity's winner, confirmed with the API server when it is another entry: the
        map can still hold an entry deleted while this replica was not watching. A winner that
        cannot be checked (API unreachable) counts as alive: nothing is written on a guess."""
        while True:
            best = self.claims.winner(document_id)
            if best is None or best.uid == me:
                return best
            try:
                alive = await self.run_blocking(
                    self.owner_alive,
                    Source(namespace=best.namespace, name=best.name, uid=best.uid),
                )
            except Exception as exc:
                log.warning("could not check claimant %s/%s: %s", best.namespace, best.name, exc)
                return best
            if alive:
                return best
            log.info("claimant %s/%s is gone; forgetting it", best.namespace, best.name)
            self.claims.forget(best.uid)

    # -- the reconciliation ------------------------------------------------------------------

    async def reconcile(self, *, body: kopf.Body, patch: kopf.Patch, retry: int) -> None:
        started = time.monotonic()
        result = "Error"
        try:
            result = await self._reconcile(body, patch, retry)
        except kopf.TemporaryError:
            result = Reason.BACKEND_UNAVAILABLE
            raise
        finally:
            metrics.RECONCILES.labels(result).inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    async def _reconcile(self, body: kopf.Body, patch: kopf.Patch, retry: int) -> str:
        meta, spec, status = body.meta, body.spec, body.status
        uid, ns = str(meta.uid), str(meta.namespace)
        generation = meta.get("generation")
        self.losers.pop(uid, None)
        ready_before = previous(status, READY)

        if annotated(meta, PAUSED_ANNOTATION):
            message = (
                f'syncing paused by annotation {PAUSED_ANNOTATION}="true"; projections are '
                "left as they were until it is removed"
            )
            reason = set_status(
                patch,
                status,
                generation,
                [  # every condition says why; each keeps the status it had
                    Wanted(
                        ctype,
                        previous(status, ctype).get("status", "Unknown"),
                        Reason.RECONCILE_PAUSED,
                        message,
                    )
                    for ctype in (READY, FIRESTORE_SYNCED, CONFIGMAP_SYNCED)
                ],
            )
            metrics.record_condition(uid, ready_before.get("status", "Unknown"), reason)
            return reason

        try:
            parsed = parse_spec(dict(spec))
        except InvalidRouting as exc:
            message = f"invalid spec, nothing written: {exc}"
            wanted = [
                Wanted(t, "False", Reason.INVALID_CONFIG, message)
                for t in (READY, FIRESTORE_SYNCED, CONFIGMAP_SYNCED)
            ]
            if (
                ready_before.get("reason") != Reason.INVALID_CONFIG
                or ready_before.get("message") != message
            ):
                kopf.event(body, type="Warning", reason=Reason.INVALID_CONFIG, message=message)
            metrics.record_condition(uid, "False", Reason.INVALID_CONFIG)
            return set_status(patch, status, generation, wanted)

        key = parsed.key
        winner = await self._verified_winner(key.document_id, uid)
        if winner is not None and winner.uid != uid:
            message = (
                f"identity {key.document_id} is already claimed by the older RoutingEntry "
                f"{winner.namespace}/{winner.name}; this entry is written nowhere until that "
                "one is deleted"
            )
            if ready_before.get("reason") != Reason.CONFLICT:
                kopf.event(body, type="Warning", reason=Reason.CONFLICT, message=message)
            self.losers[uid] = (Contender.of(meta), key.document_id)
            metrics.record_condition(uid, "False", Reason.CONFLICT)
            return set_status(
                patch,
                status,
                generation,
                [
                    Wanted(t, "False", Reason.CONFLICT, message)
                    for t in (READY, FIRESTORE_SYNCED, CONFIGMAP_SYNCED)
                ],
            )

        record = expected_record(parsed, meta, self.cluster)
        adopt = annotated(meta, ADOPT_ANNOTATION)
        was_synced = (
            status.get("revision") == record.revision
            and previous(status, FIRESTORE_SYNCED).get("status") == "True"
            and previous(status, CONFIGMAP_SYNCED).get("status") == "True"
            and status.get("observedGeneration") == generation
        )
        replaced: list[Source] = []

        def write_document() -> Outcome:
            outcome, previous = self.firestore.write(
                record, self.owner_alive, fresh=not status.get("revision"), adopt=adopt
            )
            if previous is not None:
                replaced.append(previous)
            return outcome

        document = asyncio.ensure_future(self.run_blocking(write_document))
        (fs_cond, fs_out), (cm_cond, cm_out) = await asyncio.gather(
            sync(
                FIRESTORE_SYNCED,
                document,
                f"written to Firestore {self.collection}/{key.document_id}",
            ),
            sync(
                CONFIGMAP_SYNCED,
                self.cm_batcher.ensure(ns, record, after=document),
                f"written to ConfigMap {ns}/{key.configmap_name} key {key.configmap_key}",
            ),
        )
        if fs_out in (Outcome.ADOPTED, Outcome.RECLAIMED) and replaced:
            before = replaced[0]
            if fs_out is Outcome.ADOPTED:
                kopf.event(
                    body,
                    type="Normal",
                    reason="Adopted",
                    message=f"took over Firestore document {self.collection}/{key.document_id} "
                    f"from cluster {before.cluster or '(not recorded)'} (RoutingEntry "
                    f"{before.namespace}/{before.name} there) on purpose ({ADOPT_ANNOTATION}); "
                    "that entry now reports Conflict",
                )
            else:
                kopf.event(
                    body,
                    type="Normal",
                    reason="Reclaimed",
                    message=f"took back Firestore document {self.collection}/{key.document_id}, "
                    f"kept after RoutingEntry {before.namespace}/{before.name} (same identity) "
                    "was deleted",
                )
        if adopt and fs_cond.status == "True":
            # One-shot: the document is this entry's now. Kept, the annotation would take it
            # back whenever someone else adopted it, and two such entries would fight forever.
            patch.metadata.annotations[ADOPT_ANNOTATION] = None
        failed = [c for c in (fs_cond, cm_cond) if c.status != "True"]
        if failed:
            ready = Wanted(READY, "False", failed[0].reason, failed[0].message)
        else:
            ready = Wanted(
                READY,
                "True",
                Reason.SYNCED,
                f"backend {record.backend.value} (revision {record.revision[:12]}) "
                "is in Firestore and the ConfigMap",
            )
        fields: dict[str, Any] = {"revision": record.revision}
        if fs_cond.status == "True":
            synced_at = (status.get("firestore") or {}).get("syncedAt")
            if fs_out is Outcome.WRITTEN or not synced_at:
                synced_at = now_rfc3339()
            fields["firestore"] = {
                "document": f"{self.collection}/{key.document_id}",
                "syncedAt": synced_at,
            }
        if cm_cond.status == "True":
            fields["configMap"] = {"name": key.configmap_name, "key": key.configmap_key}

        for projection, outcome in (("firestore", fs_out), ("configmap", cm_out)):
            if was_synced and outcome is Outcome.WRITTEN:  # not a takeover: a repair
                metrics.DRIFT_REPAIRS.labels(projection).inc()
                kopf.event(
                    body,
                    type="Normal",
                    reason="DriftRepaired",
                    message=f"the {projection} projection was changed or removed out of "
                    "band; restored from the RoutingEntry",
                )
        if ready.status == "True" and (
            ready_before.get("status") != "True" or status.get("revision") != record.revision
        ):
            kopf.event(
                body,
                type="Normal",
                reason=Reason.SYNCED,
                message=f"{fs_cond.message}; {cm_cond.message}",
            )
        elif ready.status != "True" and ready_before.get("message") != ready.message:
            kopf.event(body, type="Warning", reason=ready.reason, message=ready.message)

        reason = set_status(patch, status, generation, [ready, fs_cond, cm_cond], **fields)
        metrics.record_condition(uid, ready.status, ready.reason)
        if ready.reason == Reason.BACKEND_UNAVAILABLE:
            raise kopf.TemporaryError(ready.message, delay=backoff(retry))
        return reason

    # -- for the batcher, the deletion path and the drift repair -----------------------------

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking client code on the reconciler's pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def requeue(self, entry: Contender) -> None:
        """Have kopf reconcile ``entry`` again (through the requeue annotation)."""
        requeue(self.custom_api, entry)
