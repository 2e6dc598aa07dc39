"""The two projections of a RoutingEntry: its Firestore document and its ConfigMap key.

Both writers are idempotent and report what they did (``unchanged``, ``written``, or a
takeover: ``migrated``, ``reclaimed``, ``adopted``), so the reconciler can tell a first sync from
a drift repair. Both check ownership, and deletion removes only what the deleting entry owns.

Ownership of a Firestore document (several clusters may share the collection, §5): a document
of this cluster (``source.cluster``) whose RoutingEntry is gone is an orphan and the entry with
its identity takes it back; one whose entry lives is a Conflict. A document of another cluster is
a Conflict unless the entry asks to adopt it. A document written before cluster identities (no
``source.cluster``) is this cluster's when its owner is the writing entry itself (taken over
silently) or lives here; otherwise its cluster is unknown and it is treated as another's.

A new Firestore document is written with ``create()`` (atomic: it fails if the id exists).
Replacing an existing one is a read (owner and content) and a write conditioned on the update
time that read saw, so a document changed in between is read and decided again: the same
guarantee as a transaction (begin, read, commit), in two round trips instead of three. The
projection also remembers, per document, the update time and content of its own last write or
read of a document the writing entry owns in this cluster; while that holds (the conditioned
write proves it), changing the document is that one write, with no read at all: on a switch,
the only Firestore round trip before the app can see the new backend. Calls carry short
timeouts and no client-side retry, so an unreachable emulator or service surfaces as
``BackendUnavailable`` within seconds instead of hanging a handler. ConfigMap writes use the
object's ``resourceVersion`` (optimistic concurrency) and retry on 409.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from engines.routing.collection import Outcome, OwnerAlive, foreign
from engines.routing.contract import (
    ADOPT_ANNOTATION,
    MANAGED_BY,
    UPDATED_AT,
    RoutingKey,
    canonical_json,
    configmap_value,
    digest,
    owner_of,
    strip_server_fields,
)
from engines.routing.errors import BackendUnavailable, OwnershipConflict
from engines.routing.model import RoutingRecord, Source

__all__ = [
    "MANAGED_BY",
    "ConfigMapProjection",
    "FirestoreProjection",
    "Outcome",
    "canonical_json",
    "configmap_value",
    "digest",
    "foreign",
    "owner_of",
    "strip_server_fields",
]

log = logging.getLogger(__name__)
_TIMEOUT = 5.0


def _vendor_errors() -> tuple[type[Exception], ...]:
    """Every failure of the Google client that means "Firestore cannot be used right now"."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    return (gexc.GoogleAPICallError, gexc.RetryError, auth_exc.GoogleAuthError)


