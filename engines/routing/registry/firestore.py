"""Routing registry backed by Firestore: the store the operator writes and engines pods read.

Layout (§5): collection ``routing_entries`` (configurable), document id
``{env}:{tenant}:{project}:{resource_kind}``. A snapshot listener keeps the in-process table in
step with the collection, so ``resolve`` never waits on the network and a change made anywhere
(the operator, another pod) reaches subscribers within one listener round-trip.

The Google client is imported here only; its exceptions are translated into the routing error
tree at this boundary.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import BackendUnavailable, ConfigMissing, EntryExists, InvalidRouting, RoutingKey
from ..model import RoutingRecord
from .base import RoutingRegistry

__all__ = ["DEFAULT_COLLECTION", "FirestoreRoutingRegistry", "record_from_snapshot"]

log = logging.getLogger(__name__)
DEFAULT_COLLECTION = "routing_entries"
_SERVER_FIELDS = ("updated_at",)


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
    ) -> None:
        super().__init__()
        if client is None:
            from google.cloud import firestore

            client = firestore.Client(project=project, database=database)
        self._client = client
        self.collection_name = collection
        self.env = env
        self._watch: Any | None = None
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        self.invalid: dict[str, str] = {}
        """Stored documents that failed validation, by document id, with the reason."""

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
            if self._watch is None:
                self._watch = self._query().on_snapshot(self._on_snapshot)

    def _on_snapshot(self, docs: list[Any], changes: list[Any], read_time: Any) -> None:
        # Apply the delta only: a change to one of 10,000 entries must not re-parse the rest.
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
            except InvalidRouting as exc:
                if self.invalid.get(doc.id) != str(exc):
                    log.error("ignoring invalid routing document %s: %s", doc.id, exc)
                self.invalid[doc.id] = str(exc)
                key = _key_from_id(doc.id)
                if key is not None:  # an entry that became invalid no longer resolves
                    self.table.remove(key)
                continue
            self.invalid.pop(doc.id, None)
            self.table.upsert(record)
        self._loaded.set()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._loaded.wait(timeout)

    @property
    def healthy(self) -> bool:
        watch = self._watch
        return watch is not None and not getattr(watch, "_closed", False)

    def close(self) -> None:
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.unsubscribe()
