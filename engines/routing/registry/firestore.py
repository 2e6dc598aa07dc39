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

Google's ``Watch`` reopens a failed stream at once and without limit. When the server refuses
connections (Firestore or the emulator down, a proxy rejecting), each new stream fails at once,
so the thread spins reopening; under load the reopen runs inside the failed call's own callback,
recursing until a ``RecursionError`` leaves gRPC locks held (a later garbage collection of the
channel then waits on them forever). So each
listener may reopen by itself at most once per ``REOPEN_INTERVAL_S``; a stream that fails again
sooner ends the listener, and the supervisor re-subscribes with its backoff.

The Google client is imported here only; its exceptions are translated into the routing error
tree at this boundary.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import BackendUnavailable, ConfigMissing, EntryExists, InvalidRouting, RoutingKey
from ..model import RoutingRecord
from .base import RoutingRegistry

__all__ = [
    "DEFAULT_COLLECTION",
    "FirestoreRoutingRegistry",
    "record_from_snapshot",
    "single_attempt",
]

log = logging.getLogger(__name__)
DEFAULT_COLLECTION = "routing_entries"
_SERVER_FIELDS = ("updated_at",)
REOPEN_INTERVAL_S = 10.0
"""Shortest time between two reopens of a listener's stream by Google's client itself."""


def single_attempt() -> Any:
    """A retry policy that never retries, for a synchronous query's ``stream()``/``get()``.

    After a broken query stream, google-cloud-firestore 2.x asks ``retry._predicate`` whether to
    resume: ``retry=None`` then fails with an AttributeError instead of raising the RPC error,
    and the default policy looks up a ``_retry`` attribute current gapic callables lack. This
    policy gives one attempt and lets the RPC error (e.g. DeadlineExceeded) through.
    """
    from google.api_core.retry import Retry

    return Retry(predicate=lambda _exc: False)


@contextmanager
def _translate(action: str) -> Iterator[None]:
    from google.api_core import exceptions as gexc

    try:
        yield
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as exc:
        raise BackendUnavailable(f"Firestore unavailable while trying to {action}: {exc}") from exc
    except gexc.GoogleAPICallError as exc:
        if isinstance(exc, gexc.AlreadyExists | gexc.NotFound):
            raise
        raise BackendUnavailable(f"Firestore error while trying to {action}: {exc}") from exc


def record_from_snapshot(doc_id: str, data: dict[str, Any]) -> RoutingRecord:
    """Parse one stored document; the id must match the fields (a hand-edited id is invalid)."""
    payload = {k: v for k, v in data.items() if k not in _SERVER_FIELDS}
    record = RoutingRecord.from_document(payload)
    if record.key.document_id != doc_id:
        raise InvalidRouting(
            f"document id {doc_id!r} does not match its fields ({record.key.document_id!r})",
            field="document id",
        )
    return record


def _key_from_id(doc_id: str) -> RoutingKey | None:
    parts = doc_id.split(":")
    return RoutingKey(*parts) if len(parts) == 4 else None


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
        if client is None:
            from google.cloud import firestore

            client = firestore.Client(project=project, database=database)
        self._client = client
        self.collection_name = collection
        self.env = env
        self.supervise_interval = supervise_interval
        """Seconds between the supervisor's checks that the listener is still alive."""
        self.restart_backoff = restart_backoff
        """(first, longest) delay before re-subscribing a dead listener; doubles per failure."""
        self._watch: Any | None = None
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

    def _payload(self, record: RoutingRecord) -> dict[str, Any]:
        from google.cloud import firestore

        return {**record.to_document(), "updated_at": firestore.SERVER_TIMESTAMP}

    def create(self, record: RoutingRecord) -> None:
        from google.api_core import exceptions as gexc

        try:
            with _translate(f"create {record.key.document_id}"):
                self.collection.document(record.key.document_id).create(self._payload(record))
        except gexc.AlreadyExists as exc:
            raise EntryExists(record.key) from exc

    def update(self, record: RoutingRecord) -> None:
        from google.api_core import exceptions as gexc

        ref = self.collection.document(record.key.document_id)
        try:
            with _translate(f"update {record.key.document_id}"):
                # update() never creates; all top-level fields are given, so it replaces them.
                ref.update(self._payload(record))
        except gexc.NotFound as exc:
            raise ConfigMissing(record.key, (record.key,)) from exc

    def delete(self, key: RoutingKey) -> bool:
        ref = self.collection.document(key.document_id)
        with _translate(f"delete {key.document_id}"):
            existed = bool(ref.get().exists)
            ref.delete()
        return existed

    def fetch(self, key: RoutingKey) -> RoutingRecord | None:
        """Read one document straight from the store (bypasses the cache)."""
        with _translate(f"read {key.document_id}"):
            snap = self.collection.document(key.document_id).get()
        if not snap.exists:
            return None
        return record_from_snapshot(snap.id, snap.to_dict() or {})

    # -- change feed -------------------------------------------------------------------------

    def _query(self) -> Any:
        if self.env is None:
            return self.collection
        from google.cloud.firestore_v1.base_query import FieldFilter

        return self.collection.where(filter=FieldFilter("env", "==", self.env))

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

        self._watch = self._query().on_snapshot(on_snapshot)
        _end_quietly(self._watch, self.collection_name, self._note_failure)
        _limit_reopens(self._watch)

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
                records.append(record_from_snapshot(doc.id, doc.to_dict() or {}))
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
                record = record_from_snapshot(doc.id, doc.to_dict() or {})
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
    def _alive(watch: Any | None) -> bool:
        """The listener is running: not closed by Google's client, its consumer thread alive."""
        return (
            watch is not None
            and not getattr(watch, "_closed", False)
            and bool(getattr(watch, "is_active", True))
        )

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
            _close_watch(old)
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
            emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
            where = f"emulator at {emulator}, " if emulator else ""
            project = getattr(self._client, "project", None)
            self.last_error = f"{why} ({where}project {project}, collection {self.collection_name})"
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
            _close_watch(watch)
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=5)
        self._channel_up = True


