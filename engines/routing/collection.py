"""The one gateway to the routing collection (§5): every read, write and listener of
``routing_entries`` goes through :class:`RoutingCollection`.

The runtime registry's listener, ``routingctl`` (``explain``/``matrix``/``diff``/``prune``) and
the operator (its reconciler writes and removes documents with :meth:`~RoutingCollection.write`
and :meth:`~RoutingCollection.remove`, its drift sweep streams
:meth:`~RoutingCollection.documents`) use it. One gateway means one set of ownership rules, one
policy for timeouts and retries, and one translation of the Google client's errors:

- every failure that means "the collection cannot be used right now" (the emulator or the service
  down or refusing, a deadline, a retry given up, credentials) becomes ``BackendUnavailable``,
  chained, with a message naming the action, the document or collection, and where it was looked
  for (the emulator's address, or the project);
- ``create`` of an existing id is ``EntryExists``, ``replace`` of a missing one ``ConfigMissing``;
- a write or delete the ownership rules forbid is ``OwnershipConflict`` (or, for deletes, simply
  not done), naming the owner and the way to take it over on purpose.

Ownership (§5, several clusters may share one collection): an operator writes a document only if
it is absent, already equal, owned by the same RoutingEntry of its cluster, or an orphan of its
cluster (its entry is gone: the entry with that identity takes it back). A document of another
cluster is a conflict unless the entry asks to adopt it (``routing.engines.io/adopt``). A document
recording no cluster (written before cluster identities) is this cluster's when its owner is the
writing entry (rewritten to record the cluster) or still lives here; otherwise its cluster is
unknown and it is treated as another's. Deletes remove only what the deleting entry owns in this
cluster, or (``routingctl prune``) exactly the document read, if unchanged since.

Writes without transactions: a new document is written with ``create()`` (atomic: it fails if
the id exists); replacing or deleting an existing one is a read (owner and content) and a write
conditioned on the update time that read saw, so a document changed in between is read and
decided again: the guarantee of a transaction (begin, read, commit) in two round trips instead
of three. A gateway also remembers, per document, the update time and content of its own last
write or read of a document the writing entry owns in this cluster; while that holds (the
conditioned write proves it), changing the document is that one write with no read at all.

Calls carry a short timeout and no client-side retry, so an unreachable store surfaces within
seconds instead of hanging a caller; callers that must outlast an outage retry themselves (the
operator through kopf's backoff, the registry's listener through its supervisor).

The Google client is imported here and in the private listener module (``_listener``) only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ._listener import Listener, first_line, open_listener
from .contract import (
    ADOPT_ANNOTATION,
    DEFAULT_COLLECTION,
    UPDATED_AT,
    RoutingKey,
    canonical_json,
    digest,
    owner_of,
    record_from_document,
    strip_server_fields,
)
from .errors import BackendUnavailable, ConfigMissing, EntryExists, OwnershipConflict

if TYPE_CHECKING:
    from .model import RoutingRecord, Source

__all__ = [
    "Listener",
    "Outcome",
    "OwnerAlive",
    "RoutingCollection",
    "StoredDocument",
    "decide_write",
    "foreign",
    "single_attempt",
]

log = logging.getLogger(__name__)
OwnerAlive = Callable[["Source"], bool]
"""Does the RoutingEntry a projection's ``source`` names still exist (same uid) here?"""


class Outcome(StrEnum):
    """What an ownership-checked write did."""

    UNCHANGED = "unchanged"
    WRITTEN = "written"
    MIGRATED = "migrated"
    """Rewritten only to record this cluster: the entry's own projection from before cluster
    identities."""
    RECLAIMED = "reclaimed"
    """An orphan of this cluster (its entry is gone) taken by the entry with the same identity."""
    ADOPTED = "adopted"
    """Another cluster's document taken over on purpose (the adopt annotation)."""


def foreign(owner: Source, cluster: str) -> bool:
    """Is ``owner`` recorded as another cluster's? (False when no cluster is recorded.)"""
    return owner.cluster is not None and owner.cluster != cluster


