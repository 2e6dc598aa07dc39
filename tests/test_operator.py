"""The operator against the real stack (kube-apiserver + etcd, Firestore emulator).

Covers: create → Firestore document (recording this cluster: kube-system's uid) + ConfigMap key +
Ready=True; a backend change moves the projections and the revision with observedGeneration ==
generation; delete with allow-delete → projections gone and finalizer released (an emptied
ConfigMap is deleted); delete without it → projections kept, a Warning Event, counted, and the
same identity takes them back; orphans kept in prod, removed in test; no cluster identity → the
operator writes nothing and reports ClusterIdentityUnknown until it can read it; conflicts (oldest
wins, the loser takes over on its own when the winner goes); drift repair of both projections; an
entry the CRD could not catch → InvalidConfig and nothing written; the paused annotation; a
Firestore outage → BackendUnavailable then recovery with nothing lost; SIGKILL mid-way then
restart → convergence; ``kubectl get rte`` showing a synced, a conflicting and an invalid entry as
they are; the API writes an entry costs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_harness import Entries, OperatorProcess, entry, running_operator

from devstack import apiserver_requests, free_port
from devstack.testing import wait_for
from engines.routing.model import RoutingRecord, parse_spec

DRIFT_PERIOD = "2"


@pytest.fixture
def fs(firestore_emulator: Any) -> Any:
    return firestore_emulator.client()


@pytest.fixture
def operator(
    kube_cluster: Any, firestore_emulator: Any, namespace: str, collection: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    with running_operator(
        kube_cluster.kubeconfig, namespace, collection, tmp_path, "--drift-period", DRIFT_PERIOD
    ) as op:
        yield op
    print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")


@pytest.fixture(scope="module")
def cluster_uid(kube_cluster: Any) -> str:
    """This cluster's default identity: the uid of namespace kube-system."""
    with kube_cluster.api_client() as api:
        return str(client.CoreV1Api(api).read_namespace("kube-system").metadata.uid)


ALLOW_DELETE = {"routing.engines.io/allow-delete": "true"}


def doc(fs: Any, collection: str, doc_id: str) -> dict[str, Any] | None:
    snap = fs.collection(collection).document(doc_id).get()
    return snap.to_dict() if snap.exists else None


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