class FirestoreProjection:
    """``{collection}/{env}:{tenant}:{project}:{resource_kind}`` documents."""

    def __init__(self, client: Any, collection: str, cluster: str) -> None:
        self.client = client
        self.collection = collection
        self.cluster = cluster
        """This operator's cluster identity: it writes and deletes only that cluster's
        documents (empty until known: then it writes nothing)."""
        self._known: dict[str, bytes] = {}
        """document id → update time (8 bytes), digest of the owner (this cluster and the
        entry's uid) and of the content (16 each) as this projection last wrote or read it:
        40 bytes a document."""

    def _ref(self, key: RoutingKey) -> Any:
        return self.client.collection(self.collection).document(key.document_id)

    def read(self, key: RoutingKey) -> dict[str, Any] | None:

        try:
            snap = self._ref(key).get(timeout=_TIMEOUT, retry=None)
        except _vendor_errors() as exc:
            raise BackendUnavailable(f"Firestore read of {key.document_id} failed: {exc}") from exc
        return snap.to_dict() if snap.exists else None

    def _decide(
        self,
        document_id: str,
        current: dict[str, Any],
        wanted: dict[str, Any],
        mine: Source,
        owner_alive: OwnerAlive,
        adopt: bool,
    ) -> tuple[Outcome, Source | None]:
        """What writing ``wanted`` over the existing ``current`` document would be, and the
        owner it replaces; raises ``OwnershipConflict`` when it must not be written."""
        if strip_server_fields(current) == wanted:
            return Outcome.UNCHANGED, None
        owner = owner_of(current)
        if owner is None:
            return Outcome.WRITTEN, None  # nobody's: ours to write
        if owner.uid == mine.uid and not foreign(owner, self.cluster):
            if owner.cluster is None:
                return Outcome.MIGRATED, None
            return Outcome.WRITTEN, None
        if not foreign(owner, self.cluster):
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
                f"belongs to cluster {owner.cluster} (RoutingEntry "
                f"{owner.namespace}/{owner.name} there)"
            )
        raise OwnershipConflict(
            f"Firestore document {document_id} {where}; nothing written. To take it over on "
            f'purpose, annotate this entry {ADOPT_ANNOTATION}="true"',
            owner_uid=owner.uid,
        )

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

    def ensure(
        self,
        record: RoutingRecord,
        owner_alive: OwnerAlive,
        fresh: bool = False,
        adopt: bool = False,
    ) -> tuple[Outcome, Source | None]:
        """Write the record's document unless it is already there; returns what was done and
        the owner a takeover replaced. ``fresh``: the entry was never synced, so the document
        most likely does not exist: try ``create()`` first (one RPC) and read only if it does
        exist. ``adopt``: take over another cluster's document."""
        from google.api_core import exceptions as gexc
        from google.cloud import firestore

        ref = self._ref(record.key)
        document_id = record.key.document_id
        wanted = record.to_document()
        mine = record.source
        if mine is None or not self.cluster or mine.cluster != self.cluster:
            raise ValueError(f"{document_id}: a record to write names this cluster")
        content = digest(canonical_json(wanted))
        stamped = {**wanted, UPDATED_AT: firestore.SERVER_TIMESTAMP}

        def replace(update_time: Any) -> Any:
            """Overwrite every field, if the document was last updated at ``update_time``."""
            return ref.update(
                stamped,
                option=self.client.write_option(last_update_time=update_time),
                timeout=_TIMEOUT,
                retry=None,
            )

        try:
            known = None if fresh else self._known_as(document_id, mine.uid)
            if known is not None and known[1] != content:
                # This entry's own document as last seen here; the condition proves it still is.
                try:
                    result = replace(known[0])
                    self._remember(document_id, result.update_time, mine.uid, content)
                    return Outcome.WRITTEN, None
                except (gexc.FailedPrecondition, gexc.NotFound):
                    self.forget(document_id)  # changed or deleted since: read and decide
            if fresh:
                # The common first sync: create() is atomic (fails if the id exists), one RPC.
                try:
                    result = ref.create(stamped, timeout=_TIMEOUT, retry=None)
                    self._remember(document_id, result.update_time, mine.uid, content)
                    return Outcome.WRITTEN, None
                except gexc.AlreadyExists:
                    pass  # written meanwhile, or by an earlier attempt of ours: read and decide
            for _ in range(3):
                snap = ref.get(timeout=_TIMEOUT, retry=None)
                current = snap.to_dict() if snap.exists else None
                if current is None:
                    try:
                        result = ref.create(stamped, timeout=_TIMEOUT, retry=None)
                    except gexc.AlreadyExists:
                        continue
                    self._remember(document_id, result.update_time, mine.uid, content)
                    return Outcome.WRITTEN, None
                decided = self._decide(document_id, current, wanted, mine, owner_alive, adopt)
                if decided[0] is Outcome.UNCHANGED:
                    self._remember(document_id, snap.update_time, mine.uid, content)
                    return decided
                try:
                    result = replace(snap.update_time)
                except (gexc.FailedPrecondition, gexc.NotFound):
                    continue  # changed since the read: read and decide again
                self._remember(document_id, result.update_time, mine.uid, content)
                return decided
        except _vendor_errors() as exc:
            raise BackendUnavailable(f"Firestore write of {document_id} failed: {exc}") from exc
        raise BackendUnavailable(
            f"Firestore document {document_id} kept changing while it was written; will retry"
        )

    def remove(self, key: RoutingKey, owner_uid: str) -> bool:
        """Delete the document if ``owner_uid`` of this cluster owns it; True if deleted."""
        from google.cloud import firestore

        ref = self._ref(key)

        @firestore.transactional
        def delete(txn: Any) -> bool:
            snap = ref.get(transaction=txn, timeout=_TIMEOUT, retry=None)
            if not snap.exists:
                return False
            owner = owner_of(snap.to_dict())
            if owner is None or owner.uid != owner_uid or foreign(owner, self.cluster):
                return False  # only what this entry, in this cluster, owns
            txn.delete(ref)
            return True

        try:
            return delete(self.client.transaction(max_attempts=3))  # type: ignore[no-any-return]
        except _vendor_errors() as exc:
            raise BackendUnavailable(
                f"Firestore delete of {key.document_id} failed: {exc}"
            ) from exc
        except ValueError as exc:
            raise BackendUnavailable(f"Firestore transaction failed: {exc}") from exc


