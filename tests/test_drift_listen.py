"""Drift repaired by listening, against the real stack (kube-apiserver + etcd, Firestore
emulator), with the full sweep set far away (an hour) so that only the listeners can repair.

Covers: an out-of-band edit and an out-of-band deletion of a Firestore document, and of a
ConfigMap key and a whole ConfigMap, each repaired with a ``DriftRepaired`` Event and the repair
metric and no sweep; another cluster's documents in the same collection are not delivered to
this operator's listener and are left as they are; a Firestore emulator restart (the listener's
stream fails) is survived: the listener is established again and repairs again. And the
identity a ConfigMap key stands for is known even when its value was edited out of shape. And a
burst of the operator's own writes and removals is never taken for drift (no requeue).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import Entries, OperatorProcess, entry
from routing_operator.drift_configmaps import key_digests

from devstack import free_port
from devstack.testing import wait_for
from engines.routing.contract import configmap_value, digest
from engines.routing.model import RoutingRecord, parse_spec

CLUSTER = "cluster-a"
DOC = "prod:acme:*:kpi"
CM, KEY = "routing.prod.acme", "acme._.kpi.json"
REPAIRS = "routing_operator_drift_repairs_total"
SWEEPS = "routing_operator_drift_sweeps_total"
UP = "routing_operator_drift_listener_up"
FAILURES = "routing_operator_drift_listener_failures_total"
DELIVERED = "routing_operator_drift_listener_documents_total"
BURST_KINDS = ("kpi", "seo", "budget", "maybes", "firearms", "page_content", "video_timeline")
REPAIR_DEADLINE = 15.0
"""Far below the sweep period: only a listener can meet it (the figures are in bench_drift)."""


@pytest.fixture
def operator(
    kube_cluster: Any, firestore_emulator: Any, namespace: str, collection: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        kube_cluster.kubeconfig, namespace, collection, tmp_path,
        "--drift-period", "3600", "--cluster-id", CLUSTER,
        metrics_port=free_port(),
    ).start()  # fmt: skip
    try:
        yield op
    finally:
        op.stop()
        print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")


def doc(fs: Any, collection: str) -> dict[str, Any] | None:
    snap = fs.collection(collection).document(DOC).get()
    return snap.to_dict() if snap.exists else None


def cm_backend(entries: Entries) -> str | None:
    value = (entries.configmap_data(CM) or {}).get(KEY)
    return json.loads(value).get("backend") if value else None


def synced_and_listening(op: OperatorProcess, entries: Entries) -> None:
    entries.create(entry("acme-kpi"))
    entries.wait_reason("acme-kpi", "Synced", "True")
    for listener in ("firestore", "configmap"):
        wait_for(
            lambda listener=listener: op.metric(UP, {"listener": listener}) == 1,  # type: ignore[misc]
            timeout=60,
            what=f"the {listener} drift listener to be up",
        )


def drift_events(entries: Entries) -> int:
    events = entries.core.list_namespaced_event(
        entries.ns, field_selector="involvedObject.name=acme-kpi"
    ).items
    return sum(e.count or 1 for e in events if e.reason == "DriftRepaired")


def test_an_out_of_band_firestore_edit_and_deletion_are_repaired_by_the_listener(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    synced_and_listening(operator, entries)
    ref = fs.collection(collection).document(DOC)

    ref.update({"backend": "memory"})
    wait_for(
        lambda: (doc(fs, collection) or {}).get("backend") == "firestore",
        timeout=REPAIR_DEADLINE,
        what="the edited document repaired",
    )
    wait_for(
        lambda: operator.metric(REPAIRS, {"projection": "firestore"}) == 1,
        timeout=REPAIR_DEADLINE,
        what="the repair counted",
    )

    ref.delete()
    wait_for(lambda: doc(fs, collection) is not None, timeout=REPAIR_DEADLINE, what="restored")
    wait_for(
        lambda: operator.metric(REPAIRS, {"projection": "firestore"}) == 2,
        timeout=REPAIR_DEADLINE,
        what="the second repair counted",
    )
    wait_for(lambda: drift_events(entries) >= 2, timeout=REPAIR_DEADLINE, what="two Events")
    assert operator.metric(REPAIRS, {"projection": "configmap"}) == 0
    assert operator.metric(SWEEPS) == 0, "repaired by a sweep, not by the listener"
    assert "drift: the firestore projection of" in operator.log()


def test_an_out_of_band_configmap_edit_and_deletion_are_repaired_by_the_watch(
    operator: OperatorProcess, entries: Entries
) -> None:
    synced_and_listening(operator, entries)

    entries.core.patch_namespaced_config_map(CM, entries.ns, {"data": {KEY: "{}"}})
    wait_for(lambda: cm_backend(entries) == "firestore", timeout=REPAIR_DEADLINE, what="edit")
    entries.core.patch_namespaced_config_map(CM, entries.ns, {"data": {KEY: None}})
    wait_for(lambda: cm_backend(entries) == "firestore", timeout=REPAIR_DEADLINE, what="key")
    entries.core.delete_namespaced_config_map(CM, entries.ns)
    wait_for(lambda: cm_backend(entries) == "firestore", timeout=REPAIR_DEADLINE, what="whole CM")

    wait_for(
        lambda: operator.metric(REPAIRS, {"projection": "configmap"}) == 3,
        timeout=REPAIR_DEADLINE,
        what="three repairs counted",
    )
    wait_for(lambda: drift_events(entries) >= 3, timeout=REPAIR_DEADLINE, what="three Events")
    assert operator.metric(REPAIRS, {"projection": "firestore"}) == 0
    assert operator.metric(SWEEPS) == 0, "repaired by a sweep, not by the watch"


def test_another_clusters_documents_are_not_listened_to_nor_touched(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    """Cluster B's document sits in the same collection; this operator's listener query names
    its own cluster, so B's edits are never delivered to it (each delivered document is a read
    Firestore bills), and B's document stays exactly as B wrote it."""
    foreign_id = "prod:acme:*:seo"
    foreign = fs.collection(collection).document(foreign_id)
    theirs = {
        "tenant": "acme", "env": "prod", "project": "*", "resource_kind": "seo",
        "backend": "firestore", "config": {"collection": "theirs"}, "secret_ref": None,
        "revision": "r1", "generation": 1, "schema_version": 1,
        "source": {"cluster": "cluster-b", "namespace": entries.ns, "name": "x", "uid": "u-b"},
    }  # fmt: skip
    foreign.set(theirs)
    synced_and_listening(operator, entries)
    # the delivered count settles: the first load, then the entry's own write
    delivered = wait_for(lambda: operator.metric(DELIVERED) or None, timeout=30, what="loaded")

    for revision in ("r2", "r3", "r4"):
        foreign.update({"revision": revision, "backend": "memory"})
    fs.collection(collection).document(DOC).update({"backend": "memory"})
    wait_for(
        lambda: (doc(fs, collection) or {}).get("backend") == "firestore",
        timeout=REPAIR_DEADLINE,
        what="this cluster's document repaired",
    )
    # exactly two deliveries: the out-of-band edit of ours and its repair, none of theirs
    wait_for(
        lambda: operator.metric(DELIVERED) >= delivered + 2,
        timeout=REPAIR_DEADLINE,
        what="the edit and the repair delivered",
    )
    assert operator.metric(DELIVERED) == delivered + 2
    assert foreign.get().to_dict() == {**theirs, "revision": "r4", "backend": "memory"}


