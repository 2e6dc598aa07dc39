"""What the installed chart lets the operator's ServiceAccount do, on a real API server.

Why: a Role one verb short makes the operator fail in production; one verb too many leaks
Secrets; a CEL typo in the deletion guard lets ``kubectl delete`` take a prod service out of
readiness. So, with the chart installed (RBAC on, real TokenRequest tokens):

* ``kubectl auth can-i`` shows the ServiceAccount holds every permission the operator calls and
  nothing more (no Secrets, no deletes of entries, no other namespaces), namespaced or with
  ``allNamespaces``;
* the operator runs its whole job as that ServiceAccount (create, conflict Event, update, guarded
  delete, peering keep-alive) under the operator-scope admission policy, with no 403 in its log;
* the ValidatingAdmissionPolicy refuses deleting a prod entry, allows it once annotated
  ``routing.engines.io/allow-delete: "true"``, and always allows a ``test`` entry.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

from chart_harness import (
    ALLOW_DELETE,
    Release,
    confined_values,
    install,
    run,
    service_account_kubeconfig,
    uninstall,
)
from operator_harness import Entries, entry, running_operator

from devstack.testing import wait_for


def can_i(kube_cluster: Any, user: str, verb: str, resource: str, *extra: str) -> bool:
    done = kube_cluster.kubectl("auth", "can-i", verb, resource, f"--as={user}", *extra)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource}: {done.stdout} {done.stderr}"
    return answer == "yes"


NEEDED = [
    ("get", "routingentries.routing.engines.io"),
    ("list", "routingentries.routing.engines.io"),
    ("watch", "routingentries.routing.engines.io"),
    ("patch", "routingentries.routing.engines.io"),
    ("patch", "routingentries.routing.engines.io", "--subresource=status"),
    ("get", "configmaps"),
    ("list", "configmaps"),
    ("watch", "configmaps"),  # the drift listener (label-selected)
    ("create", "configmaps"),
    ("update", "configmaps"),
    ("patch", "configmaps"),
    ("delete", "configmaps"),
    ("create", "events"),
    ("get", "kopfpeerings.kopf.dev"),
    ("watch", "kopfpeerings.kopf.dev"),
    ("patch", "kopfpeerings.kopf.dev"),
]
ENTRY_PATCHES = [c for c in NEEDED if c[:2] == ("patch", "routingentries.routing.engines.io")]
"""Granted in every namespace (a ClusterRole), confined to the watched ones by admission."""
CLUSTER_NEEDED = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "namespaces/kube-system"),  # the default cluster identity is its uid
]
FORBIDDEN = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("delete", "routingentries.routing.engines.io"),
    ("create", "routingentries.routing.engines.io"),
    # kopf merge-patches entries and their status; it never replaces them
    ("update", "routingentries.routing.engines.io"),
    ("update", "routingentries.routing.engines.io", "--subresource=status"),
    ("deletecollection", "configmaps"),
    ("get", "pods"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("create", "serviceaccounts/token"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("update", "roles.rbac.authorization.k8s.io"),
    ("delete", "kopfpeerings.kopf.dev"),
    # kopf posts core v1 Events and never edits them
    ("patch", "events"),
    ("delete", "events"),
    ("create", "events.events.k8s.io"),
    ("patch", "deployments.apps"),
]
CLUSTER_FORBIDDEN = [
    ("list", "secrets", "--all-namespaces"),
    ("list", "configmaps", "--all-namespaces"),
    ("list", "routingentries.routing.engines.io", "--all-namespaces"),
    ("patch", "clusterkopfpeerings.kopf.dev"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "namespaces"),
    ("get", "namespaces/default"),
    ("impersonate", "serviceaccounts"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("patch", "validatingadmissionpolicies.admissionregistration.k8s.io"),
    ("get", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "namespaces/kube-system"),
]


def test_operator_service_account_has_exactly_what_it_needs(
    kube_cluster: Any, release: Release
) -> None:
    ns = release.namespace
    allowed = [c for c in NEEDED if not can_i(kube_cluster, release.user, *c, "-n", ns)]
    allowed += [c for c in CLUSTER_NEEDED if not can_i(kube_cluster, release.user, *c)]
    assert not allowed, f"{release.user} is missing permissions it needs: {allowed}"
    # namespaced mode: kopf lists namespaces to resolve --namespace (falls back with a warning)
    assert can_i(kube_cluster, release.user, "list", "namespaces")
    granted = [c for c in FORBIDDEN if can_i(kube_cluster, release.user, *c, "-n", ns)]
    granted += [c for c in CLUSTER_FORBIDDEN if can_i(kube_cluster, release.user, *c)]
    # Nothing in a namespace it does not watch, but patches of entries: those are cluster-wide
    # so that a namespace being deleted (its Role with it) does not strand the finalizers; the
    # operator-scope policy refuses them outside the watched namespaces (test_chart_security).
    granted += [
        (*c, "-n", "default")
        for c in NEEDED
        if c not in ENTRY_PATCHES and can_i(kube_cluster, release.user, *c, "-n", "default")
    ]
    assert not granted, f"{release.user} holds permissions it must not have: {granted}"
    assert all(can_i(kube_cluster, release.user, *c, "-n", "default") for c in ENTRY_PATCHES)


def test_all_namespaces_mode_uses_cluster_roles(
    helm: Path, kube_cluster: Any, namespace: str
) -> None:
    rel = install(helm, kube_cluster, namespace, confined_values(namespace, allNamespaces=True))
    try:
        kinds = {d["kind"] for d in rel.objects}
        assert "Role" not in kinds and "ClusterKopfPeering" in kinds
        missing = [
            c for c in NEEDED
            if "kopfpeerings" not in c[1]
            and not can_i(kube_cluster, rel.user, *c, "-n", "default")
        ]  # fmt: skip
        assert not missing, missing
        assert can_i(kube_cluster, rel.user, "patch", "clusterkopfpeerings.kopf.dev")
        assert can_i(
            kube_cluster, rel.user, "watch", "customresourcedefinitions.apiextensions.k8s.io"
        )
        denied = [
            c for c in (*FORBIDDEN, ("list", "secrets", "--all-namespaces"), ("list", "namespaces"))
            if can_i(kube_cluster, rel.user, *c, "-n", "default")
        ]  # fmt: skip
        assert not denied, f"all-namespaces operator holds: {denied}"
    finally:
        uninstall(kube_cluster, rel)


def test_operator_does_its_whole_job_as_the_chart_service_account(
    kube_cluster: Any,
    firestore_emulator: Any,
    release: Release,
    tmp_path: Path,
) -> None:
    """Every call the operator makes is authorised by the chart's RBAC, and nothing else."""
    kubeconfig = service_account_kubeconfig(kube_cluster, release, tmp_path / "sa.kubeconfig")
    whoami = run("kubectl", f"--kubeconfig={kubeconfig}", "auth", "whoami", "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == release.user
    denied = run("kubectl", f"--kubeconfig={kubeconfig}", "get", "secrets")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr

    ns = release.namespace
    collection = f"routing_{secrets.token_hex(4)}"
    fs = firestore_emulator.client()
    with (
        kube_cluster.api_client() as api,
        running_operator(
            kubeconfig, ns, collection, tmp_path, "--peering", release.peering,
            "--drift-period", "2",
        ) as op,
    ):  # fmt: skip
        entries = Entries(api, ns)
        try:
            entries.create(entry("acme-kpi", annotations={ALLOW_DELETE: "true"}))
            entries.wait_reason("acme-kpi", "Synced", "True", timeout=60)
            assert "acme._.kpi.json" in (entries.configmap_data("routing.prod.acme") or {})
            assert fs.collection(collection).document("prod:acme:*:kpi").get().exists

            # kopf's keep-alive in the chart's KopfPeering: peering works under this identity.
            def peers() -> dict[str, Any]:
                got = kube_cluster.kubectl(
                    "get", "kopfpeering", release.peering, "-n", ns, "-o", "json"
                )
                return json.loads(got.stdout).get("status") or {} if got.returncode == 0 else {}

            wait_for(peers, timeout=60, what="the operator's keep-alive in the KopfPeering")

            # A conflicting twin: Warning event posted by the operator (events create).
            entries.create(entry("acme-kpi-twin"))
            entries.wait_reason("acme-kpi-twin", "Conflict", "False", timeout=60)

            def conflict_event() -> bool:
                got = kube_cluster.kubectl(
                    "get", "events", "-n", ns, "-o", "json",
                    "--field-selector", "involvedObject.name=acme-kpi-twin",
                )  # fmt: skip
                items = json.loads(got.stdout)["items"] if got.returncode == 0 else []
                return any(e.get("reason") == "Conflict" for e in items)

            wait_for(conflict_event, timeout=60, what="a Conflict event on acme-kpi-twin")

            # A backend change: status, ConfigMap and document move to the new revision.
            entries.patch("acme-kpi", {"spec": {"firestore": {"collection": "kpi_v2"}}})

            def switched() -> bool:
                data = entries.configmap_data("routing.prod.acme") or {}
                doc = json.loads(data.get("acme._.kpi.json", "{}"))
                return doc.get("config", {}).get("collection") == "kpi_v2"

            wait_for(switched, timeout=60, what="the ConfigMap to carry kpi_v2")
            entries.wait_reason("acme-kpi", "Synced", "True", timeout=60)

            # Guarded delete (annotated): the operator releases its finalizer and the twin
            # takes over the identity.
            entries.delete("acme-kpi")
            wait_for(lambda: entries.get("acme-kpi") is None, timeout=60, what="acme-kpi gone")
            entries.wait_reason("acme-kpi-twin", "Synced", "True", timeout=60)
            # Drift repair: a deleted ConfigMap comes back (configmaps create under this SA).
            kube_cluster.kubectl("delete", "configmap", "routing.prod.acme", "-n", ns)
            wait_for(
                lambda: "acme._.kpi.json" in (entries.configmap_data("routing.prod.acme") or {}),
                timeout=60, what="the deleted ConfigMap repaired",
            )  # fmt: skip
        finally:
            print(f"--- operator log ({op.log_path}) ---\n{op.log()[-8000:]}")  # on failure
            twin = entries.get("acme-kpi-twin")
            if twin is not None:
                entries.patch(
                    "acme-kpi-twin", {"metadata": {"annotations": {ALLOW_DELETE: "true"}}}
                )
                entries.delete("acme-kpi-twin")
                wait_for(lambda: entries.get("acme-kpi-twin") is None, timeout=60, what="twin gone")
    log = op.log()
    refused = [
        line for line in log.splitlines()
        if re.search(r"\b403\b|forbidden|Not enough permissions", line, re.IGNORECASE)
    ]  # fmt: skip
    assert not refused, "the operator was refused something:\n" + "\n".join(refused[:20])


def test_deletion_guard_refuses_prod_delete_unless_annotated(
    kube_cluster: Any, release: Release
) -> None:
    ns = release.namespace
    with kube_cluster.api_client() as api:
        entries = Entries(api, ns)
        entries.create(entry("prod-kpi", env="prod"))
        entries.create(entry("staging-kpi", env="staging"))
        entries.create(entry("test-kpi", env="test", backend="memory", settings={}))

        def refused() -> str | None:
            done = kube_cluster.kubectl("delete", "rte", "prod-kpi", "-n", ns, "--dry-run=server")
            return done.stderr if done.returncode != 0 else None

        # A new policy takes effect once the API server's informer has seen it.
        message = wait_for(refused, timeout=60, interval=0.5, what="the deletion guard to refuse")
        assert "prod-kpi" in message and "allow-delete" in message, message
        policy = json.loads(
            kube_cluster.kubectl(
                "get", "validatingadmissionpolicy", "-o", "json",
                f"{release.name}-routing-registry-deletion-guard",
            ).stdout
        )  # fmt: skip
        assert not (policy.get("status", {}).get("typeChecking") or {}).get("expressionWarnings")

        done = kube_cluster.kubectl("delete", "rte", "prod-kpi", "-n", ns)
        assert done.returncode != 0 and "allow-delete" in done.stderr, done.stderr
        assert entries.get("prod-kpi") is not None
        # Any env but test is guarded; "false" is not "true".
        done = kube_cluster.kubectl("delete", "rte", "staging-kpi", "-n", ns)
        assert done.returncode != 0, "a staging entry was deleted without the annotation"
        entries.patch("staging-kpi", {"metadata": {"annotations": {ALLOW_DELETE: "false"}}})
        done = kube_cluster.kubectl("delete", "rte", "staging-kpi", "-n", ns)
        assert done.returncode != 0, "allow-delete=false let the delete through"

        annotated = kube_cluster.kubectl(
            "annotate", "rte", "prod-kpi", "-n", ns, f"{ALLOW_DELETE}=true"
        )
        assert annotated.returncode == 0, annotated.stderr
        done = kube_cluster.kubectl("delete", "rte", "prod-kpi", "-n", ns)
        assert done.returncode == 0, done.stderr
        assert entries.get("prod-kpi") is None

        done = kube_cluster.kubectl("delete", "rte", "test-kpi", "-n", ns)
        assert done.returncode == 0, f"a test entry must always be deletable: {done.stderr}"
        assert entries.get("test-kpi") is None

        # Deleting the namespace is deliberate: the namespace controller is exempt, or the
        # namespace would stay Terminating for ever.
        controller = "system:serviceaccount:kube-system:namespace-controller"
        done = kube_cluster.kubectl("delete", "rte", "staging-kpi", "-n", ns, f"--as={controller}")
        assert done.returncode == 0, f"the namespace controller was refused: {done.stderr}"
