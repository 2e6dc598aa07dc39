"""What the drift listeners saw, and the judgement of it: the one place that decides whether a
projection drifted and requeues its entry.

The listeners (``drift_firestore``: this cluster's Firestore documents; ``drift_configmaps``: the
managed ConfigMaps) only deliver what they see, as 16-byte digests, onto the event loop; this
module keeps the digests of both projections, compares a listener's first full view after a
failure with what it had, and judges a changed identity against its entry's spec.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from engines.routing.contract import (
    API_GROUP,
    API_VERSION,
    PAUSED_ANNOTATION,
    PLURAL,
    RoutingKey,
    annotated,
    configmap_value,
    digest,
    expected_record,
)
from engines.routing.errors import InvalidRouting
from engines.routing.model import parse_spec

from . import metrics
from .claims import Contender
from .conditions import READY
from .drift_sweep import DriftSweeper
from .reconciler import Reconciler
from .status import previous

__all__ = ["CONFIGMAP", "FIRESTORE", "LISTENERS", "DocumentDigests", "DriftJudge", "KeyDigests"]

log = logging.getLogger(__name__)

FIRESTORE, CONFIGMAP = "firestore", "configmap"
LISTENERS = (FIRESTORE, CONFIGMAP)
"""The ``listener`` label of the listener metrics."""
DocumentDigests = tuple[bytes, bytes]
"""(digest of a document, digest of what made it: its source, revision, generation)."""
KeyDigests = dict[str, tuple[bytes, str]]
"""A managed ConfigMap's keys → (digest of the value, the identity the key is for)."""
_UNKNOWN = b"?"
"""Stands for a projection whose listener has not seen everything yet: never judged."""


class DriftJudge:
    """The digests both listeners last saw, the checks they schedule, and their health.

    An identity whose projection changed is checked after ``settle`` seconds, which the
    operator's own writes need to land in both places: when its Firestore document and its
    ConfigMap key then hold the same value, nothing more is done (the operator's own writes cost
    no API call). Otherwise the entry that claims the identity is read, and requeued when it
    reports Ready for its current spec while a projection differs from what that spec gives (a
    projection that looks wrong is read once more from its store first: a listener catching up
    with a burst lags behind); the reconcile repairs, counts and reports as it does for the
    sweep. The maps are touched on the event loop only: the listeners' threads :meth:`post`.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        sweeper: DriftSweeper,
        *,
        settle: float = 0.2,
        retry: float = 1.0,
    ) -> None:
        self.reconciler = reconciler
        self.sweeper = sweeper
        self.settle = settle
        self.retry = retry
        """Seconds between two attempts to establish a failed listener (and between checks)."""
        self._docs: dict[str, bytes] = {}
        """document id → digest of this cluster's document, as the listener last saw it."""
        self._made: dict[str, bytes] = {}
        """document id → digest of what made that document (its source, revision, generation)."""
        self._cms: dict[tuple[str, str], KeyDigests] = {}
        """(namespace, ConfigMap) → key → (digest of the value, the identity it is for)."""
        self._primed = {name: False for name in LISTENERS}
        """Whether each listener's first full view has arrived (until then it judges nothing)."""
        self._pending: dict[str, float] = {}
        """identity → when its projection was first seen changed (monotonic), until checked."""
        self._checks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health = threading.Lock()
        self._down_since: dict[str, float] = {}
        """listener → when it went down (monotonic), while it is down."""
        for name in LISTENERS:
            metrics.DRIFT_LISTENER_UP.labels(name).set(0)

    def start(self) -> None:
        """Bind to the running event loop (before any listener posts)."""
        self._loop = asyncio.get_running_loop()

    def stop(self) -> None:
        for task in self._checks:
            task.cancel()

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the event loop (the listeners' threads never touch the maps)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    # -- health --------------------------------------------------------------------------------

    def down(self, listener: str, problem: str) -> None:
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

    def up(self, listener: str) -> None:
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

    # -- what the Firestore listener saw ----------------------------------------------------

    def firestore_reset(self, full: dict[str, DocumentDigests]) -> None:
        """A listener's first full view: the differences from the last one are what it missed."""
        docs = {doc_id: value for doc_id, (value, _) in full.items()}
        if self._primed[FIRESTORE]:
            for doc_id in self._docs.keys() | docs.keys():
                if self._docs.get(doc_id) != docs.get(doc_id):
                    self._schedule(doc_id)
        self._docs = docs
        self._made = {doc_id: made for doc_id, (_, made) in full.items()}
        self._primed[FIRESTORE] = True
        log.info("drift listener firestore: listening to %d documents of this cluster", len(docs))

    def firestore_changes(self, seen: list[tuple[str, DocumentDigests | None]]) -> None:
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

    # -- what the ConfigMap watch saw -------------------------------------------------------

    def configmaps_reset(
        self, namespace: str | None, full: dict[tuple[str, str], KeyDigests]
    ) -> None:
        """A watch's first full view of ``namespace`` (None: all): compared with the last."""
        mine = [where for where in self._cms if namespace is None or where[0] == namespace]
        old = {where: self._cms.pop(where) for where in mine}
        if self._primed[CONFIGMAP]:
            for where in old.keys() | full.keys():
                self._compare(old.get(where, {}), full.get(where, {}))
        self._cms.update(full)
        self._primed[CONFIGMAP] = True

    def configmap_changed(self, where: tuple[str, str], values: KeyDigests | None) -> None:
        old = self._cms.pop(where, {})
        if values is not None:
            self._cms[where] = values
        self._compare(old, values or {})

    def _compare(self, old: KeyDigests, new: KeyDigests) -> None:
        for key in old.keys() | new.keys():
            before, after = old.get(key), new.get(key)
            if before != after:
                for value in (before, after):
                    if value is not None:
                        self._schedule(value[1])

    # -- checking ----------------------------------------------------------------------------

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
        if winner is None:
            return  # no entry of this cluster claims it: an orphan, for the sweep
        try:
            key = RoutingKey.from_document_id(doc_id)
        except InvalidRouting:
            return  # not a routing document: nothing of ours
        document = self._docs.get(doc_id)
        value = self._cms.get((winner.namespace, key.configmap_name), {}).get(key.configmap_key)
        if document is not None and value is not None and document == value[0]:
            return  # both projections agree: the operator's own write
        seen = (
            document if self._primed[FIRESTORE] else _UNKNOWN,
            (value[0] if value is not None else None) if self._primed[CONFIGMAP] else _UNKNOWN,
        )
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
                API_GROUP, API_VERSION, winner.namespace, PLURAL, winner.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None, 0.0
            raise
        meta, status = obj["metadata"], obj.get("status") or {}
        if (
            meta.get("uid") != winner.uid
            or meta.get("deletionTimestamp")
            or annotated(meta, PAUSED_ANNOTATION)
        ):
            return None, 0.0
        try:
            spec = parse_spec(obj.get("spec") or {})
        except InvalidRouting:
            return None, 0.0
        generation = int(meta.get("generation") or 0)
        if (
            previous(status, READY).get("status") != "True"
            or status.get("revision") != spec.revision()
            or status.get("observedGeneration") != generation
        ):
            return None, 0.0
        record = expected_record(spec, meta, rec.cluster)
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
            cm = rec.configmaps.get(winner.namespace, key.configmap_name)
            current_value = ((cm.data or {}) if cm is not None else {}).get(key.configmap_key)
            if current_value is None or digest(current_value) != wanted:
                return "configmap", time.monotonic() - started
        return None, time.monotonic() - started