def test_the_firestore_listener_is_established_again_after_the_emulator_restarts(
    operator: OperatorProcess, entries: Entries, firestore_emulator: Any, collection: str
) -> None:
    """The emulator restarts empty: the listener's stream fails; it is listened to again (the
    failure logged and counted), what vanished is rewritten, and an edit after that is still
    repaired by listening."""
    synced_and_listening(operator, entries)
    firestore_emulator.stop()
    try:
        wait_for(
            lambda: operator.metric(FAILURES, {"listener": "firestore"}) == 1,
            timeout=60,
            what="the listener's failure counted",
        )
        assert operator.metric(UP, {"listener": "firestore"}) == 0
        assert "drift listener firestore is down" in operator.log()
    finally:
        firestore_emulator.start()
    fs = firestore_emulator.client()
    wait_for(lambda: doc(fs, collection) is not None, timeout=60, what="the document rewritten")
    wait_for(
        lambda: operator.metric(UP, {"listener": "firestore"}) == 1,
        timeout=60,
        what="the listener up again",
    )
    fs.collection(collection).document(DOC).update({"backend": "memory"})
    wait_for(
        lambda: (doc(fs, collection) or {}).get("backend") == "firestore",
        timeout=REPAIR_DEADLINE,
        what="an edit after the restart repaired",
    )
    assert operator.metric(SWEEPS) == 0
    assert "drift listener firestore established again" in operator.log()


