"""Routing registry backed by Firestore: the store the operator writes and engines pods read.

Layout (§5): collection ``routing_entries`` (configurable), document id
``{env}:{tenant}:{project}:{resource_kind}``. A snapshot listener keeps the in-process table in
step with the collection, so ``resolve`` never waits on the network and a change made anywhere
(the operator, another pod) reaches subscribers within one listener round-trip.

The listener is supervised. Google's ``Watch`` retries recoverable stream errors itself but closes
for good when the RPC ends otherwise (or its consumer thread dies); a small supervisor thread
notices such an unintended close and re-subscribes with exponential backoff. A new listener
replays the whole collection, so its first snapshot is applied as a full reload
(``replace_all``): an entry deleted while no listener was running disappears too. ``healthy`` is
False while the listener is dead, while its first snapshot after a restart is outstanding, and
while the gRPC channel is down (an outage the ``Watch`` is still retrying through), so readiness
can say the cache may be stale instead of serving a frozen table behind a green ``/readyz``.

Reads, writes and the listener itself go through the routing collection's gateway
(``engines.routing.collection``), which translates the Google client's errors and keeps a failing
stream from reopening in a tight loop; this module keeps the table and the supervision.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from ..collection import Listener, RoutingCollection
from ..contract import DEFAULT_COLLECTION, RoutingKey, record_from_document
from ..errors import InvalidRouting
from ..model import RoutingRecord
from .base import RoutingRegistry

__all__ = ["FirestoreRoutingRegistry"]

log = logging.getLogger(__name__)


class FirestoreRoutingRegistry(RoutingRegistry):
    """Reads and writes ``routing_entries``; ``env`` limits the listener to one environment."""

    def __init__(
        self,
        client: Any | None = None,
        *,
        collection: str = DEFAULT_COLLECTION,
        env: str | None = None,
        project: str | None = None,
        database: str | None = None,
        supervise_interval: float = 1.0,
        restart_backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        super().__init__()
        self.store = RoutingCollection(client, name=collection, project=project, database=database)
        """The gateway every read, write and listener of this registry goes through."""
        self._client = self.store.client  # built now: a missing project fails at construction
        self.collection_name = collection
        self.env = env
        self.supervise_interval = supervise_interval
        """Seconds between the supervisor's checks that the listener is still alive."""
        self.restart_backoff = restart_backoff
        """(first, longest) delay before re-subscribing a dead listener; doubles per failure."""
        self._watch: Listener | None = None
        self._generation = 0
        """Bumped whenever the listener is replaced: callbacks of an older one are ignored."""
        self._resync = True
        """The next snapshot is a new listener's first: apply it as a full reload."""
        self._current = False
        """The current listener has delivered its first snapshot."""
        self._channel_up = True
        self._channel: Any | None = None
        self._loaded = threading.Event()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0
        """How many times the supervisor re-subscribed a listener that had died."""
        self.invalid: dict[str, str] = {}
        """Stored documents that failed validation, by document id, with the reason."""
        self.last_error: str | None = None
        """Why the listener cannot load or follow right now (the channel's state or the error
        that ended the stream); None again once a snapshot arrives. Readiness shows it."""
        self._failed = threading.Event()

    @property
    def collection(self) -> Any:
        return self._client.collection(self.collection_name)

    # -- writes ------------------------------------------------------------------------------

    def create(self, record: RoutingRecord) -> None:
        self.store.create(record)

    def update(self, record: RoutingRecord) -> None:
        self.store.replace(record)

    def delete(self, key: RoutingKey) -> bool:
        return self.store.delete(key)

    def fetch(self, key: RoutingKey) -> RoutingRecord | None:
        """Read one document straight from the store (bypasses the cache)."""
        stored = self.store.get(key)
        return None if stored is None else stored.record()

    # -- change feed -------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._supervisor is not None:
                return
            self._stop.clear()
            self._follow_channel()
            self._subscribe()
            self._supervisor = threading.Thread(
                target=self._supervise, name="routing-firestore-supervisor", daemon=True
            )
            self._supervisor.start()

    def _subscribe(self) -> None:
        """Start a new listener (under ``_lock``); its first snapshot is a full reload."""
        self._generation += 1
        generation = self._generation
        self._resync, self._current = True, False

        def on_snapshot(docs: list[Any], changes: list[Any], read_time: Any) -> None:
            self._on_snapshot(generation, docs, changes)

        self._watch = self.store.listen(on_snapshot, env=self.env, on_end=self._note_failure)

    def _on_snapshot(self, generation: int, docs: list[Any], changes: list[Any]) -> None:
        with self._lock:
            if generation != self._generation:  # a replaced listener's late delivery
                return
            if self._resync:
                self._reload(docs)
                self._resync = False
            else:
                self._apply(changes)
            self._current = True
            self.last_error = None
            self._failed.clear()
        self._loaded.set()

    def _reload(self, docs: list[Any]) -> None:
        """Make the table equal to a listener's first (full) snapshot."""
        records: list[RoutingRecord] = []
        invalid: dict[str, str] = {}
        for doc in docs:
            try:
                records.append(record_from_document(doc.id, doc.to_dict() or {}))
            except Exception as exc:  # a bad document must never kill the listener thread
                if self.invalid.get(doc.id) != str(exc):
                    log.error("ignoring invalid routing document %s: %s", doc.id, exc)
                invalid[doc.id] = str(exc)
        self.invalid = invalid
        self.table.replace_all(records)

    def _apply(self, changes: list[Any]) -> None:
        # Apply the delta only: a change to one entry must not re-parse all the others.
        for change in changes:
            doc = change.document
            if change.type.name == "REMOVED":
                self.invalid.pop(doc.id, None)
                key = _key_from_id(doc.id)
                if key is not None:
                    self.table.remove(key)
                continue
            try:
                record = record_from_document(doc.id, doc.to_dict() or {})
            except Exception as exc:  # a bad document must never kill the listener thread
                if self.invalid.get(doc.id) != str(exc):
                    log.error("ignoring invalid routing document %s: %s", doc.id, exc)
                self.invalid[doc.id] = str(exc)
                key = _key_from_id(doc.id)
                if key is not None:  # an entry that became invalid no longer resolves
                    self.table.remove(key)
                continue
            self.invalid.pop(doc.id, None)
            self.table.upsert(record)

    # -- supervision -------------------------------------------------------------------------

    @staticmethod
    def _alive(watch: Listener | None) -> bool:
        return watch is not None and watch.alive

    def _supervise(self) -> None:
        first, longest = self.restart_backoff
        delay = first
        while not self._stop.is_set():
            self._wake.wait(self.supervise_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._alive(self._watch):
                if self._current:  # a listener that delivered resets the backoff
                    delay = first
                continue
            # jitter, so that a fleet of pods does not re-subscribe in lockstep
            wait = delay * (0.5 + random.random() / 2)
            log.error(
                "the Firestore routing listener on %s stopped; re-subscribing in %.1fs "
                "(routing may be stale until then)",
                self.collection_name,
                wait,
            )
            if self._stop.wait(wait):
                return
            delay = min(delay * 2, longest)
            try:
                self._restart()
            except Exception:  # keep trying: a pod must never settle on a frozen table
                log.exception("re-subscribing to Firestore routing %s failed", self.collection_name)

    def _restart(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            old, self._watch = self._watch, None
            self._generation += 1  # nothing the old listener still delivers is applied
            self._current = False
        if old is not None:
            old.close()
        with self._lock:
            if self._stop.is_set():
                return
            self._subscribe()
            self.restarts += 1
        log.warning("re-subscribed to Firestore routing %s", self.collection_name)

    def _follow_channel(self) -> None:
        """Track the gRPC channel's connectivity (no I/O): down while it cannot connect."""
        try:
            channel = self._client._firestore_api._transport.grpc_channel
            channel.subscribe(self._on_connectivity, try_to_connect=False)
        except Exception:  # not a gRPC transport: rely on the listener state alone
            log.debug("cannot follow the Firestore channel's connectivity", exc_info=True)
            return
        self._channel = channel

    def _on_connectivity(self, state: Any) -> None:
        name = getattr(state, "name", str(state))
        if name in ("TRANSIENT_FAILURE", "SHUTDOWN"):
            self._note_failure(f"Firestore connection lost ({name})", keep_detail=True)
            if self._channel_up:
                log.error(
                    "Firestore connection lost (%s); routing %s may be stale until it is back",
                    name,
                    self.collection_name,
                )
            self._channel_up = False
        elif name == "READY":
            if not self._channel_up:
                log.warning(
                    "Firestore connection back; routing %s follows again", self.collection_name
                )
            self._channel_up = True
        self._wake.set()

    def _note_failure(self, why: str, keep_detail: bool = False) -> None:
        """Record why the listener cannot load or follow (``keep_detail``: a vaguer reason,
        the channel's state, does not replace the stream's own error)."""
        if not (keep_detail and self._failed.is_set() and self.last_error):
            self.last_error = f"{why} ({self.store.where()}, collection {self.collection_name})"
        self._failed.set()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Until the first load, or until the listener has failed (Firestore refusing or
        unreachable: waiting longer would only delay the pod's readiness report, which then
        names the failure), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._loaded.is_set() and not self._failed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._loaded.wait(min(remaining, 0.05))
        return self._loaded.is_set()

    @property
    def healthy(self) -> bool:
        """The listener runs, is connected and has delivered since it was (re)started."""
        return self._channel_up and self._current and self._alive(self._watch)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            watch, self._watch = self._watch, None
            self._generation += 1
            self._current = False
            supervisor, self._supervisor = self._supervisor, None
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.unsubscribe(self._on_connectivity)
        if watch is not None:
            watch.close()
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=5)
        self._channel_up = True


def _key_from_id(doc_id: str) -> RoutingKey | None:
    try:
        return RoutingKey.from_document_id(doc_id)
    except InvalidRouting:
        return None
