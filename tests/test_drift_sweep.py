"""The drift sweep itself, in-process, against the real API server and Firestore emulator.

The sweep reads RoutingEntries a page at a time; here a page holds two entries, so six entries
span three pages. What it must still get right across pages: only the drifted entry is
requeued (not one that synced after the sweep read the projections), a projection whose entry
is on a later page is never taken for an orphan, and a projection whose entry is gone is.
The sweep's list also prunes the operator's identity claims, and a claimant is checked with the
API server before it can make another entry lose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from operator_harness import Entries, entry
from routing_operator import claims as claims_module
from routing_operator.projections import ConfigMapProjection, FirestoreProjection
from routing_operator.reconciler import DriftSweeper, Peering, Reconciler

from engines.routing.model import RoutingRecord, Source, parse_spec


@pytest.fixture
def api(kube_cluster: Any) -> Iterator[client.ApiClient]:
    with kube_cluster.api_client() as api:
        yield api


def reconciler(api: client.ApiClient, fs_client: Any, collection: str) -> Reconciler:
    """An in-process reconciler on the real API server (no kopf around it)."""
    return Reconciler(
        firestore=FirestoreProjection(fs_client, collection),
        configmaps=ConfigMapProjection(client.CoreV1Api(api)),
        custom_api=client.CustomObjectsApi(api),
        collection=collection,
        workers=2,
    )


def synced(
    entries: Entries, obj: dict[str, Any], when: str = "2026-01-01T00:00:00Z"
) -> RoutingRecord:
    """Mark an entry Ready=True (since ``when``) the way the operator would; its record."""
    meta = obj["metadata"]
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "message": "synced",
        "lastTransitionTime": when,
    }
    entries.api.patch_namespaced_custom_object_status(
        "routing.engines.io", "v1alpha1", entries.ns, "routingentries", meta["name"],
        {"status": {"conditions": [ready], "observedGeneration": meta["generation"]}},
    )  # fmt: skip
    return RoutingRecord.from_spec(
        parse_spec(obj["spec"]),
        generation=int(meta["generation"]),
        source=Source(namespace=entries.ns, name=meta["name"], uid=meta["uid"]),
    )


def test_a_paged_sweep_finds_exactly_the_drifted_entry_and_the_orphan(
    api: client.ApiClient,
    firestore_emulator: Any,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(claims_module, "PAGE", 2)
    collection = f"routing_{uuid.uuid4().hex[:8]}"
    fs_client = firestore_emulator.client()
    rec = reconciler(api, fs_client, collection)
    entries = Entries(api, namespace)
    kinds = ["kpi", "seo", "budget", "maybes", "firearms"]
    records = [synced(entries, entries.create(entry(f"e-{k}", kind=k))) for k in kinds]
    for record in records:
        rec.firestore.ensure(record, rec.owner_alive)
    rec.configmaps.ensure_many(namespace, records[0].key.configmap_name, records, rec.owner_alive)
    # drift: one document edited out of band
    fs_client.collection(collection).document(records[3].key.document_id).update(
        {"backend": "memory"}
    )
    # an orphan: a document whose entry no longer exists
    gone = RoutingRecord.from_spec(
        parse_spec(entry("gone", kind="video_timeline")["spec"]),
        source=Source(namespace=namespace, name="gone", uid=str(uuid.uuid4())),
    )
    rec.firestore.ensure(gone, rec.owner_alive)

    # synced a moment ago, projections not seen yet: the sweep must not take it for drift
    just_now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    synced(
        entries,
        entries.create(entry("e-new", kind="seo", tenant="other")),
        f"{just_now:%Y-%m-%dT%H:%M:%SZ}",
    )

    sweep = DriftSweeper(rec, [namespace]).find_stale()

    assert [c.name for c in sweep.stale] == ["e-maybes"]
    assert [key.document_id for key, _ in sweep.orphan_docs] == [gone.key.document_id]
    assert sweep.orphan_keys == []
    listed = {o["metadata"]["uid"] for o in entries.api.list_namespaced_custom_object(
        "routing.engines.io", "v1alpha1", namespace, "routingentries")["items"]}  # fmt: skip
    assert sweep.listed == listed and len(listed) == 6  # every page, not just the first

    # the sweep's list prunes the claims: a claimant observed before it and not listed is gone
    ghost = {"namespace": namespace, "name": "ghost", "uid": str(uuid.uuid4()),
             "creationTimestamp": "2020-01-01T00:00:00Z"}  # fmt: skip
    rec.claims.observe(ghost, entry("ghost", kind="maybes")["spec"])
    assert rec.claims.winner(records[3].key.document_id).name == "ghost"  # type: ignore[union-attr]
    rec.claims.begin_list()
    sweep = DriftSweeper(rec, [namespace]).find_stale()
    assert [c.name for c in rec.claims.prune(sweep.listed)] == ["ghost"]
    assert rec.claims.winner(records[3].key.document_id) is None


def test_before_reporting_conflict_a_winner_the_api_server_no_longer_has_is_forgotten(
    api: client.ApiClient, namespace: str
) -> None:
    """The claims can hold an entry deleted while this replica did not watch (a paused standby):
    it must not make a live entry lose. A real older rival still wins."""
    rec = reconciler(api, None, "unused")  # Firestore is never reached here
    entries = Entries(api, namespace)
    rival = entries.create(entry("a-rival", kind="kpi"))
    mine = entries.create(entry("b-mine", kind="kpi"))
    document_id = parse_spec(mine["spec"]).key.document_id
    ghost = {"namespace": namespace, "name": "ghost", "uid": str(uuid.uuid4()),
             "creationTimestamp": "2020-01-01T00:00:00Z"}  # fmt: skip
    for claimant in (ghost, rival["metadata"], mine["metadata"]):
        rec.claims.observe(claimant, mine["spec"])
    assert rec.claims.winner(document_id).name == "ghost"  # type: ignore[union-attr]

    best = asyncio.run(rec._verified_winner(document_id, mine["metadata"]["uid"]))

    assert best is not None and best.name == "a-rival"
    assert sorted(c.name for c in rec.claims.of(document_id)) == ["a-rival", "b-mine"]
    entries.api.delete_namespaced_custom_object(
        "routing.engines.io", "v1alpha1", namespace, "routingentries", "a-rival"
    )
    # no operator runs here, so no finalizer holds it: it is gone at once
    best = asyncio.run(rec._verified_winner(document_id, mine["metadata"]["uid"]))
    assert best is not None and best.name == "b-mine"
    assert [c.name for c in rec.claims.of(document_id)] == ["b-mine"]


def test_a_replica_yields_to_a_live_peer_of_higher_or_equal_priority() -> None:
    """kopf's rule, read from a KopfPeering status, decides whether a replica's drift sweeps
    run: never paused by itself, by a lower priority, or by a peer past its lifetime."""
    now = dt.datetime.now(dt.UTC)
    me = Peering("routing-operator", "pod-a", 100)

    def peer(priority: int, seen_ago: float = 0, lifetime: int = 60) -> dict[str, Any]:
        seen = (now - dt.timedelta(seconds=seen_ago)).isoformat()
        return {"priority": priority, "lifetime": lifetime, "lastseen": seen}

    assert me.yields_to({"pod-a": peer(100)}) is None
    assert me.yields_to({"pod-a": peer(100), "pod-b": peer(50)}) is None
    assert me.yields_to({"pod-a": peer(100), "pod-b": peer(200)}) == "pod-b"
    assert me.yields_to({"pod-b": peer(100)}) == "pod-b"  # a tie pauses both, as kopf does
    assert me.yields_to({"pod-b": peer(200, seen_ago=120)}) is None  # dead
    assert me.yields_to({"pod-b": {"priority": "x"}, "pod-c": "garbage"}) is None