def test_a_burst_of_creations_updates_and_deletions_requeues_nothing(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    """The operator's own writes and removals reach both listeners, its Firestore writes first:
    none of them may be taken for drift. Entries are created, then all updated (new
    generation), and a tenant's deleted, at once; then one ConfigMap key is edited out of band
    as a sentinel: it is judged after every check of the burst began, and it is the only
    repair, the only requeue."""
    names = []
    for tenant in ("acme", "beta", "gamma", "delta"):
        for kind in BURST_KINDS:
            name = f"{tenant}-{kind.replace('_', '-')}"
            entries.create(entry(name, tenant=tenant, kind=kind))
            names.append(name)
    for listener in ("firestore", "configmap"):
        wait_for(
            lambda listener=listener: operator.metric(UP, {"listener": listener}) == 1,  # type: ignore[misc]
            timeout=60,
            what=f"the {listener} drift listener to be up",
        )
    for name in names:
        entries.wait_reason(name, "Synced", "True")

    for name in names:
        entries.patch(name, {"spec": {"firestore": {"collection": "moved"}}})
    gone = [name for name in names if name.startswith("delta-")]
    for name in gone:
        entries.delete(name)
    kept = [name for name in names if name not in gone]
    for name in kept:
        entries.wait_reason(name, "Synced", "True")

    def settled() -> bool:
        moved = {
            d.id
            for d in fs.collection(collection).stream()
            if (d.to_dict().get("config") or {}).get("collection") == "moved"
        }
        return len(moved) >= len(kept)

    wait_for(settled, timeout=120, what="every update written")
    wait_for(lambda: all(entries.get(name) is None for name in gone), timeout=60, what="deletions")
    # every write of the burst reached the listener before the sentinel is made
    wait_for(
        lambda: operator.metric(DELIVERED) >= 2 * len(names),
        timeout=60,
        what="the burst's writes delivered to the listener",
    )

    entries.core.patch_namespaced_config_map(CM, entries.ns, {"data": {KEY: "{}"}})
    wait_for(
        lambda: operator.metric(REPAIRS, {"projection": "configmap"}) == 1,
        timeout=REPAIR_DEADLINE,
        what="the sentinel repaired",
    )
    assert operator.metric(REPAIRS, {"projection": "firestore"}) == 0
    assert operator.log().count("drift: the ") == 1, "an own write was taken for drift"
    assert operator.metric(SWEEPS) == 0


def test_a_configmap_key_names_its_identity_even_when_its_value_is_out_of_shape() -> None:
    """The watch compares a key with the document of the same identity, named by the
    ConfigMap's and the key's names, so a value edited into garbage is still compared; a key
    of another shape is not the operator's to judge."""
    record = RoutingRecord.from_spec(parse_spec(entry("x", tenant="acme", kind="seo")["spec"]))
    good = configmap_value(record)
    cm = {
        "metadata": {"name": "routing.prod.acme", "namespace": "ns"},
        "data": {"acme._.seo.json": good, "acme._.kpi.json": "not json", "notes.txt": "hi"},
    }
    assert key_digests(cm) == {
        "acme._.seo.json": (digest(good), "prod:acme:*:seo"),
        "acme._.kpi.json": (digest("not json"), "prod:acme:*:kpi"),
    }
    wildcard = {"metadata": {"name": "routing.test", "namespace": "ns"}, "data": {}}
    wildcard["data"] = {"_._.kpi.json": "{}"}
    assert key_digests(wildcard) == {"_._.kpi.json": (digest("{}"), "test:*:*:kpi")}
