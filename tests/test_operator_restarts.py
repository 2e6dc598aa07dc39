"""The operator through outages and restarts, against the real stack: started on many existing
entries it handles them all; restarted, it holds kopf's listing back while its workers take it;
a Firestore outage → BackendUnavailable then recovery with nothing lost; SIGKILL mid-way then
restart → convergence; no cluster identity → it writes nothing and reports
ClusterIdentityUnknown until it can read it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from operator_harness import ALLOW_DELETE, Entries, OperatorProcess, doc, entry, running_operator

from devstack import free_port
from devstack.testing import wait_for
from engines.routing.catalog import CATALOG, Backend

FIRESTORE_KINDS = [k.value for k, spec in CATALOG.items() if Backend.FIRESTORE in spec.allowed]


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
    # kpi first, then eight more kinds that take the entries' default backend (Firestore)
    kinds = ["kpi", *[k for k in FIRESTORE_KINDS if k != "kpi"][:8]]
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
