"""The gateway's listener (``_listener.open_listener``, Google's ``Watch`` without its per-snapshot
sort) on the real Firestore emulator: a large first load is delivered complete, and a copy kept
from the changes alone stays equal to the collection through adds, modifications and removals
(the documents of each snapshot too, as a set); an ordered query is refused, as its order would
not be kept.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from devstack.testing import wait_for
from engines.routing._listener import open_listener
from engines.routing.collection import RoutingCollection

pytestmark = pytest.mark.firestore


@pytest.fixture
def gateway(firestore_emulator: Any) -> RoutingCollection:
    return RoutingCollection(name=f"routing_{uuid.uuid4().hex[:10]}")


def _write(gateway: RoutingCollection, docs: dict[str, dict[str, Any]]) -> None:
    col = gateway.client.collection(gateway.name)
    items = list(docs.items())
    for start in range(0, len(items), 500):
        batch = gateway.client.batch()
        for doc_id, fields in items[start : start + 500]:
            batch.set(col.document(doc_id), fields)
        batch.commit()


class Mirror:
    """A copy of the collection built from the first snapshot's documents, then from the
    changes only (what the registry and the drift listener do)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.docs: dict[str, dict[str, Any]] = {}
        self.first: int | None = None
        self.snapshot_ids_match = True

    def on_snapshot(self, docs: list[Any], changes: list[Any], _read_time: Any) -> None:
        with self.lock:
            if self.first is None:
                self.first = len(docs)
                self.docs = {d.id: d.to_dict() for d in docs}
            else:
                for change in changes:
                    doc = change.document
                    if change.type.name == "REMOVED":
                        del self.docs[doc.id]
                    else:
                        self.docs[doc.id] = doc.to_dict()
            self.snapshot_ids_match &= {d.id for d in docs} == set(self.docs)

    def equals(self, truth: dict[str, dict[str, Any]]) -> bool:
        with self.lock:
            return self.docs == truth


def test_a_large_first_load_then_every_change_keeps_a_copy_equal_to_the_collection(
    gateway: RoutingCollection,
) -> None:
    truth = {f"doc-{i:05d}": {"env": "prod", "n": i} for i in range(2000)}
    _write(gateway, truth)
    mirror = Mirror()
    listener = gateway.listen(mirror.on_snapshot)
    col = gateway.client.collection(gateway.name)
    try:
        wait_for(lambda: mirror.first is not None, timeout=120, what="the first snapshot")
        assert mirror.first == 2000
        assert mirror.equals(truth)

        for i in range(0, 30, 3):  # one change at a time: added, modified, removed
            added, modified, removed = f"new-{i:03d}", f"doc-{i:05d}", f"doc-{i + 1:05d}"
            col.document(added).set({"env": "prod", "n": -i})
            truth[added] = {"env": "prod", "n": -i}
            col.document(modified).update({"n": 10_000 + i})
            truth[modified] = {"env": "prod", "n": 10_000 + i}
            col.document(removed).delete()
            del truth[removed]
        changed = {f"doc-{i:05d}": {"env": "prod", "n": 20_000 + i} for i in range(100, 400)}
        _write(gateway, changed)  # many changes in one snapshot or a few
        truth.update(changed)

        wait_for(lambda: mirror.equals(truth), timeout=120, what="the copy equal to the truth")
        assert mirror.snapshot_ids_match
        assert len(listener.watch.doc_map) == len(listener.watch.doc_tree) == len(truth)
        assert listener.alive
    finally:
        listener.close()


def test_an_ordered_query_is_refused_naming_why(gateway: RoutingCollection) -> None:
    query = gateway.client.collection(gateway.name).order_by("n")
    with pytest.raises(ValueError, match="unordered"):
        open_listener(query, lambda *_: None, gateway.name, lambda _why: None)
