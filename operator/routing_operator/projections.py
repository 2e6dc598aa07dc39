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

A new Firestore document is written with ``create()`` (atomic: it fails if the id exists);
replacing an existing one runs in a transaction (read owner, then write). Calls carry short
timeouts and no client-side retry, so
an unreachable emulator or service surfaces as ``BackendUnavailable`` within seconds instead of
hanging a handler. ConfigMap writes use the object's ``resourceVersion`` (optimistic concurrency)
and retry on 409.
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
        wanted = record.to_document()
        mine = record.source
        if mine is None or not self.cluster or mine.cluster != self.cluster:
            raise ValueError(f"{record.key.document_id}: a record to write names this cluster")
        current: dict[str, Any] | None = None
        if not fresh:
            # Fast probe outside the transaction: BeginTransaction retries for a long time on an
            # unreachable service, a bare read with retry=None fails within the timeout.
            current = self.read(record.key)
            if current is not None and strip_server_fields(current) == wanted:
                return Outcome.UNCHANGED, None
        if current is None:
            # The common first sync: create() is atomic (fails if the id exists), one RPC.
            try:
                ref.create(
                    {**wanted, UPDATED_AT: firestore.SERVER_TIMESTAMP},
                    timeout=_TIMEOUT,
                    retry=None,
                )
                return Outcome.WRITTEN, None
            except gexc.AlreadyExists:
                # It exists (written meanwhile, or by an earlier attempt of ours): decide
                # ownership and equality in the transaction below.
                pass
            except _vendor_errors() as exc:
                raise BackendUnavailable(
                    f"Firestore write of {record.key.document_id} failed: {exc}"
                ) from exc

        @firestore.transactional
        def write(txn: Any) -> tuple[Outcome, Source | None]:
            snap = ref.get(transaction=txn, timeout=_TIMEOUT, retry=None)
            current = snap.to_dict() if snap.exists else None
            decided: tuple[Outcome, Source | None] = (Outcome.WRITTEN, None)
            if current is not None:
                decided = self._decide(
                    record.key.document_id, current, wanted, mine, owner_alive, adopt
                )
                if decided[0] is Outcome.UNCHANGED:
                    return decided
            txn.set(ref, {**wanted, UPDATED_AT: firestore.SERVER_TIMESTAMP})
            return decided

        try:
            return write(self.client.transaction(max_attempts=3))  # type: ignore[no-any-return]
        except _vendor_errors() as exc:
            raise BackendUnavailable(
                f"Firestore write of {record.key.document_id} failed: {exc}"
            ) from exc
        except ValueError as exc:  # the client's "transaction failed after N attempts"
            raise BackendUnavailable(f"Firestore transaction failed: {exc}") from exc

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
