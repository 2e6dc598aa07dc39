"""The gateway's listener (``_listener.open_listener``, Google's ``Watch`` without its per-snapshot
sort) on the real Firestore emulator: a large first load is delivered complete, and a copy kept
from the changes alone stays equal to the collection through adds, modifications and removals
(the documents of each snapshot too, as a set); a document delivered again unchanged (the
emulator resends the whole result set on each write) is not decoded again; an ordered query is
refused, as its order would not be kept.
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


def test_a_document_delivered_again_at_the_same_update_time_is_not_decoded_again(
    gateway: RoutingCollection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud.firestore_v1 import watch

    from engines.routing._watch import UnorderedWatch

    delivered, decoded = [0], [0]
    on_snapshot, decode_dict = UnorderedWatch.on_snapshot, watch._helpers.decode_dict

    def counting_on_snapshot(self: Any, proto: Any) -> None:  # a spy: the real one runs
        delivered[0] += proto is not None and proto._pb.WhichOneof("response_type") == (
            "document_change"
        )
        on_snapshot(self, proto)

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        decoded[0] += 1
        return decode_dict(*args, **kwargs)

    monkeypatch.setattr(UnorderedWatch, "on_snapshot", counting_on_snapshot)
    monkeypatch.setattr(watch._helpers, "decode_dict", counting_decode)
    truth = {f"doc-{i:03d}": {"env": "prod", "n": i} for i in range(300)}
    _write(gateway, truth)
    mirror = Mirror()
    listener = gateway.listen(mirror.on_snapshot)
    try:
        wait_for(lambda: mirror.equals(truth), timeout=60, what="the first snapshot")
        assert decoded[0] == 300
        delivered[0] = decoded[0] = 0
        gateway.client.collection(gateway.name).document("doc-007").update({"n": -7})
        truth["doc-007"] = {"env": "prod", "n": -7}
        wait_for(lambda: mirror.equals(truth), timeout=60, what="the change")
        assert decoded[0] == 1, f"{decoded[0]} documents decoded for one change"
        # What the skip is for: the emulator sends every document of the query again.
        assert delivered[0] > 1, "the emulator no longer resends the result set on a write"
        assert mirror.snapshot_ids_match and listener.alive
    finally:
        listener.close()


def test_an_ordered_query_is_refused_naming_why(gateway: RoutingCollection) -> None:
    query = gateway.client.collection(gateway.name).order_by("n")
    with pytest.raises(ValueError, match="unordered"):
        open_listener(query, lambda *_: None, gateway.name, lambda _why: None)
