"""One reconciliation of a RoutingEntry, shared by the create/update/resume handlers and the
drift timer (so drift repair and first sync are the same code path).

Decision order: paused → invalid → conflict → write both projections → status. The ConfigMap
key of an entry is written only once its Firestore document is not someone else's, so an entry in
Conflict is written nowhere. Failures are
mapped deliberately: an invalid spec is permanent (status says why, nothing is written, no retry
until the spec changes); an unreachable Firestore or API server is temporary (status says
``BackendUnavailable``, the handler raises ``kopf.TemporaryError`` with a growing delay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import kopf
import urllib3

from engines.routing.collection import RoutingCollection
from engines.routing.contract import (
    ADOPT_ANNOTATION,
    ALLOW_DELETE_ANNOTATION,
    API_GROUP,
    API_VERSION,
    PAUSED_ANNOTATION,
    PLURAL,
)
from engines.routing.errors import BackendUnavailable, InvalidRouting, OwnershipConflict
from engines.routing.model import RoutingRecord, Source, parse_spec

from . import metrics
from .claims import Claims, Contender, identity_of, iter_entries
from .conditions import (
    CONFIGMAP_SYNCED,
    FIRESTORE_SYNCED,
    READY,
    Reason,
    Wanted,
    merge_conditions,
    now_rfc3339,
)
from .projections import ConfigMapProjection, Outcome
from .terminating import gone_with_namespace

__all__ = ["PAUSED_ANNOTATION", "REQUEUE_ANNOTATION", "Peering", "Reconciler"]

log = logging.getLogger(__name__)
REQUEUE_ANNOTATION = "routing.engines.io/requeue"
T = TypeVar("T")


def backoff(retry: int) -> float:
    return float(min(30, 2 ** min(retry, 5)))


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

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

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
                alive = await self._run(
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

    @staticmethod
    def _set_status(
        patch: kopf.Patch,
        status: Mapping[str, Any],
        generation: int | None,
        wanted: list[Wanted],
        **fields: Any,
    ) -> str:
        """Put into the patch only the status fields whose value changes. An entry resumed
        unchanged (every entry, when the operator restarts) then sends no PATCH at all: a no-op
        PATCH leaves the resourceVersion as it was, so no watch event answers it, and kopf would
        hold that entry's worker for its consistency timeout (5 s) waiting for one. Measured on
        a restart over 10,000 synced entries: 10 entries/s, all of them waiting."""
        wanted_status = {
            "conditions": merge_conditions(status.get("conditions"), wanted, generation),
            "observedGeneration": generation,
            **fields,
        }
        for k, v in wanted_status.items():
            if status.get(k) != v:
                patch.status[k] = v
        ready = next(w for w in wanted if w.type == READY)
        return ready.reason

    @staticmethod
    def _previous(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any]:
        for c in status.get("conditions") or []:
            if c.get("type") == ctype:
                return c  # type: ignore[no-any-return]
        return {}

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
        uid, ns, name = str(meta.uid), str(meta.namespace), str(meta.name)
        generation = meta.get("generation")
        self.losers.pop(uid, None)
        ready_before = self._previous(status, READY)

        if (meta.annotations or {}).get(PAUSED_ANNOTATION) == "true":
            message = (
                f'syncing paused by annotation {PAUSED_ANNOTATION}="true"; projections are '
                "left as they were until it is removed"
            )
            reason = self._set_status(
                patch,
                status,
                generation,
                [  # every condition says why; each keeps the status it had
                    Wanted(
                        ctype,
                        self._previous(status, ctype).get("status", "Unknown"),
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
            return self._set_status(patch, status, generation, wanted)

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
            return self._set_status(
                patch,
                status,
                generation,
                [
                    Wanted(t, "False", Reason.CONFLICT, message)
                    for t in (READY, FIRESTORE_SYNCED, CONFIGMAP_SYNCED)
                ],
            )

        record = RoutingRecord.from_spec(
            parsed, generation=int(generation or 0), source=self.source(ns, name, uid)
        )
        adopt = (meta.annotations or {}).get(ADOPT_ANNOTATION) == "true"
        was_synced = (
            status.get("revision") == record.revision
            and self._previous(status, FIRESTORE_SYNCED).get("status") == "True"
            and self._previous(status, CONFIGMAP_SYNCED).get("status") == "True"
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

        document = asyncio.ensure_future(self._run(write_document))
        (fs_cond, fs_out), (cm_cond, cm_out) = await asyncio.gather(
            self._sync(
                FIRESTORE_SYNCED,
                document,
                f"written to Firestore {self.collection}/{key.document_id}",
            ),
            self._sync(
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

        reason = self._set_status(patch, status, generation, [ready, fs_cond, cm_cond], **fields)
        metrics.record_condition(uid, ready.status, ready.reason)
        if ready.reason == Reason.BACKEND_UNAVAILABLE:
            raise kopf.TemporaryError(ready.message, delay=backoff(retry))
        return reason

    async def _sync(
        self,
        ctype: str,
        write: Awaitable[Outcome],
        ok_message: str,
    ) -> tuple[Wanted, Outcome | None]:
        from kubernetes.client.exceptions import ApiException

        try:
            outcome = await write
        except BackendUnavailable as exc:
            return Wanted(ctype, "False", Reason.BACKEND_UNAVAILABLE, f"{exc}; retrying"), None
        except OwnershipConflict as exc:
            return Wanted(ctype, "False", Reason.CONFLICT, str(exc)), None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            return Wanted(
                ctype,
                "False",
                Reason.BACKEND_UNAVAILABLE,
                f"Kubernetes API unreachable ({exc.__class__.__name__}: {exc}); retrying",
            ), None
        except ApiException as exc:
            return Wanted(
                ctype,
                "False",
                Reason.BACKEND_UNAVAILABLE,
                f"Kubernetes API error {exc.status} {exc.reason}; retrying",
            ), None
        return Wanted(ctype, "True", Reason.SYNCED, ok_message), outcome

    # -- deletion ----------------------------------------------------------------------------

    async def delete(self, *, body: kopf.Body, patch: kopf.Patch, retry: int) -> None:
        meta = body.meta
        uid, ns = str(meta.uid), str(meta.namespace)
        key = identity_of(body.spec)
        self.losers.pop(uid, None)
        allowed = (meta.annotations or {}).get(ALLOW_DELETE_ANNOTATION) == "true"
        if key is not None and key.env != "test" and not allowed:
            # Whatever removed it (a namespace or the CRD deleted, a plain delete where the
            # admission policy is not installed), what it serves stays served.
            if self._owned_something(body.status):
                metrics.PROJECTIONS_KEPT.inc()
                kopf.event(
                    body,
                    type="Warning",
                    reason="ProjectionsKept",
                    message=f'deleted without {ALLOW_DELETE_ANNOTATION}="true": its Firestore '
                    f"document {self.collection}/{key.document_id} and ConfigMap "
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
                await self._run(self.firestore.remove, key, uid)
                try:
                    await self._run(self.configmaps.remove, ns, key, uid)
                except ApiException as exc:
                    # A namespace being deleted takes the ConfigMap (and our Role) with it.
                    what = f"ConfigMap {ns}/{key.configmap_name} key {key.configmap_key}"
                    api = self.configmaps.api
                    if not await self._run(gone_with_namespace, api, ns, exc, what):
                        raise
            except BackendUnavailable as exc:
                message = f"deleting: projections not removed yet ({exc}); retrying"
                kopf.event(body, type="Warning", reason=Reason.BACKEND_UNAVAILABLE, message=message)
                self._set_status(
                    patch,
                    body.status,
                    meta.get("generation"),
                    [Wanted(READY, "False", Reason.BACKEND_UNAVAILABLE, message)],
                )
                raise kopf.TemporaryError(message, delay=backoff(retry)) from exc
        if key is not None:
            self.firestore.forget(key.document_id)
            # Hand the identity over: wake every other claimant so the next oldest takes it
            # (a kept projection included: it is an orphan now, and the same identity's).
            self.claims.forget(uid)
            for other in self.claims.of(key.document_id):
                if other.uid != uid and not other.deleting:
                    await self._run(self._requeue, other)
        metrics.forget_entry(uid)

    def _owned_something(self, status: Mapping[str, Any]) -> bool:
        """Did this entry write its projections (and not lose its identity since)?"""
        ready = self._previous(status, READY)
        return bool(status.get("firestore") or status.get("configMap")) and ready.get(
            "reason"
        ) not in (Reason.CONFLICT, Reason.INVALID_CONFIG)

    async def watch_takeovers(self, period: float) -> None:
        """Requeue a Conflict loser as soon as the claims say its winner is gone. The winner's
        delete handler requeues its losers at once; this covers what that cannot see (a loser
        whose reconcile read the claims just before the winner's deletion reached them, a
        requeue that failed)."""
        while True:
            await asyncio.sleep(period)
            for uid, (me, document_id) in list(self.losers.items()):
                winner = self.claims.winner(document_id)
                if winner is None or winner.uid != uid:
                    continue
                log.info("%s/%s: its identity's winner is gone; requeueing", me.namespace, me.name)
                self.losers.pop(uid, None)
                try:
                    await self._run(self._requeue, me)
                except Exception as exc:  # keep watching; the drift sweep is the last resort
                    log.warning("requeue of %s/%s failed: %s", me.namespace, me.name, exc)

    def _requeue(self, other: Contender) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom_api.patch_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                other.namespace,
                PLURAL,
                other.name,
                {
                    "metadata": {
                        "annotations": {
                            REQUEUE_ANNOTATION: now_rfc3339() + f"/{time.monotonic_ns()}"
                        }
                    }
                },
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- for the drift repair (drift.py) -----------------------------------------------------

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking client code on the reconciler's pool."""
        return await self._run(fn, *args)

    def requeue(self, entry: Contender) -> None:
        """Have kopf reconcile ``entry`` again (through the requeue annotation)."""
        self._requeue(entry)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A ConfigMap key waiting for its batch."""

    record: RoutingRecord
    future: asyncio.Future[Outcome]
    after: asyncio.Future[Any] | None


@dataclass(frozen=True, slots=True)
class Peering:
    """This replica in kopf's peering: the object's name, its identity and priority."""

    name: str
    identity: str
    priority: int

    def yields_to(self, status: Mapping[str, Any]) -> str | None:
        """The live peer (in a peering object's status) kopf pauses this replica for: one of
        higher priority, or of the same (kopf then pauses both). Read with kopf's own ``Peer``,
        so liveness is judged as kopf judges it."""
        from kopf._core.engines.peering import Identity, Peer

        for identity, info in status.items():
            if identity == self.identity:
                continue
            try:
                peer = Peer(identity=Identity(identity), **info)
                works = not peer.is_dead and int(peer.priority) >= self.priority
            except (TypeError, ValueError):  # not a peer record kopf could read either
                continue
            if works:
                return str(identity)
        return None


class ConfigMapBatcher:
    """Coalesces ConfigMap writes: entries of one ConfigMap reconciled within ``window`` seconds
    share one read and one write (a tenant's entries are usually applied together).

    A record may wait on another write (``after``: its Firestore document, written meanwhile):
    the batch is flushed once those are done, and a record whose document turned out to be
    someone else's (``OwnershipConflict``) is not written, so an entry in Conflict is written
    nowhere. The document's write normally ends within the batching window."""

    def __init__(self, reconciler: Reconciler, window: float = 0.05) -> None:
        self.reconciler = reconciler
        self.window = window
        self._pending: dict[tuple[str, str], list[_Pending]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _schedule(self, loop: asyncio.AbstractEventLoop, slot: tuple[str, str]) -> None:
        def start() -> None:
            task = loop.create_task(self._flush(slot))
            self._tasks.add(task)  # asyncio keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

        loop.call_later(self.window, start)

    async def ensure(
        self, namespace: str, record: RoutingRecord, after: asyncio.Future[Any] | None = None
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        slot = (namespace, record.key.configmap_name)
        batch = self._pending.setdefault(slot, [])
        batch.append(_Pending(record, future, after))
        if len(batch) == 1:
            self._schedule(loop, slot)
        return await future

    async def _flush(self, slot: tuple[str, str]) -> None:
        batch = self._pending.pop(slot, [])
        gates = [p.after for p in batch if p.after is not None and not p.after.done()]
        if gates:
            await asyncio.wait(gates)
        # One record per key per write; a second claim of the same key waits for the next batch
        # and then meets the first one's ownership.
        first: dict[str, tuple[RoutingRecord, asyncio.Future[Outcome]]] = {}
        later: list[_Pending] = []
        for pending in batch:
            record, future, after = pending.record, pending.future, pending.after
            if after is not None and not after.cancelled():
                refused = after.exception()
                if isinstance(refused, OwnershipConflict):
                    if not future.done():
                        future.set_exception(OwnershipConflict(str(refused)))
                    continue
            if record.key.configmap_key in first:
                later.append(pending)
            else:
                first[record.key.configmap_key] = (record, future)
        if later:
            # Records that arrived while the gates were awaited started a batch of their own.
            waiting = self._pending.setdefault(slot, [])
            if not waiting:
                self._schedule(asyncio.get_running_loop(), slot)
            waiting.extend(later)
        if not first:
            return
        records = [r for r, _ in first.values()]
        try:
            results = await self.reconciler._run(
                self.reconciler.configmaps.ensure_many,
                slot[0],
                slot[1],
                records,
                self.reconciler.owner_alive,
            )
        except Exception as exc:
            for _, future in first.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for key, (_, future) in first.items():
            if future.done():
                continue
            outcome = results[key]
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
