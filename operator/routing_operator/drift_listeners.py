"""Drift: the projections an operator wrote are changed or removed out of band, and the
RoutingEntry (the source of truth) puts them back.

A drifted entry is requeued through the ``routing.engines.io/requeue`` annotation, so every repair
runs through the normal reconcile path, which counts it and posts the ``DriftRepaired`` Event.

This module is the fast path: listeners on the Firestore collection and on the managed
ConfigMaps judge each change as it arrives; the periodic sweep (drift_sweep.py) stays the safety
net for whatever a listener missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from engines.routing.contract import MANAGED_BY_SELECTOR, PAUSED_ANNOTATION, RoutingKey
from engines.routing.errors import InvalidRouting
from engines.routing.model import RoutingRecord, parse_spec

from . import metrics
from .claims import Contender
from .conditions import READY
from .drift_sweep import DriftSweeper
from .projections import canonical_json, configmap_value, digest, strip_server_fields
from .reconciler import Reconciler

__all__ = ["DriftListeners"]

log = logging.getLogger(__name__)


LISTENERS = ("firestore", "configmap")
"""The ``listener`` label of the listener metrics."""


class DriftListeners:
    """Repairs drift as it happens: a Firestore listener on this cluster's documents and a
    label-selected watch on the managed ConfigMaps, so an out-of-band edit or deletion is
    requeued within a fraction of a second instead of at the next sweep.

    Both keep a 16-byte digest per projection (what was last seen of it). An identity whose
    projection changed is checked after ``settle`` seconds, which the operator's own writes
    need to land in both places: when its Firestore document and its ConfigMap key then hold the
    same value, nothing more is done (the operator's own writes cost no API call). Otherwise the
    entry that claims the identity is read, and requeued when it reports Ready for its current
    spec while a projection differs from what that spec gives (a projection that looks wrong is
    read once more from its store first: a listener catching up with a burst lags behind); the
    reconcile repairs, counts and reports as it does for the sweep.

    Only this cluster's documents are listened to (``source.cluster``); another cluster's are
    never read, judged or touched. A listener that fails is reported (log, metrics) and
    established again; what it missed meanwhile is found by comparing what it sees again with
    what it had, and the sweep stays the last resort.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        namespaces: list[str] | None,
        sweeper: DriftSweeper,
        *,
        settle: float = 0.2,
        retry: float = 1.0,
    ) -> None:
        self.reconciler = reconciler
        self.namespaces = namespaces
        self.sweeper = sweeper
        self.settle = settle
        self.retry = retry
        self._docs: dict[str, bytes] = {}
        """document id → digest of this cluster's document, as the listener last saw it."""
        self._made: dict[str, bytes] = {}
        """document id → digest of what made that document (its source, revision, generation)."""
        self._cms: dict[tuple[str, str], dict[str, tuple[bytes, str]]] = {}
        """(namespace, ConfigMap) → key → (digest of the value, the identity it is for)."""
        self._primed = {name: False for name in LISTENERS}
        """Whether each listener's first full view has arrived (until then it judges nothing)."""
        self._pending: dict[str, float] = {}
        """identity → when its projection was first seen changed (monotonic), until checked."""
        self._checks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._watches: list[Any] = []
        self._health = threading.Lock()
        self._down_since: dict[str, float] = {}
        """listener → when it went down (monotonic), while it is down."""
        for name in LISTENERS:
            metrics.DRIFT_LISTENER_UP.labels(name).set(0)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen until cancelled (both listeners, each established again when it fails)."""
        self._loop = asyncio.get_running_loop()
        scopes: list[str | None] = list(self.namespaces) if self.namespaces is not None else [None]
        threads = [
            threading.Thread(
                target=self._watch_configmaps, args=(ns,), name=f"drift-cm-{ns or '*'}", daemon=True
            )
            for ns in scopes
        ]
        for thread in threads:
            thread.start()
        try:
            await self._listen_firestore()
        finally:
            self._stopping.set()
            for watch in self._watches:
                watch.stop()
            for task in self._checks:
                task.cancel()

    def _down(self, listener: str, problem: str) -> None:
        """Report a listener down: logged and counted once per outage, the gauge at 0."""
        metrics.DRIFT_LISTENER_UP.labels(listener).set(0)
        with self._health:
            if listener in self._down_since:
                return
            self._down_since[listener] = time.monotonic()
        metrics.DRIFT_LISTENER_FAILURES.labels(listener).inc()
        log.warning(
            "drift listener %s is down (%s); establishing it again every %ss, the drift sweep "
            "covers the gap",
            listener,
            problem,
            self.retry,
        )

    def _up(self, listener: str) -> None:
        metrics.DRIFT_LISTENER_UP.labels(listener).set(1)
        with self._health:
            since = self._down_since.pop(listener, None)
        if since is not None:
            log.info(
                "drift listener %s established again after %.0fs (what it missed is found by "
                "comparing)",
                listener,
                time.monotonic() - since,
            )

    # -- Firestore ---------------------------------------------------------------------------

    async def _listen_firestore(self) -> None:
        from google.cloud.firestore_v1.base_query import FieldFilter

        while not self.reconciler.cluster:  # nothing of ours to listen to before it is known
            await asyncio.sleep(self.retry)
        cluster = self.reconciler.cluster
        query = self.reconciler.firestore.client.collection(self.reconciler.collection).where(
            filter=FieldFilter("source.cluster", "==", cluster)
        )
        while True:
            first = threading.Event()

            def on_snapshot(
                docs: list[Any], changes: list[Any], _: Any, first: Any = first
            ) -> None:
                try:
                    if not first.is_set():
                        first.set()
                        full = {d.id: self._doc_digests(d) for d in docs}
                        metrics.DRIFT_LISTENER_DOCUMENTS.inc(len(full))
                        self._post(self._firestore_reset, full)
                        return
                    seen = [
                        (
                            c.document.id,
                            None if c.type.name == "REMOVED" else self._doc_digests(c.document),
                        )
                        for c in changes
                    ]
                    metrics.DRIFT_LISTENER_DOCUMENTS.inc(sum(1 for _, d in seen if d is not None))
                    self._post(self._firestore_changes, seen)
                except Exception:  # never let the client's thread die on our account
                    log.exception("drift listener firestore: a snapshot could not be handled")

            try:
                watch = await asyncio.to_thread(query.on_snapshot, on_snapshot)
            except Exception as exc:
                self._down("firestore", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.retry)
                continue
            try:
                problem = await self._supervise(watch, first)
            finally:
                await asyncio.to_thread(watch.unsubscribe)
            self._down("firestore", problem)
            await asyncio.sleep(self.retry)

    async def _supervise(self, watch: Any, first: threading.Event) -> str:
        """Until the listener fails; returns why. The client reconnects a broken stream by
        itself, silently and for as long as it takes: a stream found disconnected at
        ``GRACE`` checks in a row is a failure here (then the listener is replaced, and its
        first snapshot compared with what the last one had seen)."""
        disconnected = 0
        while True:
            await asyncio.sleep(self.retry)
            if not watch.is_active:
                return "its stream ended"
            if _stream_open(watch):
                disconnected = 0
                if first.is_set():
                    self._up("firestore")
                continue
            disconnected += 1
            if disconnected >= GRACE:
                return f"its stream has been disconnected for {disconnected} checks"

    @staticmethod
    def _doc_digests(snap: Any) -> tuple[bytes, bytes]:
        """(digest of the document, digest of what made it: its source, revision, generation)."""
        data = strip_server_fields(snap.to_dict() or {})
        made = {name: data.get(name) for name in ("source", "revision", "generation")}
        return digest(canonical_json(data)), digest(canonical_json(made))

    def _firestore_reset(self, full: dict[str, tuple[bytes, bytes]]) -> None:
        """A listener's first full view: the differences from the last one are what it missed."""
        docs = {doc_id: value for doc_id, (value, _) in full.items()}
        if self._primed["firestore"]:
            for doc_id in self._docs.keys() | docs.keys():
                if self._docs.get(doc_id) != docs.get(doc_id):
                    self._schedule(doc_id)
        self._docs = docs
        self._made = {doc_id: made for doc_id, (_, made) in full.items()}
        self._primed["firestore"] = True
        log.info("drift listener firestore: listening to %d documents of this cluster", len(docs))

    def _firestore_changes(self, seen: list[tuple[str, tuple[bytes, bytes] | None]]) -> None:
        for doc_id, digests in seen:
            before = self._docs.get(doc_id)
            if before == (digests[0] if digests is not None else None):
                continue
            # This operator writes the same document for the same source, revision and
            # generation, and removes one only once its entry is gone or moved: a document whose
            # content changed under the same making, or that vanished, was edited out of band,
            # and is judged at once. Any other change may be this operator's own write, whose
            # ConfigMap half lands a moment later: judged after the settle delay.
            if digests is None:
                self._docs.pop(doc_id, None)
                self._made.pop(doc_id, None)
                foreign = before is not None
            else:
                foreign = before is not None and self._made.get(doc_id) == digests[1]
                self._docs[doc_id], self._made[doc_id] = digests
            self._schedule(doc_id, at_once=foreign)

    # -- ConfigMaps --------------------------------------------------------------------------

    def _watch_configmaps(self, namespace: str | None) -> None:
        """One watch thread per watched namespace (or one for all): list, then watch from the
        list's resourceVersion; listed again when the watch expires or fails."""
        from kubernetes import watch as kwatch
        from kubernetes.client.exceptions import ApiException

        core = self.reconciler.configmaps.api
        scope = {"label_selector": MANAGED_BY_SELECTOR}
        while not self._stopping.is_set():
            try:
                if namespace is None:
                    listed = core.list_config_map_for_all_namespaces(
                        **scope, _preload_content=False
                    )
                else:
                    listed = core.list_namespaced_config_map(
                        namespace, **scope, _preload_content=False
                    )
                body = json.loads(listed.data)
                full = {
                    (cm["metadata"]["namespace"], cm["metadata"]["name"]): _cm_values(cm)
                    for cm in body["items"]
                }
                self._post(self._configmaps_reset, namespace, full)
                version = body["metadata"]["resourceVersion"]
                # The first watch lasts a second: ended without an error, it proves the watch
                # is allowed and works, and only then is the listener reported up.
                seconds = 1
                while not self._stopping.is_set():
                    watch = kwatch.Watch()  # type: ignore[no-untyped-call]
                    self._watches.append(watch)
                    try:
                        args: list[Any] = [] if namespace is None else [namespace]
                        func = (
                            core.list_config_map_for_all_namespaces
                            if namespace is None
                            else core.list_namespaced_config_map
                        )
                        for event in watch.stream(  # type: ignore[no-untyped-call]
                            func, *args, **scope, resource_version=version,
                            timeout_seconds=seconds, deserialize=False,
                        ):  # fmt: skip
                            cm = event["object"]
                            meta = cm["metadata"]
                            version = meta.get("resourceVersion") or version
                            if event["type"] == "BOOKMARK":
                                continue
                            values = None if event["type"] == "DELETED" else _cm_values(cm)
                            self._post(
                                self._configmap_changed, (meta["namespace"], meta["name"]), values
                            )
                    finally:
                        self._watches.remove(watch)
                    self._up("configmap")
                    seconds = WATCH_SECONDS
            except ApiException as exc:
                if exc.status == 410:  # expired: list again, and compare
                    continue
                self._down("configmap", f"HTTP {exc.status} {exc.reason}")
            except Exception as exc:
                self._down("configmap", f"{type(exc).__name__}: {exc}")
            self._stopping.wait(self.retry)

    def _configmaps_reset(
        self, namespace: str | None, full: dict[tuple[str, str], dict[str, tuple[bytes, str]]]
    ) -> None:
        mine = [where for where in self._cms if namespace is None or where[0] == namespace]
        old = {where: self._cms.pop(where) for where in mine}
        if self._primed["configmap"]:
            for where in old.keys() | full.keys():
                self._compare(old.get(where, {}), full.get(where, {}))
        self._cms.update(full)
        self._primed["configmap"] = True

    def _configmap_changed(
        self, where: tuple[str, str], values: dict[str, tuple[bytes, str]] | None
    ) -> None:
        old = self._cms.pop(where, {})
        if values is not None:
            self._cms[where] = values
        self._compare(old, values or {})

    def _compare(
        self, old: dict[str, tuple[bytes, str]], new: dict[str, tuple[bytes, str]]
    ) -> None:
        for key in old.keys() | new.keys():
            before, after = old.get(key), new.get(key)
            if before != after:
                for value in (before, after):
                    if value is not None:
                        self._schedule(value[1])

    # -- checking ----------------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the event loop (the listeners' threads never touch the maps)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def _schedule(self, doc_id: str, at_once: bool = False) -> None:
        if doc_id in self._pending:
            return
        self._pending[doc_id] = time.monotonic()
        task = asyncio.get_running_loop().create_task(
            self._check(doc_id, 0.0 if at_once else self.settle)
        )
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check(self, doc_id: str, settle: float) -> None:
        await asyncio.sleep(settle)
        changed = self._pending.pop(doc_id, time.monotonic())
        rec = self.reconciler
        winner = rec.claims.winner(doc_id)
        parts = doc_id.split(":")
        if winner is None or len(parts) != 4:
            return  # no entry of this cluster claims it: an orphan, for the sweep
        key = RoutingKey(*parts)
        document = self._docs.get(doc_id)
        value = self._cms.get((winner.namespace, key.configmap_name), {}).get(key.configmap_key)
        if document is not None and value is not None and document == value[0]:
            return  # both projections agree: the operator's own write
        seen = (
            document if self._primed["firestore"] else _UNKNOWN,
            value[0] if value is not None else None,
        )
        if not self._primed["configmap"]:
            seen = (seen[0], _UNKNOWN)
        try:
            checked = time.monotonic()
            drifted, confirmed = await rec.run_blocking(self._drifted, winner, seen)
            if drifted is None:
                return
            if await rec.run_blocking(self.sweeper.standing_by) is not None:
                return  # a standby: the working replica repairs
            judged = time.monotonic()
            await rec.run_blocking(rec.requeue, winner)
            log.info(
                "drift: the %s projection of %s/%s changed out of band; requeued %.0f ms after "
                "the change reached the listener (settle %.0f ms, judging %.0f ms of which "
                "confirming read %.0f ms, requeue %.0f ms)",
                drifted,
                winner.namespace,
                winner.name,
                (time.monotonic() - changed) * 1000,
                (checked - changed) * 1000,
                (judged - checked) * 1000,
                confirmed * 1000,
                (time.monotonic() - judged) * 1000,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the sweep is the last resort
            log.warning("drift check of %s failed: %s", doc_id, exc)

    def _drifted(
        self, winner: Contender, seen: tuple[bytes | None, bytes | None]
    ) -> tuple[str | None, float]:
        """Which projection of ``winner`` differs from what its spec gives, if it reports Ready
        for that spec (an entry not synced yet is in its own retries' hands); and the seconds
        spent confirming it."""
        from kubernetes.client.exceptions import ApiException

        rec = self.reconciler
        try:
            obj = rec.custom_api.get_namespaced_custom_object(
                "routing.engines.io", "v1alpha1", winner.namespace, "routingentries", winner.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None, 0.0
            raise
        meta, status = obj["metadata"], obj.get("status") or {}
        if (
            meta.get("uid") != winner.uid
            or meta.get("deletionTimestamp")
            or (meta.get("annotations") or {}).get(PAUSED_ANNOTATION) == "true"
        ):
            return None, 0.0
        try:
            spec = parse_spec(obj.get("spec") or {})
        except InvalidRouting:
            return None, 0.0
        generation = int(meta.get("generation") or 0)
        conditions = status.get("conditions") or []
        ready: dict[str, Any] = next((c for c in conditions if c.get("type") == READY), {})
        if (
            ready.get("status") != "True"
            or status.get("revision") != spec.revision()
            or status.get("observedGeneration") != generation
        ):
            return None, 0.0
        record = RoutingRecord.from_spec(
            spec,
            generation=generation,
            source=rec.source(winner.namespace, winner.name, winner.uid),
        )
        wanted = digest(configmap_value(record))
        document, value = seen
        # What a listener saw may lag behind (a listener catching up with a burst of writes):
        # a projection that looks wrong is read once more, and only the store's word counts.
        key = record.key
        started = time.monotonic()
        if document is not _UNKNOWN and document != wanted:
            current = rec.firestore.get(key)
            if current is None or current.digest() != wanted:
                return "firestore", time.monotonic() - started
        if value is not _UNKNOWN and value != wanted:
            try:
                cm = rec.configmaps.api.read_namespaced_config_map(
                    key.configmap_name, winner.namespace
                )
                data = cm.data or {}
            except ApiException as exc:
                if exc.status != 404:
                    raise
                data = {}
            current_value = data.get(key.configmap_key)
            if current_value is None or digest(current_value) != wanted:
                return "configmap", time.monotonic() - started
        return None, time.monotonic() - started


GRACE = 3
"""Checks in a row a Firestore listener's stream may be found disconnected before it counts as
failed (the client reconnects after a server-side close within one)."""
WATCH_SECONDS = 300
"""Server-side timeout of one ConfigMap watch request (then it resumes where it was)."""
_UNKNOWN = b"?"
"""Stands for a projection whose listener has not seen everything yet: never judged."""


def _stream_open(watch: Any) -> bool:
    """Is a Firestore listener's stream connected right now? Read from the client's private
    ``_rpc`` (its resumable stream): the public ``is_active`` stays true while the client
    retries a stream that cannot connect, and that must be reported, not hidden."""
    call = getattr(getattr(watch, "_rpc", None), "call", None)
    return bool(call is not None and call.is_active())


def _cm_values(cm: dict[str, Any]) -> dict[str, tuple[bytes, str]]:
    """A managed ConfigMap's keys → (digest of the value, the identity the key is for). The
    identity comes from the ConfigMap's and the key's names alone, so a value edited out of
    shape is still compared with the right document, and no value is parsed."""
    name = cm["metadata"]["name"]
    found: dict[str, tuple[bytes, str]] = {}
    for key, value in (cm.get("data") or {}).items():
        try:
            doc_id = RoutingKey.from_configmap(name, key).document_id
        except InvalidRouting:
            continue  # not a routing key of this ConfigMap: nothing of ours to judge
        found[key] = (digest(value), doc_id)
    return found
