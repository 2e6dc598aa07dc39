"""A raw write of a routing entry's own document -> a raw query listener sees it (not a floor part).

The floor's write -> snapshot writes a one-field document and listens to that document. A switch
writes the entry's document (every field of ``RoutingRecord.to_document()``) and the app listens
to a query on ``env``. Both switch benchmarks print this hop beside the floor, not in it: the
difference from the floor's hop is what the document and the query cost on this store, with no
project code in between (a plain client ``set``, Google's listener).
"""

from __future__ import annotations

import threading
import time
import uuid

from engines.routing.model import RoutingRecord

__all__ = ["EntryHop"]

TIMEOUT_S = 30.0


class EntryHop:
    """Raw write of a routing entry's document -> a raw query listener on ``env`` sees it, ms.

    No project code in between: a plain client ``set`` of ``record.to_document()`` (plus a
    counter) and Google's listener on a query like the registry's."""

    def __init__(self, project: str) -> None:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        self._client = firestore.Client(project=project)
        self._collection = self._client.collection(f"floor-entry-{uuid.uuid4().hex[:8]}")
        self._seen: dict[int, float] = {}
        self._cond = threading.Condition()
        self._n = 0
        query = self._collection.where(filter=FieldFilter("env", "==", "prod"))
        self._watch = query.on_snapshot(self._on_snapshot)

    def _on_snapshot(self, docs: object, changes: list[object], read_time: object) -> None:
        now = time.perf_counter()
        with self._cond:
            for change in changes:
                data = change.document.to_dict() or {}  # type: ignore[attr-defined]
                self._seen.setdefault(int(data.get("n", -1)), now)
            self._cond.notify_all()

    def sample(self, record: RoutingRecord) -> float:
        self._n += 1
        n = self._n
        start = time.perf_counter()
        self._collection.document(record.key.document_id).set({**record.to_document(), "n": n})
        with self._cond:
            if not self._cond.wait_for(lambda: n in self._seen, timeout=TIMEOUT_S):
                raise TimeoutError(f"the raw write of the entry {n} was not seen")
            return (self._seen.pop(n) - start) * 1000

    def close(self) -> None:
        self._watch.unsubscribe()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]
