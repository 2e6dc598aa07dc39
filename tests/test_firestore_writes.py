"""How the operator writes an entry's Firestore document, against the real Firestore emulator.

A change of a document this entry already wrote is one write conditioned on the update time of
that write (no read, no transaction). What that must never lose: a document edited, adopted by
another cluster or deleted since this operator last wrote it is read and decided again (the
conditioned write fails), so an adopted document is a Conflict and never overwritten; and the
write replaces the whole document, so nothing of the previous backend's configuration stays.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from operator_harness import entry

from engines.routing.collection import Outcome, RoutingCollection
from engines.routing.errors import OwnershipConflict
from engines.routing.model import RoutingRecord, Source, parse_spec

CLUSTER = "cluster-a"


def record(spec: dict[str, Any], source: Source, generation: int = 1) -> RoutingRecord:
    return RoutingRecord.from_spec(parse_spec(spec), generation=generation, source=source)


@pytest.fixture
def setup(firestore_emulator: Any, collection: str) -> tuple[Any, RoutingCollection, Source]:
    fs_client = firestore_emulator.client()
    mine = RoutingCollection(fs_client, name=collection, cluster=CLUSTER)
    source = Source(cluster=CLUSTER, namespace="ns", name="me", uid=str(uuid.uuid4()))
    return fs_client.collection(collection), mine, source


def test_a_changed_spec_replaces_the_whole_document_of_the_entry(setup: Any) -> None:
    """From Redis (url, db) to Firestore (collection): no field of the old configuration
    survives, and every later change is written too."""
    docs, mine, me = setup
    redis = entry("x", kind="rate_limit", backend="redis", settings={"url": "redis://r:6379/3"})
    first = record(redis["spec"], me)
    assert mine.write(first, lambda _: True, fresh=True) == (Outcome.WRITTEN, None)
    firestore = entry("x", kind="rate_limit")
    second = record(firestore["spec"], me, generation=2)
    assert mine.write(second, lambda _: True) == (Outcome.WRITTEN, None)
    stored = docs.document(second.key.document_id).get().to_dict()
    stored.pop("updated_at")
    assert stored == second.to_document()
    assert mine.write(second, lambda _: True) == (Outcome.UNCHANGED, None)
    third = record(redis["spec"], me, generation=3)
    assert mine.write(third, lambda _: True) == (Outcome.WRITTEN, None)
    assert docs.document(third.key.document_id).get().to_dict()["config"] == first.config


def test_a_document_adopted_by_another_cluster_since_the_last_write_is_never_overwritten(
    setup: Any, firestore_emulator: Any, collection: str
) -> None:
    docs, mine, me = setup
    theirs = RoutingCollection(firestore_emulator.client(), name=collection, cluster="cluster-b")
    spec = entry("x", kind="kpi")["spec"]
    mine.write(record(spec, me), lambda _: True, fresh=True)
    other = Source(cluster="cluster-b", namespace="ns", name="other", uid=str(uuid.uuid4()))
    assert theirs.write(record(spec, other), lambda _: True, adopt=True)[0] is Outcome.ADOPTED
    changed = record(entry("x", kind="kpi", settings={"collection": "moved"})["spec"], me, 2)
    with pytest.raises(OwnershipConflict, match="belongs to cluster cluster-b"):
        mine.write(changed, lambda _: True)
    assert docs.document(changed.key.document_id).get().to_dict()["source"]["name"] == "other"


def test_a_document_edited_or_deleted_since_the_last_write_is_read_and_rewritten(
    setup: Any,
) -> None:
    docs, mine, me = setup
    spec = entry("x", kind="kpi")["spec"]
    first = record(spec, me)
    mine.write(first, lambda _: True, fresh=True)
    ref = docs.document(first.key.document_id)
    ref.update({"config": {"collection": "edited out of band"}})
    assert mine.write(first, lambda _: True) == (Outcome.WRITTEN, None)
    assert ref.get().to_dict()["config"] == first.config
    changed = record(entry("x", kind="kpi", settings={"collection": "moved"})["spec"], me, 2)
    ref.delete()
    assert mine.write(changed, lambda _: True) == (Outcome.WRITTEN, None)
    assert ref.get().to_dict()["config"] == changed.config


def test_an_orphan_written_by_a_deleted_entry_is_reclaimed_by_its_successor(setup: Any) -> None:
    """What this operator remembers of a document is its writer's: a successor with the same
    identity still meets the previous owner (taken back only if it is gone)."""
    _, mine, me = setup
    spec = entry("x", kind="kpi")["spec"]
    mine.write(record(spec, me), lambda _: True, fresh=True)
    successor = Source(cluster=CLUSTER, namespace="ns", name="next", uid=str(uuid.uuid4()))
    changed = record(entry("x", kind="kpi", settings={"collection": "moved"})["spec"], successor)
    with pytest.raises(OwnershipConflict, match="owned by RoutingEntry ns/me"):
        mine.write(changed, lambda _: True)
    outcome, replaced = mine.write(changed, lambda _: False)
    assert outcome is Outcome.RECLAIMED and replaced == me
