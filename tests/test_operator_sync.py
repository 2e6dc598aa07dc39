"""The operator's write path against the real stack (kube-apiserver + etcd, Firestore emulator):
what a synced entry looks like and what its status says.

Covers: create → Firestore document (recording this cluster: kube-system's uid) + ConfigMap key +
Ready=True; a wildcard tenant in the env's ConfigMap; a backend change moves the projections and
the revision with observedGeneration == generation; drift repair of both projections; an entry
the CRD could not catch → InvalidConfig and nothing written; ``kubectl get rte`` showing a
synced, a conflicting and an invalid entry as they are; the paused annotation; the API writes an
entry costs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from operator_harness import (
    Entries,
    OperatorProcess,
    doc,
    entry,
    running_operator,
    store_past_crd_rules,
)

from devstack import apiserver_requests
from devstack.testing import wait_for
from engines.routing.model import RoutingRecord, parse_spec


def test_create_writes_both_projections_and_reports_ready(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str, cluster_uid: str
) -> None:
    created = entries.create(entry("acme-kpi"))
    ready = entries.wait_reason("acme-kpi", "Synced", "True")
    obj = entries.get("acme-kpi")
    assert obj is not None
    status = obj["status"]
    spec = parse_spec(created["spec"])
    assert status["revision"] == spec.revision()
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["firestore"]["document"] == f"{collection}/prod:acme:*:kpi"
    assert status["configMap"] == {"name": "routing.prod.acme", "key": "acme._.kpi.json"}
    assert ready["observedGeneration"] == obj["metadata"]["generation"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "FirestoreSynced": "True",
        "ConfigMapSynced": "True",
    }

    stored = doc(fs, collection, "prod:acme:*:kpi")
    assert stored is not None
    assert stored["source"] == {
        "cluster": cluster_uid,
        "namespace": entries.ns,
        "name": "acme-kpi",
        "uid": obj["metadata"]["uid"],
    }
    assert stored["schema_version"] == 1 and stored["updated_at"] is not None
    record = RoutingRecord.from_document({k: v for k, v in stored.items() if k != "updated_at"})
    assert record.revision == spec.revision()

    data = entries.configmap_data("routing.prod.acme")
    assert data is not None
    assert json.loads(data["acme._.kpi.json"]) == record.to_document()
    cm = entries.core.read_namespaced_config_map("routing.prod.acme", entries.ns)
    assert cm.metadata.labels["app.kubernetes.io/managed-by"] == "routing-operator"
    assert "routing.engines.io/finalizer" in obj["metadata"]["finalizers"]


def test_wildcard_tenant_goes_to_the_env_configmap(
    operator: OperatorProcess, entries: Entries
) -> None:
    entries.create(
        entry(
            "default-rl",
            tenant="*",
            kind="rate_limit",
            backend="redis",
            settings={"url": "redis://redis.engines:6379/0"},
        )
    )
    entries.wait_reason("default-rl", "Synced", "True")
    data = entries.configmap_data("routing.prod")
    assert data is not None and set(data) == {"_._.rate_limit.json"}


def test_backend_change_moves_projections_and_revision(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    entries.create(
        entry(
            "acme-rl",
            kind="rate_limit",
            backend="redis",
            settings={"url": "redis://redis-a:6379/0"},
        )
    )
    entries.wait_reason("acme-rl", "Synced", "True")
    before = entries.get("acme-rl")["status"]["revision"]  # type: ignore[index]
    entries.patch(
        "acme-rl",
        {
            "spec": {
                "backend": "firestore",
                "redis": None,
                "firestore": {"collection": "rate_limits"},
            }
        },
    )

    def switched() -> bool:
        obj = entries.get("acme-rl") or {}
        st = obj.get("status") or {}
        return bool(
            st.get("revision") != before
            and st.get("observedGeneration") == obj["metadata"]["generation"] == 2
        )

    wait_for(switched, timeout=60, what="status to follow the new generation")
    assert entries.condition("acme-rl")["status"] == "True"
    stored = doc(fs, collection, "prod:acme:*:rate_limit")
    assert stored is not None and stored["backend"] == "firestore"
    assert stored["config"] == {"collection": "rate_limits", "database": "(default)"}
    assert stored["generation"] == 2
    data = entries.configmap_data("routing.prod.acme") or {}
    assert json.loads(data["acme._.rate_limit.json"])["backend"] == "firestore"


def test_drift_of_both_projections_is_repaired_and_reported(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    entries.create(entry("acme-kpi"))
    entries.wait_reason("acme-kpi", "Synced", "True")
    fs.collection(collection).document("prod:acme:*:kpi").update({"backend": "memory"})
    entries.core.patch_namespaced_config_map(
        "routing.prod.acme", entries.ns, {"data": {"acme._.kpi.json": "{}"}}
    )
    wait_for(
        lambda: (doc(fs, collection, "prod:acme:*:kpi") or {}).get("backend") == "firestore",
        timeout=60,
        what="Firestore drift repaired",
    )
    wait_for(
        lambda: (
            json.loads(
                (entries.configmap_data("routing.prod.acme") or {}).get("acme._.kpi.json", "{}")
            ).get("backend")
            == "firestore"
        ),
        timeout=60,
        what="ConfigMap drift repaired",
    )

    fs.collection(collection).document("prod:acme:*:kpi").delete()
    entries.core.delete_namespaced_config_map("routing.prod.acme", entries.ns)
    wait_for(
        lambda: doc(fs, collection, "prod:acme:*:kpi") is not None,
        timeout=60,
        what="deleted document restored",
    )
    wait_for(
        lambda: entries.configmap_data("routing.prod.acme") is not None,
        timeout=60,
        what="deleted ConfigMap restored",
    )

    def drift_events() -> list[Any]:
        evs = entries.core.list_namespaced_event(
            entries.ns, field_selector="involvedObject.name=acme-kpi"
        ).items
        return [e for e in evs if e.reason == "DriftRepaired"]

    wait_for(lambda: len(drift_events()) >= 1, timeout=60, what="DriftRepaired events")


def test_entry_the_crd_could_not_catch_is_invalid_and_written_nowhere(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str, kube_cluster: Any
) -> None:
    bad = entry("bad", backend="redis", settings={"url": "redis://r:6379"})
    store_past_crd_rules(kube_cluster, entries, bad, "spec")
    cond = entries.wait_reason("bad", "InvalidConfig", "False")
    assert cond["message"] == (
        "invalid spec, nothing written: spec.backend: backend redis is not allowed for "
        "resourceKind kpi; allowed: firestore, memory"
    )
    assert entries.condition("bad", "FirestoreSynced")["reason"] == "InvalidConfig"
    assert doc(fs, collection, "prod:acme:*:kpi") is None
    assert entries.configmap_data("routing.prod.acme") is None


def test_kubectl_get_rte_tells_synced_conflict_and_invalid_apart(
    operator: OperatorProcess, entries: Entries, kube_cluster: Any
) -> None:
    """What an operator of the cluster sees first: the READY and REASON printer columns."""
    entries.create(entry("acme-seo", kind="seo"))
    entries.wait_reason("acme-seo", "Synced", "True")
    entries.create(entry("acme-seo-again", kind="seo"))  # same identity, younger: the loser
    bad = entry("acme-kpi-bad", backend="redis", settings={"url": "redis://r:6379"})
    store_past_crd_rules(kube_cluster, entries, bad, "spec")
    entries.wait_reason("acme-seo-again", "Conflict", "False")
    entries.wait_reason("acme-kpi-bad", "InvalidConfig", "False")
    done = kube_cluster.kubectl("get", "rte", "-n", entries.ns, "--sort-by=.metadata.name")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    columns = header.split()
    ready, reason = columns.index("READY"), columns.index("REASON")
    shown = {row.split()[0]: (row.split()[ready], row.split()[reason]) for row in rows}
    assert shown == {
        "acme-kpi-bad": ("False", "InvalidConfig"),
        "acme-seo": ("True", "Synced"),
        "acme-seo-again": ("False", "Conflict"),
    }, done.stdout


def test_paused_entry_keeps_its_projections(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    entries.create(entry("acme-kpi"))
    entries.wait_reason("acme-kpi", "Synced", "True")
    entries.patch(
        "acme-kpi",
        {
            "metadata": {"annotations": {"routing.engines.io/paused": "true"}},
            "spec": {"firestore": {"collection": "changed_while_paused"}},
        },
    )
    cond = entries.wait_reason("acme-kpi", "ReconcilePaused")
    assert "routing.engines.io/paused" in cond["message"]
    assert cond["status"] == "True"  # still serving what it had synced
    for ctype in ("FirestoreSynced", "ConfigMapSynced"):
        assert entries.condition("acme-kpi", ctype)["reason"] == "ReconcilePaused"
    stored = doc(fs, collection, "prod:acme:*:kpi")
    assert stored is not None and stored["config"]["collection"] == "kpi_data"

    entries.patch("acme-kpi", {"metadata": {"annotations": {"routing.engines.io/paused": None}}})
    entries.wait_reason("acme-kpi", "Synced", "True")
    wait_for(
        lambda: (
            (doc(fs, collection, "prod:acme:*:kpi") or {}).get("config", {}).get("collection")
            == "changed_while_paused"
        ),
        timeout=60,
        what="resumed sync",
    )


def entry_patches(kubeconfig: Path) -> tuple[float, float]:
    """The API server's counts of PATCH requests on routingentries and on routingentries/status
    (all namespaces)."""
    counts = apiserver_requests(kubeconfig)
    return (
        counts.get(("PATCH", "routingentries"), 0.0),
        counts.get(("PATCH", "routingentries/status"), 0.0),
    )


def test_an_entry_costs_one_finalizer_patch_and_one_status_patch(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    """The API writes of an entry's life, counted on the API server's metrics:
    - created: one PATCH of the entry (kopf's finalizer) and one of its status. kopf's default
      diff base (the last handled spec, written back as an annotation) would be a second PATCH
      of the entry and a second watch event, for every change.
    - the operator restarted over it, synced: no PATCH at all. A no-op PATCH leaves the
      resourceVersion alone, so no watch event answers it, and kopf holds the entry's worker
      for 5 s waiting for one (a restart over 10,000 synced entries ran at 10 entries/s).
    - then a spec change: one status PATCH. The change is handled by the same per-entry
      worker as the entry's reconcile at start, so by the time it is Synced any PATCH of that
      first reconcile has been sent."""
    args = (kube_cluster.kubeconfig, entries.ns, collection, tmp_path)
    before = entry_patches(kube_cluster.kubeconfig)
    with running_operator(*args):
        entries.create(entry("acme-kpi"))
        entries.wait_reason("acme-kpi", "Synced", "True")
    created = entry_patches(kube_cluster.kubeconfig)
    assert (created[0] - before[0], created[1] - before[1]) == (1, 1), (
        "expected one PATCH of the entry (the finalizer) and one of its status"
    )
    annotations = (entries.get("acme-kpi") or {})["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("kopf.")], annotations
    with running_operator(*args) as op:
        wait_for(lambda: "Creation is processed" in op.log(), what="the start's reconcile")
        entries.patch("acme-kpi", {"spec": {"firestore": {"collection": "kpi_moved"}}})
        wanted = parse_spec((entries.get("acme-kpi") or {})["spec"]).revision()
        wait_for(
            lambda: (entries.get("acme-kpi") or {}).get("status", {}).get("revision") == wanted,
            what="the spec change synced",
        )
    changed = entry_patches(kube_cluster.kubeconfig)
    assert (changed[0] - created[0], changed[1] - created[1]) == (1, 1), (
        "expected one PATCH of the entry (this test's spec change) and one of its status"
    )