class ConfigMapProjection:
    """Keys of ``routing.{env}[.{tenant}]`` ConfigMaps in the entry's namespace."""

    def __init__(self, core_api: Any) -> None:
        self.api = core_api

    def _get(self, namespace: str, name: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def ensure_many(
        self, namespace: str, name: str, records: list[RoutingRecord], owner_alive: OwnerAlive
    ) -> dict[str, Outcome | OwnershipConflict]:
        """Write the keys of several entries of one ConfigMap with one read and one write.

        Keys that are free or owned by the writing entry go in one merge patch, which the server
        applies atomically without touching other keys (no resourceVersion needed, so entries
        sharing a ConfigMap never conflict). Taking over a key from an entry that is gone is
        guarded by the resourceVersion read; a 409 re-reads and retries.
        """
        from kubernetes.client.exceptions import ApiException

        for _ in range(5):
            cm = self._get(namespace, name)
            data: dict[str, str] = dict((cm.data or {}) if cm is not None else {})
            labelled = cm is not None and (cm.metadata.labels or {}).items() >= MANAGED_BY.items()
            results: dict[str, Outcome | OwnershipConflict] = {}
            writes: dict[str, str] = {}
            takeover = False
            for record in records:
                key, value = record.key.configmap_key, configmap_value(record)
                current = data.get(key)
                if current == value:
                    results[key] = Outcome.UNCHANGED
                    continue
                outcome = Outcome.WRITTEN
                if current is not None and record.source is not None:
                    try:
                        owner = owner_of(json.loads(current))
                    except ValueError:
                        owner = None  # garbage in our key: ours to overwrite
                    if owner is not None and owner.uid != record.source.uid:
                        # A ConfigMap is this cluster's by nature: only "is its entry alive".
                        if owner_alive(owner):
                            results[key] = OwnershipConflict(
                                f"ConfigMap {namespace}/{name} key {key} is owned by "
                                f"RoutingEntry {owner.namespace}/{owner.name}",
                                owner_uid=owner.uid,
                            )
                            continue
                        takeover = True
                        outcome = Outcome.RECLAIMED
                    elif owner is not None and owner.cluster is None:
                        outcome = Outcome.MIGRATED
                writes[key] = data[key] = value
                results[key] = outcome
            try:
                if cm is None:
                    if writes:
                        body = {
                            "metadata": {"name": name, "labels": dict(MANAGED_BY)},
                            "data": writes,
                        }
                        self.api.create_namespaced_config_map(namespace, body)
                elif writes or not labelled:
                    patch: dict[str, Any] = {
                        "metadata": {"labels": dict(MANAGED_BY)},
                        "data": writes,
                    }
                    if takeover:
                        patch["metadata"]["resourceVersion"] = cm.metadata.resource_version
                    self.api.patch_namespaced_config_map(name, namespace, patch)
                return results
            except ApiException as exc:
                if exc.status == 409:  # created or changed under us: read again and retry
                    continue
                raise
        raise BackendUnavailable(f"ConfigMap {namespace}/{name} kept changing; will retry")

    def remove(self, namespace: str, key: RoutingKey, owner_uid: str) -> bool:
        """Drop our key (only if we own it); delete the ConfigMap when it is left empty."""
        from kubernetes.client.exceptions import ApiException

        for _ in range(5):
            cm = self._get(namespace, key.configmap_name)
            if cm is None:
                return False
            data = dict(cm.data or {})
            current = data.get(key.configmap_key)
            if current is None:
                return False
            try:
                owner = owner_of(json.loads(current))
            except ValueError:
                owner = None
            if owner is None or owner.uid != owner_uid:  # only what this entry owns
                return False
            del data[key.configmap_key]
            try:
                if data:
                    self.api.replace_namespaced_config_map(
                        key.configmap_name,
                        namespace,
                        {
                            "metadata": {
                                "name": key.configmap_name,
                                "resourceVersion": cm.metadata.resource_version,
                                "labels": cm.metadata.labels,
                            },
                            "data": data,
                        },
                    )
                else:
                    from kubernetes.client import V1DeleteOptions, V1Preconditions

                    self.api.delete_namespaced_config_map(
                        key.configmap_name,
                        namespace,
                        body=V1DeleteOptions(
                            preconditions=V1Preconditions(
                                resource_version=cm.metadata.resource_version
                            )
                        ),
                    )
                return True
            except ApiException as exc:
                if exc.status in (409, 404):
                    continue
                raise
        raise BackendUnavailable(f"ConfigMap {namespace}/{key.configmap_name} kept changing")