def decide_write(
    document_id: str,
    current: Mapping[str, Any],
    wanted: Mapping[str, Any],
    mine: Source,
    cluster: str,
    owner_alive: OwnerAlive,
    adopt: bool,
) -> tuple[Outcome, Source | None]:
    """What writing ``wanted`` (for the entry ``mine`` of ``cluster``) over the stored
    ``current`` document would be, and the owner it replaces; raises ``OwnershipConflict`` when it
    must not be written (the rules are in the module docstring)."""
    if strip_server_fields(current) == wanted:
        return Outcome.UNCHANGED, None
    owner = owner_of(current)
    if owner is None:
        return Outcome.WRITTEN, None  # nobody's: ours to write
    if owner.uid == mine.uid and not foreign(owner, cluster):
        return (Outcome.MIGRATED if owner.cluster is None else Outcome.WRITTEN), None
    if not foreign(owner, cluster):
        if owner_alive(owner):
            raise OwnershipConflict(
                f"Firestore document {document_id} is owned by RoutingEntry "
                f"{owner.namespace}/{owner.name}",
                owner_uid=owner.uid,
            )
        if owner.cluster is not None:
            return Outcome.RECLAIMED, owner
    if adopt:
        return Outcome.ADOPTED, owner
    if owner.cluster is None:
        where = (
            f"belongs to RoutingEntry {owner.namespace}/{owner.name}, which is not in this "
            "cluster (the document records no cluster: written before cluster identities, "
            "maybe by another cluster sharing the collection)"
        )
    else:
        where = (
            f"belongs to cluster {owner.cluster} (RoutingEntry {owner.namespace}/{owner.name} "
            "there)"
        )
    raise OwnershipConflict(
        f"Firestore document {document_id} {where}; nothing written. To take it over on "
        f'purpose, annotate this entry {ADOPT_ANNOTATION}="true"',
        owner_uid=owner.uid,
    )


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
        self._known: dict[str, bytes] = {}
        """document id → update time (8 bytes), digest of the owner (this cluster and the
        entry's uid) and of the content (16 each) as :meth:`write` last wrote or read it: 40
        bytes a document."""

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

    def _query(self, env: str | None) -> Any:
        query = self.client.collection(self.name)
        if env is None:
            return query
        from google.cloud.firestore_v1.base_query import FieldFilter

        return query.where(filter=FieldFilter("env", "==", env))

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

    def listen(
        self,
        on_snapshot: Callable[[list[Any], list[Any], Any], None],
        *,
        env: str | None = None,
        on_end: Callable[[str], None] | None = None,
    ) -> Listener:
        """A snapshot listener on the collection (``env`` only, when given): ``on_snapshot``
        gets Google's ``(documents, changes, read_time)``, the first time the whole collection.
        When the stream ends for good, ``on_end`` gets one line saying why and the listener
        closes itself (:attr:`Listener.alive` turns False): re-subscribing is the caller's."""
        with self._translate(f"listen to {self.name}"):
            return open_listener(
                self._query(env), on_snapshot, self.name, on_end or (lambda _why: None)
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
        changed with one write conditioned on that update time and no read: on a switch, the
        only round trip before the app can see the new backend. Otherwise, or when that
        condition fails (changed, adopted or deleted since), it is a read and a write
        conditioned on the update time read, at most three times: the guarantee of a
        transaction in two round trips."""
        from google.api_core import exceptions as gexc
        from google.cloud import firestore

        doc_id = record.key.document_id
        mine = record.source
        if mine is None or not self.cluster or mine.cluster != self.cluster:
            raise ValueError(f"{doc_id}: a record to write names this cluster ({self.cluster!r})")
        ref = self._ref(record.key)
        wanted = record.to_document()
        content = digest(canonical_json(wanted))
        stamped = {**wanted, UPDATED_AT: firestore.SERVER_TIMESTAMP}

        def replace(update_time: Any) -> Any:
            """Overwrite every field, if the document was last updated at ``update_time``."""
            return ref.update(
                stamped,
                option=self.client.write_option(last_update_time=update_time),
                timeout=self.timeout,
                retry=None,
            )

        with self._translate(f"write {self.name}/{doc_id}"):
            known = None if fresh else self._known_as(doc_id, mine.uid)
            if known is not None and known[1] != content:
                # This entry's own document as last seen here; the condition proves it still is.
                try:
                    result = replace(known[0])
                    self._remember(doc_id, result.update_time, mine.uid, content)
                    return Outcome.WRITTEN, None
                except (gexc.FailedPrecondition, gexc.NotFound):
                    self.forget(doc_id)  # changed or deleted since: read and decide
            if fresh:
                # The common first sync: create() is atomic (fails if the id exists), one RPC.
                try:
                    result = ref.create(stamped, timeout=self.timeout, retry=None)
                    self._remember(doc_id, result.update_time, mine.uid, content)
                    return Outcome.WRITTEN, None
                except gexc.AlreadyExists:
                    pass  # written meanwhile, or by an earlier attempt of ours: read and decide
            for _ in range(3):
                snap = ref.get(timeout=self.timeout, retry=None)
                if not snap.exists:
                    try:
                        result = ref.create(stamped, timeout=self.timeout, retry=None)
                    except gexc.AlreadyExists:
                        continue
                    self._remember(doc_id, result.update_time, mine.uid, content)
                    return Outcome.WRITTEN, None
                decided = decide_write(
                    doc_id, snap.to_dict() or {}, wanted, mine, self.cluster, owner_alive, adopt
                )
                if decided[0] is Outcome.UNCHANGED:
                    self._remember(doc_id, snap.update_time, mine.uid, content)
                    return decided
                try:
                    result = replace(snap.update_time)
                except (gexc.FailedPrecondition, gexc.NotFound):
                    continue  # changed since the read: read and decide again
                self._remember(doc_id, result.update_time, mine.uid, content)
                return decided
        raise BackendUnavailable(
            f"cannot write {self.name}/{doc_id}: the document kept changing while it was "
            "written; will retry"
        )

    def remove(self, key: RoutingKey, owner_uid: str) -> bool:
        """Delete the document if the RoutingEntry ``owner_uid`` of this cluster owns it; True
        if deleted. A read and a delete conditioned on the update time read (a document changed
        in between is read and judged again), at most three times."""
        from google.api_core import exceptions as gexc

        ref = self._ref(key)
        action = f"delete {self.name}/{key.document_id}"
        for _ in range(3):
            current = self._get(key, action)
            if current is None or not self._owned(current, owner_uid):
                return False
            with self._translate(action):
                try:
                    ref.delete(
                        option=self.client.write_option(last_update_time=current.update_time),
                        timeout=self.timeout,
                        retry=None,
                    )
                except (gexc.FailedPrecondition, gexc.NotFound):
                    continue  # changed or gone since the read: read and judge again
            self.forget(key.document_id)
            return True
        raise BackendUnavailable(
            f"cannot {action}: the document kept changing while it was deleted; will retry"
        )

    # -- what this writer last saw of its own documents ----------------------------------------

    def _owner_tag(self, uid: str) -> bytes:
        return digest(f"{self.cluster}/{uid}")

    def _remember(self, document_id: str, update_time: Any, uid: str, content: bytes) -> None:
        """The document is, as of ``update_time``, ``content`` (a digest) owned by the entry
        ``uid`` of this cluster."""
        stamp = update_time.timestamp_pb()  # the client's DatetimeWithNanoseconds
        nanos = stamp.seconds * 1_000_000_000 + stamp.nanos
        self._known[document_id] = nanos.to_bytes(8, "big") + self._owner_tag(uid) + content

    def _known_as(self, document_id: str, uid: str) -> tuple[Any, bytes] | None:
        """(update time, content digest) of the document as last written or read here, if it
        was then owned by the entry ``uid`` of this cluster."""
        from google.protobuf.timestamp_pb2 import Timestamp

        known = self._known.get(document_id)
        if known is None or known[8:24] != self._owner_tag(uid):
            return None
        seconds, nanos = divmod(int.from_bytes(known[:8], "big"), 1_000_000_000)
        return Timestamp(seconds=seconds, nanos=nanos), known[24:]

    def forget(self, document_id: str) -> None:
        """Drop what is remembered of a document (its entry is gone)."""
        self._known.pop(document_id, None)

    def _owned(self, document: StoredDocument, owner_uid: str) -> bool:
        """Is ``document`` the entry ``owner_uid``'s, in this cluster? (Only that is removed.)"""
        owner = document.owner
        return owner is not None and owner.uid == owner_uid and not foreign(owner, self.cluster)

    def delete_unchanged(self, document: StoredDocument) -> bool:
        """Delete ``document`` if it is unchanged since it was read (its update time); False
        when it changed or is gone."""
        from google.api_core import exceptions as gexc

        ref = self.client.collection(self.name).document(document.id)
        with self._translate(f"delete {self.name}/{document.id}"):
            try:
                ref.delete(
                    option=self.client.write_option(last_update_time=document.update_time),
                    timeout=self.timeout,
                    retry=None,
                )
            except (gexc.FailedPrecondition, gexc.NotFound):
                return False
        return True
