"""The one gateway to the routing collection (§5): every read, write and listener of
``routing_entries`` goes through :class:`RoutingCollection`.

The runtime registry's listener, ``routingctl`` (``explain``/``matrix``/``diff``/``prune``) and
the operator (its reconciler writes and removes documents with :meth:`~RoutingCollection.write`
and :meth:`~RoutingCollection.remove`, its drift sweep streams
:meth:`~RoutingCollection.documents`, its drift listener follows its cluster's documents with
:meth:`~RoutingCollection.listen`) use it. One gateway means one set of ownership rules, one
policy for timeouts and retries, and one translation of the Google client's errors:

- every failure that means "the collection cannot be used right now" (the emulator or the service
  down or refusing, a deadline, a retry given up, credentials) becomes ``BackendUnavailable``,
  chained, with a message naming the action, the document or collection, and where it was looked
  for (the emulator's address, or the project);
- ``create`` of an existing id is ``EntryExists``, ``replace`` of a missing one ``ConfigMissing``;
- a write or delete the ownership rules forbid is ``OwnershipConflict`` (or, for deletes, simply
  not done), naming the owner and the way to take it over on purpose.

Ownership (§5, several clusters may share one collection) is decided by ``ownership``; a write
without a transaction is ``_writes``'s: a read and a write conditioned on the update time read,
or, for a document this writer last wrote as the entry's own, that one write alone.

Calls carry a short timeout and no client-side retry, so an unreachable store surfaces within
seconds instead of hanging a caller; callers that must outlast an outage retry themselves (the
operator through kopf's backoff, the registry's listener through its supervisor).

The Google client is imported here and in the private modules ``_listener``, ``_watch`` and
``_writes`` only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ._listener import KeptDocument, Listener, first_line, open_listener
from ._writes import Changed, LastWrites, read_decide_write, unless_changed
from .contract import (
    DEFAULT_COLLECTION,
    UPDATED_AT,
    RoutingKey,
    canonical_json,
    digest,
    owner_of,
    record_from_document,
    strip_server_fields,
)
from .errors import BackendUnavailable, ConfigMissing, EntryExists
from .ownership import Outcome, OwnerAlive, decide_write, foreign

if TYPE_CHECKING:
    from .model import RoutingRecord, Source

__all__ = [
    "KeptDocument",
    "Listener",
    "Outcome",
    "OwnerAlive",
    "Probe",
    "RoutingCollection",
    "StoredDocument",
    "single_attempt",
]

log = logging.getLogger(__name__)


def single_attempt() -> Any:
    """A retry policy that never retries, for a query's ``stream()``/``get()``.

    After a broken query stream, google-cloud-firestore 2.x asks ``retry._predicate`` whether to
    resume: ``retry=None`` then fails with an AttributeError instead of raising the RPC error,
    and the default policy looks up a ``_retry`` attribute current gapic callables lack. This
    policy gives one attempt and lets the RPC error (e.g. DeadlineExceeded) through.
    """
    from google.api_core.retry import Retry

    return Retry(predicate=lambda _exc: False)


def _vendor_errors() -> tuple[type[BaseException], ...]:
    """Every failure of the Google client that means "the collection cannot be used now"."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    return (gexc.GoogleAPIError, auth_exc.GoogleAuthError, OSError)


class Probe(StrEnum):
    """What one small read of the collection found (:meth:`RoutingCollection.probe`)."""

    OK = "ok"
    SLOW = "slow"
    """No answer in time: slow is not down (a just-started emulator takes seconds to answer)."""
    DENIED = "denied"
    """The credentials are refused, or cannot be had."""
    DOWN = "down"
    """Any other failure: the collection cannot be reached."""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """One document as read: its id, its fields (server fields removed) and the update time a
    conditional write can be made on."""

    id: str
    data: dict[str, Any]
    update_time: Any = None

    @property
    def owner(self) -> Source | None:
        return owner_of(self.data)

    def record(self) -> RoutingRecord:
        """The document as a record; raises ``InvalidRouting`` (also for a mismatched id)."""
        return record_from_document(self.id, self.data)

    def digest(self) -> bytes:
        """The document's digest, comparable with ``digest(configmap_value(record))``."""
        return digest(canonical_json(self.data))