def test_delete_removes_only_its_projections_and_releases_the_finalizer(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    entries.create(entry("acme-kpi", annotations=ALLOW_DELETE))
    entries.create(entry("acme-seo", kind="seo", annotations=ALLOW_DELETE))
    entries.wait_reason("acme-kpi", "Synced", "True")
    entries.wait_reason("acme-seo", "Synced", "True")

    entries.delete("acme-kpi")
    wait_for(lambda: entries.get("acme-kpi") is None, timeout=60, what="finalizer released")
    assert doc(fs, collection, "prod:acme:*:kpi") is None
    assert set(entries.configmap_data("routing.prod.acme") or {}) == {"acme._.seo.json"}
    assert doc(fs, collection, "prod:acme:*:seo") is not None

    entries.delete("acme-seo")
    wait_for(lambda: entries.get("acme-seo") is None, timeout=60, what="finalizer released")
    assert entries.configmap_data("routing.prod.acme") is None, "emptied ConfigMap not deleted"
    assert doc(fs, collection, "prod:acme:*:seo") is None


def test_conflict_oldest_wins_and_the_loser_takes_over(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str
) -> None:
    entries.create(entry("first", settings={"collection": "from_first"}))
    entries.wait_reason("first", "Synced", "True")
    entries.create(entry("second", settings={"collection": "from_second"}))
    lost = entries.wait_reason("second", "Conflict", "False")
    assert f"claimed by the older RoutingEntry {entries.ns}/first" in lost["message"]
    stored = doc(fs, collection, "prod:acme:*:kpi")
    assert stored is not None and stored["config"]["collection"] == "from_first"
    assert entries.condition("first")["status"] == "True"

    entries.delete("first")
    entries.wait_reason("second", "Synced", "True", timeout=60)
    stored = doc(fs, collection, "prod:acme:*:kpi")
    assert stored is not None and stored["config"]["collection"] == "from_second"
    assert stored["source"]["name"] == "second"
    data = entries.configmap_data("routing.prod.acme") or {}
    assert json.loads(data["acme._.kpi.json"])["source"]["name"] == "second"


def test_loser_takes_over_when_the_winner_vanished_while_no_operator_ran(
    kube_cluster: Any, fs: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    """The winner is force-removed (finalizer stripped) while the operator is down, so no delete
    handler ever requeues the loser; the restarted operator still hands the identity over. The
    drift period is long, so the sweeper is not what does it."""
    op = OperatorProcess(
        kube_cluster.kubeconfig, entries.ns, collection, tmp_path, "--drift-period", "600"
    ).start()
    try:
        entries.create(entry("first", settings={"collection": "from_first"}))
        entries.wait_reason("first", "Synced", "True")
        entries.create(entry("second", settings={"collection": "from_second"}))
        entries.wait_reason("second", "Conflict", "False")
        op.kill()
        entries.patch("first", {"metadata": {"finalizers": None}})
        entries.delete("first")
        wait_for(lambda: entries.get("first") is None, timeout=60, what="force-removed winner")
        op.start()
        entries.wait_reason("second", "Synced", "True", timeout=60)
        stored = doc(fs, collection, "prod:acme:*:kpi")
        assert stored is not None and stored["source"]["name"] == "second"
        assert stored["config"]["collection"] == "from_second"
    finally:
        op.stop()


def test_operator_starting_on_many_existing_entries_handles_them_all(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    """An operator (re)started on more entries than it handles at once (100 entries, 4 at a
    time) must still handle every one. With a kopf index, which is filled before any handler
    runs, kopf's ``worker_limit`` deadlocked here with nothing handled; the operator now keeps
    its own identity claims (claims.py).

    Listed 10 at a time: these entries need their finalizer, and kopf watches only after its
    list, so a worker waiting for its PATCH's watch event stands still until the list is done
    (kopf gives up waiting after 5 s). The list must go on as soon as the workers stand still,
    not wait for them to finish."""
    names = [f"t{i:03d}-kpi" for i in range(100)]
    for i, name in enumerate(names):
        entries.create(entry(name, tenant=f"t{i:03d}"))
    op = OperatorProcess(
        kube_cluster.kubeconfig,
        entries.ns,
        collection,
        tmp_path,
        "--list-page-size",
        "10",
        "--concurrent-entries",
        "4",
    ).start()
    try:

        def not_ready() -> list[str]:
            items = entries.api.list_namespaced_custom_object(
                "routing.engines.io", "v1alpha1", entries.ns, "routingentries"
            )["items"]
            return [
                o["metadata"]["name"]
                for o in items
                if not any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (o.get("status") or {}).get("conditions") or []
                )
            ]

        wait_for(
            lambda: not not_ready(),
            timeout=120,
            what=lambda: f"all 100 entries Ready (not yet: {not_ready()[:5]}...)",
        )
        log = op.log()
        assert "no listed entry reached a worker" in log, "the list waited on idle workers"
        assert "still waiting after" not in log, "a page waited out the gate's timeout"
    finally:
        op.stop()
        print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")


def test_restart_holds_the_list_back_while_the_workers_take_it(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    """kopf lists the existing entries a page at a time and, unchecked, queues them all at once
    (a restart over 10,000 entries peaked at 320 MB). Restarted over 60 synced entries with
    pages of 10 and 4 workers, the operator must hold pages back and release them as listed
    entries reach their workers (counted by its event handler; uncounted, every held page
    would go only after the gate saw no progress for 1 s, which a loaded machine may also
    cause once), and still reconcile every entry."""
    names = [f"t{i:03d}-kpi" for i in range(60)]
    args = (kube_cluster.kubeconfig, entries.ns, collection, tmp_path)
    with running_operator(*args):
        for i, name in enumerate(names):
            entries.create(entry(name, tenant=f"t{i:03d}"))
        for name in names:
            entries.wait_reason(name, "Synced", "True", timeout=120)
    op = OperatorProcess(
        *args, "--list-page-size", "10", "--concurrent-entries", "4", metrics_port=free_port()
    ).start()
    try:
        wait_for(
            lambda: op.metric("routing_operator_reconciles_total", {"result": "Synced"}) >= 60,
            timeout=120,
            what="60 reconciles after the restart",
        )
        held = op.metric("routing_operator_list_pages_held_total")
        stalled = op.log().count("no listed entry reached a worker")
        assert held >= 1, "no page was held back"
        assert stalled < held, f"all {held:.0f} held pages went without progress"
        assert "still waiting after" not in op.log()
    finally:
        op.stop()
        print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")


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


def _store_past_the_crd_rules(kube_cluster: Any, entries: Entries, body: dict[str, Any]) -> None:
    """Store an entry the CRD's CEL rules refuse, as if stored before a schema change: the rules
    are lifted, the entry is stored, the rules come back. A real API server cannot be made to
    hold such an object any other way."""
    with kube_cluster.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        name = "routingentries.routing.engines.io"
        original = ext.read_custom_resource_definition(name)
        schema = original.spec.versions[0].schema.open_apiv3_schema
        saved_rules = schema.properties["spec"].x_kubernetes_validations
        schema.properties["spec"].x_kubernetes_validations = None
        ext.replace_custom_resource_definition(name, original)
        try:
            wait_for(
                lambda: _try_create(entries, body),
                timeout=60,
                what="the relaxed CRD to accept the entry",
            )
        finally:
            current = ext.read_custom_resource_definition(name)
            current.spec.versions[0].schema.open_apiv3_schema.properties[
                "spec"
            ].x_kubernetes_validations = saved_rules
            ext.replace_custom_resource_definition(name, current)


def test_entry_the_crd_could_not_catch_is_invalid_and_written_nowhere(
    operator: OperatorProcess, entries: Entries, fs: Any, collection: str, kube_cluster: Any
) -> None:
    bad = entry("bad", backend="redis", settings={"url": "redis://r:6379"})
    _store_past_the_crd_rules(kube_cluster, entries, bad)
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
    _store_past_the_crd_rules(kube_cluster, entries, bad)
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


def _try_create(entries: Entries, body: dict[str, Any]) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        entries.create(body)
        return True
    except ApiException as exc:
        if exc.status == 422:
            return False
        raise


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


def test_firestore_outage_reports_backend_unavailable_then_recovers(
    operator: OperatorProcess, entries: Entries, firestore_emulator: Any, collection: str
) -> None:
    entries.create(entry("before"))
    entries.wait_reason("before", "Synced", "True")
    firestore_emulator.stop()
    try:
        entries.create(entry("during", kind="seo"))
        cond = entries.wait_reason("during", "BackendUnavailable", "False", timeout=60)
        assert "Firestore" in cond["message"]
    finally:
        firestore_emulator.start()
    fs = firestore_emulator.client()
    # The restarted emulator lost its data; the CRs are the truth and both come back.
    entries.wait_reason("during", "Synced", "True", timeout=60)
    wait_for(
        lambda: doc(fs, collection, "prod:acme:*:seo") is not None,
        timeout=60,
        what="document of the entry created during the outage",
    )
    wait_for(
        lambda: doc(fs, collection, "prod:acme:*:kpi") is not None,
        timeout=60,
        what="document of the entry created before the outage (drift repair)",
    )


def test_operator_killed_mid_way_converges_after_restart(
    kube_cluster: Any,
    firestore_emulator: Any,
    entries: Entries,
    collection: str,
    tmp_path: Path,
) -> None:
    fs = firestore_emulator.client()
    op = OperatorProcess(
        kube_cluster.kubeconfig, entries.ns, collection, tmp_path, "--drift-period", "60"
    ).start()
    kinds = [
        "kpi",
        "seo",
        "budget",
        "maybes",
        "firearms",
        "page_content",
        "video_timeline",
        "analytics_events",
        "feature_flags",
    ]
    try:
        entries.create(entry("acme-kpi", kind="kpi", annotations=ALLOW_DELETE))
        entries.wait_reason("acme-kpi", "Synced", "True")  # finalizer on, document written
        for k in kinds[1:]:
            entries.create(entry(f"acme-{k.replace('_', '-')}", kind=k))
        op.kill()  # mid-way: some of the others are being processed, some not yet seen
        entries.delete("acme-kpi")  # deleted while no operator runs: finalizer must hold it
        assert entries.get("acme-kpi") is not None
        op.start()
        for k in kinds[1:]:
            entries.wait_reason(f"acme-{k.replace('_', '-')}", "Synced", "True", timeout=60)
        wait_for(lambda: entries.get("acme-kpi") is None, timeout=60, what="pending delete")
        assert doc(fs, collection, "prod:acme:*:kpi") is None
        for k in kinds[1:]:
            assert doc(fs, collection, f"prod:acme:*:{k}") is not None
        data = entries.configmap_data("routing.prod.acme") or {}
        assert set(data) == {f"acme._.{k}.json" for k in kinds[1:]}
    finally:
        op.stop()


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


@pytest.mark.peering
def test_two_replicas_do_not_fight(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    """kopf peering: the higher-priority replica works, the other pauses; when the worker
    leaves (a rolling update stops it), the standby resumes and handles new entries. The
    standby's drift sweeps (3 list calls each, a Firestore read per document) pause with it.

    Pausing is checked through the KopfPeering status and kopf's pause/resume transitions: a
    replica starts paused and logs only changes, so a standby that sees the leader at once
    never prints "Pausing" (an earlier version waited for that line and was flaky)."""
    repo = Path(__file__).resolve().parents[1]
    crd = repo / "helm" / "routing-registry" / "crds" / "kopfpeerings.kopf.dev.yaml"
    applied = kube_cluster.kubectl("apply", "-f", str(crd))
    assert applied.returncode == 0, applied.stderr
    wait_for(
        lambda: kube_cluster.kubectl("get", "kopfpeerings", "-n", entries.ns).returncode == 0,
        timeout=60,
        what="the KopfPeering CRD to be served",
    )
    peering = json.dumps(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "routing-operator", "namespace": entries.ns},
        }
    )
    created = kube_cluster.kubectl("apply", "-f", "-", input=peering)
    assert created.returncode == 0, created.stderr

    common = ("--peering", "routing-operator", "--peering-lifetime", "60", "--drift-period", "1")

    def peers() -> dict[str, Any]:
        got = kube_cluster.kubectl(
            "get", "kopfpeering", "routing-operator", "-n", entries.ns, "-o", "json"
        )
        return dict(json.loads(got.stdout).get("status") or {}) if got.returncode == 0 else {}

    leader = OperatorProcess(
        kube_cluster.kubeconfig, entries.ns, collection, tmp_path, *common, "--priority", "200"
    ).start()
    standby = OperatorProcess(
        kube_cluster.kubeconfig, entries.ns, collection, tmp_path, *common, "--priority", "100"
    ).start()

    def paused(log: str) -> bool:
        # kopf starts a peered replica paused and logs only transitions: a standby that sees the
        # leader in its first peering event stays paused without a word. So "paused now" means
        # never resumed, or paused again after the last resume.
        last_resume = log.rfind("Resuming operations")
        return last_resume == -1 or log.rfind("Pausing operations") > last_resume

    try:
        wait_for(
            lambda: {p.get("priority") for p in peers().values()} == {100, 200},
            timeout=60,
            what=lambda: f"both replicas in the KopfPeering (status: {peers()})",
        )
        wait_for(lambda: paused(standby.log()), timeout=60, what="the standby to be paused")
        wait_for(
            lambda: "drift sweeps paused" in standby.log(),
            timeout=30,
            what="the standby's drift sweeps to pause",
        )
        for k in ("kpi", "seo", "budget"):
            entries.create(entry(f"acme-{k}", kind=k))
        for k in ("kpi", "seo", "budget"):
            entries.wait_reason(f"acme-{k}", "Synced", "True")
        assert "Handler 'reconcile' succeeded" in leader.log()
        assert "Handler 'reconcile' succeeded" not in standby.log(), "both replicas worked"
        assert "drift sweeps paused" not in leader.log()

        leader.stop()
        wait_for(
            lambda: not paused(standby.log()),
            timeout=60,
            what="the standby to resume once the leader is gone",
        )
        entries.create(entry("acme-maybes", kind="maybes"))
        entries.wait_reason("acme-maybes", "Synced", "True", timeout=60)
        assert "Handler 'reconcile' succeeded" in standby.log()
        wait_for(
            lambda: "drift sweeps resumed" in standby.log(),
            timeout=30,
            what="the former standby's drift sweeps to resume",
        )
    finally:
        leader.stop()
        standby.stop()


def test_metrics_and_liveness_endpoints(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    import httpx

    metrics_port, live_port = free_port(), free_port()
    op = OperatorProcess(
        kube_cluster.kubeconfig,
        entries.ns,
        collection,
        tmp_path,
        metrics_port=metrics_port,
        liveness_port=live_port,
    ).start()
    try:
        entries.create(entry("acme-kpi"))
        entries.create(entry("dup", settings={"collection": "other"}))
        entries.wait_reason("acme-kpi", "Synced", "True")
        entries.wait_reason("dup", "Conflict", "False")

        def scrape() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
            except httpx.TransportError:
                return ""

        conflict = 'routing_operator_entries{reason="Conflict",status="False"} 1.0'
        wait_for(lambda: conflict in scrape(), timeout=60, what="the entries gauge")
        text = scrape()
        assert 'routing_operator_reconciles_total{result="Synced"}' in text
        assert 'routing_operator_entries{reason="Synced",status="True"} 1.0' in text
        assert "routing_operator_reconcile_duration_seconds_bucket" in text
        assert "routing_operator_drift_repairs_total" in text
        wait_for(
            lambda: _get_ok(f"http://127.0.0.1:{live_port}/healthz"),
            timeout=60,
            what="liveness endpoint",
        )
    finally:
        op.stop()


def _get_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_orphans_are_removed_in_env_test_and_kept_elsewhere(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    """Entries that vanished without their finalizer running (force-removed while no operator
    ran) leave projections behind: the sweep removes those of env test, keeps the others (they
    may still be served), counts them by env and logs each once; nothing else is touched."""
    fs = firestore_emulator.client()
    op = OperatorProcess(
        kube_cluster.kubeconfig,
        entries.ns,
        collection,
        tmp_path,
        "--drift-period",
        "2",
        metrics_port=free_port(),
    ).start()
    try:
        entries.create(entry("gone", env="test"))
        entries.create(entry("gone-prod", kind="seo"))
        entries.create(entry("kept", env="test", kind="seo"))
        for name in ("gone", "gone-prod", "kept"):
            entries.wait_reason(name, "Synced", "True")
        op.kill()
        for name in ("gone", "gone-prod"):
            entries.patch(name, {"metadata": {"finalizers": None}})
            entries.delete(name)
            wait_for(lambda n=name: entries.get(n) is None, timeout=60, what=f"{name} removed")
        # a document nobody owns (no source) is not ours to remove
        fs.collection(collection).document("prod:hand:*:kpi").set({"tenant": "hand"})
        op.start()
        wait_for(
            lambda: doc(fs, collection, "test:acme:*:kpi") is None,
            timeout=60,
            what="orphaned test document removed",
        )
        wait_for(
            lambda: "acme._.kpi.json" not in (entries.configmap_data("routing.test.acme") or {}),
            timeout=60,
            what="orphaned test key removed",
        )
        wait_for(
            lambda: op.metric("routing_operator_orphans", {"env": "prod"}) == 2,
            timeout=60,
            what="the prod document and key counted as orphans",
        )
        assert doc(fs, collection, "prod:acme:*:seo") is not None
        assert "acme._.seo.json" in (entries.configmap_data("routing.prod.acme") or {})
        assert doc(fs, collection, "test:acme:*:seo") is not None
        assert "acme._.seo.json" in (entries.configmap_data("routing.test.acme") or {})
        assert doc(fs, collection, "prod:hand:*:kpi") == {"tenant": "hand"}
        log = op.log()
        assert "removed orphaned Firestore document " + f"{collection}/test:acme:*:kpi" in log
        kept = f"orphan kept: Firestore document {collection}/prod:acme:*:seo"
        wait_for(lambda: kept in op.log(), timeout=30, what="the kept orphan logged")
        assert op.metric("routing_operator_orphans_removed_total") == 2
        # a later sweep (the one that repairs this) does not log the kept orphans again
        fs.collection(collection).document("test:acme:*:seo").delete()
        wait_for(
            lambda: doc(fs, collection, "test:acme:*:seo") is not None,
            timeout=60,
            what="a later sweep repairing a deleted document",
        )
        assert op.log().count("orphan kept") == 2  # the prod document and key, once each
    finally:
        op.stop()


def events_of(entries: Entries, name: str, reason: str) -> list[Any]:
    found = entries.core.list_namespaced_event(
        entries.ns, field_selector=f"involvedObject.name={name},reason={reason}"
    )
    return list(found.items)


def test_a_plain_delete_keeps_what_is_served_and_the_same_identity_takes_it_back(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    """A prod entry deleted without routing.engines.io/allow-delete (here a plain delete: the
    chart's policy is not installed on this API server) keeps its document and ConfigMap key,
    with a Warning Event and the projections_kept counter; a new entry with the same identity
    takes them back with no Conflict on the way."""
    fs = firestore_emulator.client()
    op = OperatorProcess(
        kube_cluster.kubeconfig,
        entries.ns,
        collection,
        tmp_path,
        "--drift-period",
        "2",
        metrics_port=free_port(),
    ).start()
    try:
        entries.create(entry("acme-kpi", settings={"collection": "first"}))
        entries.wait_reason("acme-kpi", "Synced", "True")
        entries.delete("acme-kpi")
        wait_for(lambda: entries.get("acme-kpi") is None, timeout=60, what="finalizer released")
        stored = doc(fs, collection, "prod:acme:*:kpi")
        assert stored is not None and stored["source"]["name"] == "acme-kpi"
        value = (entries.configmap_data("routing.prod.acme") or {}).get("acme._.kpi.json")
        assert value is not None and json.loads(value)["source"]["name"] == "acme-kpi"
        kept = wait_for(
            lambda: events_of(entries, "acme-kpi", "ProjectionsKept"),
            timeout=30,
            what="the ProjectionsKept Event",
        )
        assert kept[0].type == "Warning" and "allow-delete" in kept[0].message
        assert op.metric("routing_operator_projections_kept_total") == 1

        entries.create(entry("acme-kpi-again", settings={"collection": "second"}))
        entries.wait_reason("acme-kpi-again", "Synced", "True")
        stored = doc(fs, collection, "prod:acme:*:kpi")
        assert stored is not None and stored["source"]["name"] == "acme-kpi-again"
        assert stored["config"]["collection"] == "second"
        value = (entries.configmap_data("routing.prod.acme") or {})["acme._.kpi.json"]
        assert json.loads(value)["source"]["name"] == "acme-kpi-again"
        assert not events_of(entries, "acme-kpi-again", "Conflict")
        assert events_of(entries, "acme-kpi-again", "Reclaimed")
    finally:
        op.stop()


def test_an_operator_without_a_cluster_identity_writes_nothing_and_says_why(
    kube_cluster: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    """Without --cluster-id and without the right to read namespace kube-system (a real
    ServiceAccount token with no role), the operator handles nothing and reports
    ClusterIdentityUnknown with its fix; granting that one read clears it. A malformed
    --cluster-id stops the process at once."""
    account = f"nobody-{uuid.uuid4().hex[:6]}"
    made = kube_cluster.kubectl("create", "serviceaccount", account, "-n", entries.ns)
    assert made.returncode == 0, made.stderr
    token = kube_cluster.kubectl("create", "token", account, "-n", entries.ns, "--duration=10m")
    assert token.returncode == 0, token.stderr
    admin = json.loads(kube_cluster.kubeconfig.read_text())
    kubeconfig = tmp_path / "nobody.kubeconfig"
    context = {"cluster": admin["clusters"][0]["name"], "user": account}
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": account, "user": {"token": token.stdout.strip()}}],
                "contexts": [{"name": "sa", "context": context}],
                "current-context": "sa",
            }
        )
    )
    bad = OperatorProcess(kubeconfig, entries.ns, collection, tmp_path, "--cluster-id", "a b")
    bad.start()
    assert bad.proc is not None and bad.proc.wait(60) != 0
    assert "--cluster-id 'a b' is not a valid cluster identity" in bad.log()

    op = OperatorProcess(
        kubeconfig, entries.ns, collection, tmp_path, metrics_port=free_port()
    ).start()
    try:
        wait_for(
            lambda: (
                op.metric("routing_operator_blocked", {"reason": "ClusterIdentityUnknown"}) == 1
            ),
            timeout=60,
            what="ClusterIdentityUnknown reported",
        )
        log = op.log()
        assert "cannot work: ClusterIdentityUnknown: cannot determine this cluster" in log
        assert "reading namespace kube-system failed (HTTP 403" in log, log[-3000:]
        assert "Fix: pass --cluster-id (chart value operator.clusterId)" in log
        assert op.proc is not None and op.proc.poll() is None, "it waits, it does not exit"
        for step in (
            ("create", "clusterrole", account, "--verb=get", "--resource=namespaces",
             "--resource-name=kube-system"),
            ("create", "clusterrolebinding", account, f"--clusterrole={account}",
             f"--serviceaccount={entries.ns}:{account}"),
        ):  # fmt: skip
            done = kube_cluster.kubectl(*step)
            assert done.returncode == 0, done.stderr
        wait_for(
            lambda: "ClusterIdentityUnknown resolved" in op.log(),
            timeout=60,
            what="ClusterIdentityUnknown resolved once kube-system can be read",
        )
    finally:
        op.stop()
        for kind in ("clusterrolebinding", "clusterrole"):
            kube_cluster.kubectl("delete", kind, account, "--ignore-not-found")
