"""Deleting a watched namespace under the operator, in the namespace controller's worst order.

Why: deleting a namespace makes the namespace controller delete everything in it at once,
including the chart's Role that lets the operator read and write there. If the Role goes before
the operator has released the entries' finalizers, an operator whose patch right on entries
lived in that Role could never release them, and the namespace stayed Terminating for ever.
On a real node (``tests/e2e``) that order is a race; here it is forced, on the real API server:
the namespace is marked for deletion (the local stack runs no namespace controller, so it stays
Terminating with its content), the operator's Role and RoleBinding there are deleted first,
then the entries are deleted under the namespace controller's identity. The operator runs as a
subprocess with a real token of the chart's ServiceAccount.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

from chart_harness import (
    bind_namespace,
    confined_values,
    install,
    service_account_kubeconfig,
    uninstall,
)
from operator_harness import Entries, entry, running_operator

from devstack.testing import wait_for

NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"


def test_operator_releases_the_finalizers_of_a_namespace_deleted_with_its_role(
    helm: Path, kube_cluster: Any, firestore_emulator: Any, namespace: str, tmp_path: Path
) -> None:
    """Both entries go (their finalizers released through the cluster-wide patch right); the
    ``test`` entry's document is deleted, the ``prod`` one's kept (deleted without
    ``allow-delete``: nothing served is lost by accident); the ConfigMap the operator may no
    longer touch is left to the namespace's deletion, said once in its log."""
    doomed = f"t-doomed-{secrets.token_hex(3)}"
    assert kube_cluster.kubectl("create", "namespace", doomed).returncode == 0
    bind_namespace(kube_cluster, doomed)
    rel = install(
        helm,
        kube_cluster,
        namespace,
        confined_values(namespace, watchNamespaces=[namespace, doomed]),
    )
    kubeconfig = service_account_kubeconfig(kube_cluster, rel, tmp_path / "sa.kubeconfig")
    collection = f"routing_{secrets.token_hex(4)}"
    fs = firestore_emulator.client()
    operator = running_operator(
        kubeconfig,
        namespace,
        collection,
        tmp_path,
        "--namespace",
        doomed,
        "--peering",
        rel.peering,
        "--drift-period",
        "1",
    )
    try:
        with kube_cluster.api_client() as api, operator as op:
            entries = Entries(api, doomed)
            for env in ("test", "prod"):
                entries.create(entry(f"kpi-{env}", env=env))
            documents = {}
            for env in ("test", "prod"):
                entries.wait_reason(f"kpi-{env}", "Synced", "True", timeout=60)
                status = (entries.get(f"kpi-{env}") or {})["status"]
                documents[env] = status["firestore"]["document"]
            assert entries.configmap_data("routing.test.acme"), "the test entry's ConfigMap"
            assert all(fs.document(d).get().exists for d in documents.values())

            assert (
                kube_cluster.kubectl("delete", "namespace", doomed, "--wait=false").returncode == 0
            )
            for kind in ("RoleBinding", "Role"):
                (name,) = [
                    o["metadata"]["name"]
                    for o in rel.objects
                    if o["kind"] == kind and o["metadata"].get("namespace") == doomed
                ]
                gone = kube_cluster.kubectl("delete", kind.lower(), name, "-n", doomed)
                assert gone.returncode == 0, gone.stderr

            def role_gone() -> bool:
                can = kube_cluster.kubectl(
                    "auth", "can-i", "get", "configmaps", "-n", doomed, f"--as={rel.user}"
                )
                return can.stdout.strip() == "no"

            wait_for(role_gone, timeout=30, what="the API server to forget the operator's Role")
            deleted = kube_cluster.kubectl(
                "delete",
                "rte",
                "--all",
                "-n",
                doomed,
                "--wait=false",
                f"--as={NAMESPACE_CONTROLLER}",
            )
            assert deleted.returncode == 0, deleted.stderr

            def both_gone() -> bool:
                return all(entries.get(f"kpi-{env}") is None for env in ("test", "prod"))

            wait_for(
                both_gone,
                timeout=90,
                what=lambda: f"both entries gone; operator log:\n{op.log()[-4000:]}",
            )
            assert not fs.document(documents["test"]).get().exists
            assert fs.document(documents["prod"]).get().exists
            # The test entry's key stays in a ConfigMap the namespace's deletion takes away.
            assert "acme._.kpi.json" in (entries.configmap_data("routing.test.acme") or {})
            refusals = [
                line for line in op.log().splitlines() if "is being deleted and refuses" in line
            ]
            assert len(refusals) == 1, op.log()[-4000:]
            assert f"ConfigMap {doomed}/routing.test.acme" in refusals[0]
            # The drift sweep leaves the unreadable namespace out instead of failing for every
            # namespace, and judges nothing in it (the prod document above is no orphan).
            wait_for(
                lambda: f"namespace {doomed} answers 403" in op.log(),
                timeout=30,
                what=lambda: f"the sweep to leave {doomed} out; log:\n{op.log()[-4000:]}",
            )
            assert "drift sweep failed" not in op.log(), op.log()[-4000:]
            assert op.log().count(f"namespace {doomed} answers 403") == 1, op.log()[-4000:]
            assert fs.document(documents["prod"]).get().exists
    finally:
        uninstall(kube_cluster, rel)
        # No namespace controller here: the namespace stays Terminating until its content goes.
        subprocess.run(
            ["kubectl", f"--kubeconfig={kube_cluster.kubeconfig}", "delete", "configmaps", "--all",
             "-n", doomed, "--ignore-not-found"],
            capture_output=True, check=False,
        )  # fmt: skip