def _limit_reopens(watch: Any) -> None:
    """Let the ``Watch``'s stream reopen itself at most once per ``REOPEN_INTERVAL_S``.

    Google's resumable stream asks its ``_should_recover`` on every failure, under its own
    lock, and reopens at once when it says yes. Saying no ends the stream and closes the
    ``Watch`` (as any non-recoverable error does), which the supervisor then restarts with
    backoff. One failure is usually reported twice (by gRPC's callback and by the consumer
    thread reading the stream): when the stream has already been reopened, the second report
    is let through, and Google's ``_reopen`` finds nothing to do. Installed right after the
    ``Watch`` starts: a stream that fails before that is reopened by Google's rules once more."""
    rpc: Any = getattr(watch, "_rpc", None)
    should_recover = getattr(rpc, "_should_recover", None)
    if rpc is None or should_recover is None:  # another client version: nothing to wrap
        log.debug("cannot limit the Firestore listener's reopens (no _rpc._should_recover)")
        return
    last_reopen = float("-inf")

    def limited(exc: Any) -> bool:
        nonlocal last_reopen
        if not should_recover(exc):
            return False
        current = rpc.call
        if current is not None and current.is_active():
            return True  # already reopened for this failure
        now = time.monotonic()
        if now - last_reopen < REOPEN_INTERVAL_S:
            return False
        last_reopen = now
        return True

    rpc._should_recover = limited


def _end_quietly(watch: Any, collection: str, on_error: Callable[[str], None]) -> None:
    """When the ``Watch``'s stream ends for good, close the ``Watch`` and log why in one line.

    Google's ``Watch`` closes itself from a new thread that then re-raises the stream's error:
    an "Exception in thread" traceback on stderr each time a listener ends (while Firestore
    refuses connections: at every re-subscription). The supervisor notices the closed
    ``Watch`` either way and says so in the log; ``on_error`` gets that line too."""
    import grpc  # type: ignore[import-untyped]
    from google.api_core import exceptions as gexc

    rpc: Any = getattr(watch, "_rpc", None)
    callbacks = getattr(rpc, "_callbacks", None)
    if not isinstance(callbacks, list):  # another client version: leave Google's handling
        return

    def ended(reason: Any) -> None:
        # None: the stream was closed (by us, or by Google's consumer before it reports the
        # error it got, which it then never passes on); else the gRPC call that failed.
        if reason is None:
            log.debug("the Firestore routing listener on %s ended", collection)
        else:
            if isinstance(reason, grpc.RpcError):
                reason = gexc.from_grpc_error(reason)  # type: ignore[no-untyped-call]
            first_line = (str(reason).splitlines() or [type(reason).__name__])[0]
            log.warning("the Firestore routing listener on %s ended: %s", collection, first_line)
            on_error(first_line)
        threading.Thread(target=watch.close, name="routing-firestore-close", daemon=True).start()

    for i, callback in enumerate(callbacks):
        if getattr(callback, "__self__", None) is watch and callback.__name__ == "_on_rpc_done":
            callbacks[i] = ended


def _close_watch(watch: Any) -> None:
    try:
        watch.unsubscribe()
    except Exception:  # an already-broken listener: nothing left to stop
        log.debug("closing a Firestore listener failed", exc_info=True)