class RoutingCollection:
    """``{collection}/{env}:{tenant}:{project}:{resource_kind}`` documents.

    ``cluster`` is the writer's cluster identity, required by the ownership-checked
    :meth:`write` and :meth:`remove` (a reader needs none)."""

    def __init__(
        self,
        client: Any | None = None,
        *,
        name: str = DEFAULT_COLLECTION,
        project: str | None = None,
        database: str | None = None,
        cluster: str = "",
        timeout: float = 5.0,
        list_timeout: float = 60.0,
    ) -> None:
        self._client_args = (project, database)
        self._client = client
        self.name = name
        self.cluster = cluster
        self.timeout = timeout
        """Seconds for one read or write."""
        self.list_timeout = list_timeout
        """Seconds for listing the whole collection."""
        self._last = LastWrites()
        """What :meth:`write` last wrote or read of this writer's own documents."""

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``google.cloud.firestore.Client`` (built at first use; building it can fail on
        missing credentials, which is then ``BackendUnavailable`` like any other failure)."""
        if self._client is None:
            from google.cloud import firestore

            project, database = self._client_args
            with self._translate("connect"):
                self._client = firestore.Client(project=project, database=database)
        return self._client

    def where(self) -> str:
        """Where the collection is looked for: the emulator's address, or the project."""
        emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
        project = getattr(self._client, "project", None) or self._client_args[0]
        parts = [f"emulator at {emulator}"] if emulator else []
        parts.append(f"project {project or '(default)'}")
        return ", ".join(parts)

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        """Vendor failures inside the block become ``BackendUnavailable`` naming ``action``."""
        try:
            yield
        except _vendor_errors() as exc:
            raise self._unavailable(action, exc) from exc

    def _unavailable(self, action: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"cannot {action}: Firestore collection {self.name} unavailable ({self.where()}): "
            f"{first_line(exc)}"
        )

    def _ref(self, key: RoutingKey) -> Any:
        return self.client.collection(self.name).document(key.document_id)

    def _query(self, env: str | None, cluster: str | None = None) -> Any:
        query = self.client.collection(self.name)
        if env is None and cluster is None:
            return query
        from google.cloud.firestore_v1.base_query import FieldFilter

        for field, value in (("env", env), ("source.cluster", cluster)):
            if value is not None:
                query = query.where(filter=FieldFilter(field, "==", value))
        return query

    @staticmethod
    def _stored(snap: Any) -> StoredDocument:
        return StoredDocument(
            snap.id, strip_server_fields(snap.to_dict() or {}), getattr(snap, "update_time", None)
        )

    @staticmethod
    def _payload(record: RoutingRecord) -> dict[str, Any]:
        from google.cloud import firestore

        return {**record.to_document(), UPDATED_AT: firestore.SERVER_TIMESTAMP}

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: RoutingKey) -> StoredDocument | None:
        """One document straight from the store, or None when there is none."""
        return self._get(key, f"read {self.name}/{key.document_id}")

    def _get(self, key: RoutingKey, action: str) -> StoredDocument | None:
        with self._translate(action):
            snap = self._ref(key).get(timeout=self.timeout, retry=None)
        return self._stored(snap) if snap.exists else None

    def documents(
        self, env: str | None = None, *, timeout: float | None = None
    ) -> Iterator[StoredDocument]:
        """Every document (of ``env`` only, when given), streamed by one query that must end
        within ``timeout`` seconds (default :attr:`list_timeout`); a caller keeping only a
        digest of each never holds the whole collection."""
        what = f"list {self.name}" + (f" (env {env})" if env else "")
        with self._translate(what):
            for snap in self._query(env).stream(
                timeout=self.list_timeout if timeout is None else timeout,
                retry=single_attempt(),
            ):
                yield self._stored(snap)

    def probe(self, timeout: float) -> tuple[Probe, BackendUnavailable | None]:
        """Can the collection be used right now? One query for one document, within
        ``timeout`` seconds: what it found, and the failure (translated, chained) if any."""
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        try:
            with self._translate(f"read {self.name}"):
                self.client.collection(self.name).limit(1).get(
                    timeout=timeout, retry=single_attempt()
                )
        except BackendUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, gexc.DeadlineExceeded):
                return Probe.SLOW, exc
            denied = gexc.PermissionDenied | gexc.Unauthenticated | auth_exc.GoogleAuthError
            if isinstance(cause, denied):
                return Probe.DENIED, exc
            return Probe.DOWN, exc
        return Probe.OK, None

    def listen(
        self,
        on_snapshot: Callable[[list[Any], list[Any], Any], None],
        *,
        env: str | None = None,
        cluster: str | None = None,
        on_end: Callable[[str], None] | None = None,
        quiet: bool = False,
        keep: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Listener:
        """A snapshot listener on the collection, or on the documents of ``env`` and of
        ``cluster`` (``source.cluster``) only, when given: ``on_snapshot`` gets Google's
        ``(documents, changes, read_time)``, the first time every document. When the stream ends
        for good, ``on_end`` gets one line saying why (logged as a warning too, unless
        ``quiet``: the caller reports it) and the listener closes itself (:attr:`Listener.alive`
        turns False): re-subscribing is the caller's.

        ``keep``: the listener holds of each document only ``keep(fields)`` (server fields
        removed; ``KeptDocument.kept``), not its fields, which Google's client otherwise holds
        for every listened document while it listens."""
        with self._translate(f"listen to {self.name}"):
            return open_listener(
                self._query(env, cluster),
                on_snapshot,
                self.name,
                on_end or (lambda _why: None),
                quiet,
                keep,
            )

    # -- writes without ownership (the registry's API: tools and tests) -----------------------

    def create(self, record: RoutingRecord) -> None:
        """Write a new document; ``EntryExists`` when its id is taken."""
        from google.api_core import exceptions as gexc

        with self._translate(f"create {self.name}/{record.key.document_id}"):
            try:
                self._ref(record.key).create(
                    self._payload(record), timeout=self.timeout, retry=None
                )
            except gexc.AlreadyExists as exc:
                raise EntryExists(record.key) from exc

    def replace(self, record: RoutingRecord) -> None:
        """Replace an existing document; ``ConfigMissing`` when there is none."""
        from google.api_core import exceptions as gexc

        doc_id = record.key.document_id
        with self._translate(f"replace {self.name}/{doc_id}"):
            try:
                # update() never creates; every top-level field is given, so it replaces them.
                self._ref(record.key).update(
                    self._payload(record), timeout=self.timeout, retry=None
                )
            except gexc.NotFound as exc:
                raise ConfigMissing(record.key, (record.key,)) from exc

    def delete(self, key: RoutingKey) -> bool:
        """Delete a document whoever owns it; True if it existed."""
        ref = self._ref(key)
        with self._translate(f"delete {self.name}/{key.document_id}"):
            existed = bool(ref.get(timeout=self.timeout, retry=None).exists)
            ref.delete(timeout=self.timeout, retry=None)
        return existed

    # -- ownership-checked writes (the operator's) --------------------------------------------

    def write(
        self,
        record: RoutingRecord,
        owner_alive: OwnerAlive,
        *,
        fresh: bool = False,
        adopt: bool = False,
    ) -> tuple[Outcome, Source | None]:
        """Write the record's document unless it is already there, under the ownership rules;
        returns what was done and the owner a takeover replaced, raises ``OwnershipConflict``.

        ``fresh``: the entry was never synced, so the document most likely does not exist: try
        ``create()`` first (one RPC) and read only if it does exist. ``adopt``: take over
        another cluster's document.

        A document this collection last wrote (or read) as the entry's own in this cluster is
        changed with one write conditioned on that update time and no read. Otherwise, or when
        that condition fails (changed, adopted or deleted since), it is a read and a write
        conditioned on the update time read (``_writes``)."""
        from google.cloud import firestore

        doc_id = record.key.document_id
        mine = record.source
        if mine is None or not self.cluster or mine.cluster != self.cluster:
            raise ValueError(f"{doc_id}: a record to write names this cluster ({self.cluster!r})")
        ref = self._ref(record.key)
        wanted = record.to_document()
        owner, content = f"{self.cluster}/{mine.uid}", digest(canonical_json(wanted))
        stamped = {**wanted, UPDATED_AT: firestore.SERVER_TIMESTAMP}
        action = f"write {self.name}/{doc_id}"

        def replace(update_time: Any) -> Any:
            """Overwrite every field, if the document was last updated at ``update_time``."""
            with unless_changed():
                option = self.client.write_option(last_update_time=update_time)
                return ref.update(stamped, option=option, timeout=self.timeout, retry=None)

        def create() -> Any:
            with unless_changed(creating=True):
                return ref.create(stamped, timeout=self.timeout, retry=None)

        def written(
            update_time: Any, outcome: tuple[Outcome, Source | None] = (Outcome.WRITTEN, None)
        ) -> tuple[Outcome, Source | None]:
            self._last.remember(doc_id, update_time, owner, content)
            return outcome

        def attempt() -> tuple[Outcome, Source | None]:
            snap = ref.get(timeout=self.timeout, retry=None)
            if not snap.exists:
                return written(create().update_time)
            current = snap.to_dict() or {}
            decided = decide_write(doc_id, current, wanted, mine, self.cluster, owner_alive, adopt)
            if decided[0] is Outcome.UNCHANGED:
                return written(snap.update_time, decided)
            return written(replace(snap.update_time).update_time, decided)

        with self._translate(action):
            known = None if fresh else self._last.recall(doc_id, owner)
            if known is not None and known[1] != content:
                # This entry's own document as last seen here; the condition proves it still is.
                try:
                    return written(replace(known[0]).update_time)
                except Changed:
                    self.forget(doc_id)  # changed or deleted since: read and decide
            if fresh:
                # The common first sync: create() is atomic (fails if the id exists), one RPC.
                # Taken: written meanwhile, or by an earlier attempt of ours: read and decide.
                with suppress(Changed):
                    return written(create().update_time)
            return read_decide_write(attempt, action, "written")

    def remove(self, key: RoutingKey, owner_uid: str) -> bool:
        """Delete the document if the RoutingEntry ``owner_uid`` of this cluster owns it; True
        if deleted. A read and a delete conditioned on the update time read (``_writes``)."""
        ref = self._ref(key)
        action = f"delete {self.name}/{key.document_id}"

        def attempt() -> bool:
            current = self._get(key, action)
            if current is None or not self._owned(current, owner_uid):
                return False
            with self._translate(action):
                self._delete_if_unchanged(ref, current.update_time)
            self.forget(key.document_id)
            return True

        return read_decide_write(attempt, action, "deleted")

    def forget(self, document_id: str) -> None:
        """Drop what is remembered of a document (its entry is gone)."""
        self._last.forget(document_id)

    def _owned(self, document: StoredDocument, owner_uid: str) -> bool:
        """Is ``document`` the entry ``owner_uid``'s, in this cluster? (Only that is removed.)"""
        owner = document.owner
        return owner is not None and owner.uid == owner_uid and not foreign(owner, self.cluster)

    def _delete_if_unchanged(self, ref: Any, update_time: Any) -> None:
        """Delete the document if it was last updated at ``update_time``, else ``Changed``."""
        with unless_changed():
            option = self.client.write_option(last_update_time=update_time)
            ref.delete(option=option, timeout=self.timeout, retry=None)

    def delete_unchanged(self, document: StoredDocument) -> bool:
        """Delete ``document`` if it is unchanged since it was read (its update time); False
        when it changed or is gone."""
        ref = self.client.collection(self.name).document(document.id)
        with self._translate(f"delete {self.name}/{document.id}"):
            try:
                self._delete_if_unchanged(ref, document.update_time)
            except Changed:
                return False
        return True
