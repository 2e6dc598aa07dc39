"""The drift sweep itself, in-process, against the real API server and Firestore emulator.

The sweep reads RoutingEntries a page at a time; here a page holds two entries, so six entries
span three pages. What it must still get right across pages: only the drifted entry is
requeued (not one that synced after the sweep read the projections), a projection whose entry
is on a later page is never taken for an orphan, and a projection whose entry is gone is.
The sweep's list also prunes the operator's identity claims, and a claimant is checked with the
API server before it can make another entry lose. Clusters sharing the collection: another
cluster's document is never an orphan here, whatever its owner, and an entry in Conflict with one
is not requeued; a kept orphan of env prod is counted, one of env test removed.
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
from routing_operator.drift_sweep import DriftSweeper
from routing_operator.peering import Peering
from routing_operator.projections import ConfigMapProjection
from routing_operator.reconciler import Reconciler

from engines.routing.collection import Outcome, RoutingCollection
from engines.routing.errors import OwnershipConflict
from engines.routing.model import RoutingRecord, Source, parse_spec


@pytest.fixture
def api(kube_cluster: Any) -> Iterator[client.ApiClient]:
    with kube_cluster.api_client() as api:
        yield api


CLUSTER = "cluster-a"


def reconciler(api: client.ApiClient, fs_client: Any, collection: str) -> Reconciler:
    """An in-process reconciler on the real API server (no kopf around it)."""
    return Reconciler(
        firestore=RoutingCollection(fs_client, name=collection, cluster=CLUSTER),
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
        source=Source(cluster=CLUSTER, namespace=entries.ns, name=meta["name"], uid=meta["uid"]),
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
    # A fresh emulator's first answer can take longer than the projections' 5 s timeout on a
    # loaded machine: the first request goes through the client's own retries.
    fs_client.collection(collection).document("warm-up").get()
    rec = reconciler(api, fs_client, collection)
    entries = Entries(api, namespace)
    kinds = ["kpi", "seo", "budget", "maybes", "firearms"]
    records = [synced(entries, entries.create(entry(f"e-{k}", kind=k))) for k in kinds]
    for record in records:
        rec.firestore.write(record, rec.owner_alive)
    rec.configmaps.ensure_many(namespace, records[0].key.configmap_name, records, rec.owner_alive)
    # drift: one document edited out of band
    fs_client.collection(collection).document(records[3].key.document_id).update(
        {"backend": "memory"}
    )
    # an orphan: a document whose entry no longer exists
    gone = RoutingRecord.from_spec(
        parse_spec(entry("gone", kind="video_timeline")["spec"]),
        source=Source(cluster=CLUSTER, namespace=namespace, name="gone", uid=str(uuid.uuid4())),
    )
    rec.firestore.write(gone, rec.owner_alive)

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


def test_a_document_is_written_only_when_free_this_clusters_or_adopted(
    firestore_emulator: Any,
) -> None:
    """The ownership table of one document id shared by two clusters: the entry's own document
    from before cluster identities is taken over silently, an orphan of this cluster is taken
    back, a live entry's is a Conflict, another cluster's is a Conflict naming that cluster and
    its owner, and adopting it on purpose replaces it."""
    collection = f"routing_{uuid.uuid4().hex[:8]}"
    fs_client = firestore_emulator.client()
    mine = RoutingCollection(fs_client, name=collection, cluster=CLUSTER)
    theirs = RoutingCollection(fs_client, name=collection, cluster="cluster-b")
    spec = parse_spec(entry("x", kind="kpi")["spec"])

    def record(cluster: str, name: str, uid: str) -> RoutingRecord:
        source = Source(cluster=cluster, namespace="ns", name=name, uid=uid)
        return RoutingRecord.from_spec(spec, source=source)

    ref = fs_client.collection(collection).document(spec.key.document_id)
    me = record(CLUSTER, "me", str(uuid.uuid4()))
    legacy = me.to_document()
    legacy["source"] = {k: v for k, v in legacy["source"].items() if k != "cluster"}
    ref.set(legacy)
    assert mine.write(me, lambda _: True) == (Outcome.MIGRATED, None)
    assert ref.get().to_dict()["source"]["cluster"] == CLUSTER
    assert mine.write(me, lambda _: True) == (Outcome.UNCHANGED, None)

    # another cluster may not write it, adopt or not, unless it adopts on purpose
    other = record("cluster-b", "other", str(uuid.uuid4()))
    with pytest.raises(OwnershipConflict) as refused:
        theirs.write(other, lambda _: False)
    assert f"belongs to cluster {CLUSTER} (RoutingEntry ns/me there); nothing written" in str(
        refused.value
    )
    assert 'routing.engines.io/adopt="true"' in str(refused.value)
    assert ref.get().to_dict()["source"]["name"] == "me"
    outcome, replaced = theirs.write(other, lambda _: False, adopt=True)
    assert outcome is Outcome.ADOPTED and replaced is not None and replaced.name == "me"
    assert ref.get().to_dict()["source"] == other.to_document()["source"]

    # back in this cluster: that document is another's now, whether its owner lives or not
    with pytest.raises(OwnershipConflict, match="belongs to cluster cluster-b"):
        mine.write(me, lambda _: False)
    assert mine.remove(spec.key, other.source.uid) is False  # type: ignore[union-attr]
    assert ref.get().exists

    # this cluster's own: a live owner is a Conflict, a gone one an orphan to take back
    ref.set(me.to_document())
    successor = record(CLUSTER, "successor", str(uuid.uuid4()))
    with pytest.raises(OwnershipConflict, match="owned by RoutingEntry ns/me"):
        mine.write(successor, lambda _: True)
    outcome, replaced = mine.write(successor, lambda _: False)
    assert outcome is Outcome.RECLAIMED and replaced is not None and replaced.name == "me"

    # no cluster recorded and an owner that is not here: its cluster is unknown, so not ours
    unknown = me.to_document()
    unknown["source"] = {"namespace": "ns", "name": "elsewhere", "uid": str(uuid.uuid4())}
    ref.set(unknown)
    with pytest.raises(OwnershipConflict, match="records no cluster"):
        mine.write(successor, lambda _: False)


def test_a_sweep_judges_only_its_own_clusters_documents(
    api: client.ApiClient, firestore_emulator: Any, namespace: str
) -> None:
    """Two clusters share the collection (the other one's entries are not on this API server):
    the other cluster's documents and those of no recorded cluster are never orphans here; an
    entry whose document the other cluster adopted is requeued while it reports Ready (so it
    turns to Conflict), then no more (no take-back); this cluster's orphans are kept in env
    prod and counted, removed in env test."""
    from prometheus_client import REGISTRY

    collection = f"routing_{uuid.uuid4().hex[:8]}"
    fs_client = firestore_emulator.client()
    rec = reconciler(api, fs_client, collection)
    theirs = RoutingCollection(fs_client, name=collection, cluster="cluster-b")
    entries = Entries(api, namespace)

    def elsewhere(kind: str, cluster: str | None, env: str = "prod") -> RoutingRecord:
        record = RoutingRecord.from_spec(
            parse_spec(entry("x", kind=kind, env=env)["spec"]),
            source=Source(cluster=cluster, namespace=namespace, name=kind, uid=str(uuid.uuid4())),
        )
        document = record.to_document()
        if cluster is None:
            del document["source"]["cluster"]
        fs_client.collection(collection).document(record.key.document_id).set(document)
        return record

    their_doc = elsewhere("seo", "cluster-b")
    unmarked = elsewhere("budget", None)
    my_orphan = elsewhere("maybes", CLUSTER)
    my_test_orphan = elsewhere("firearms", CLUSTER, env="test")

    adopted = synced(entries, entries.create(entry("e-kpi", kind="kpi")))
    rec.firestore.write(adopted, rec.owner_alive)
    rec.configmaps.ensure_many(namespace, adopted.key.configmap_name, [adopted], rec.owner_alive)
    other = RoutingRecord.from_spec(
        parse_spec(entry("x", kind="kpi")["spec"]),
        source=Source(cluster="cluster-b", namespace="far", name="kpi", uid=str(uuid.uuid4())),
    )
    assert theirs.write(other, lambda _: True, adopt=True)[0] is Outcome.ADOPTED

    sweeper = DriftSweeper(rec, [namespace])
    sweep = sweeper.find_stale()
    assert [c.name for c in sweep.stale] == ["e-kpi"]  # Ready, but its document is gone
    assert sorted(key.document_id for key, _ in sweep.orphan_docs) == sorted(
        [my_orphan.key.document_id, my_test_orphan.key.document_id]
    )

    # once it reports Conflict, it stays so: no requeue while the other cluster holds it
    conflict = {"type": "Ready", "status": "False", "reason": "Conflict", "message": "held",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    entries.api.patch_namespaced_custom_object_status(
        "routing.engines.io", "v1alpha1", namespace, "routingentries", "e-kpi",
        {"status": {"conditions": [conflict]}},
    )  # fmt: skip
    sweep = sweeper.find_stale()
    assert sweep.stale == []
    asyncio.run(sweeper._handle_orphans(sweep))

    stored = {s.id: s.to_dict() for s in fs_client.collection(collection).stream()}
    assert stored[their_doc.key.document_id]["source"]["cluster"] == "cluster-b"
    assert unmarked.key.document_id in stored
    assert stored[adopted.key.document_id]["source"]["cluster"] == "cluster-b"
    assert my_orphan.key.document_id in stored, "an orphan of env prod is kept"
    assert my_test_orphan.key.document_id not in stored, "an orphan of env test is removed"
    assert REGISTRY.get_sample_value("routing_operator_orphans", {"env": "prod"}) == 1

    # the orphan gone (pruned), the gauge says so at the next sweep
    fs_client.collection(collection).document(my_orphan.key.document_id).delete()
    asyncio.run(sweeper._handle_orphans(sweeper.find_stale()))
    assert REGISTRY.get_sample_value("routing_operator_orphans", {"env": "prod"}) == 0
