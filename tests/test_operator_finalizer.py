"""The operator's finalizer on new entries, against the real stack (kube-apiserver + etcd,
Firestore emulator).

Covers: a new entry gets ``routing.engines.io/finalizer`` in a version of its own, before any
status (so before anything was written for it), from the operator's event handler in the same
kopf cycle as its first reconcile (kopf never adds it in a cycle of its own); an entry created
while the operator was down, carrying another controller's finalizer, keeps that one and gets
the operator's after it, the same way, when the operator starts; the fields the operator drops
from what it receives (``metadata.managedFields``) stay on the API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import watch
from operator_harness import GROUP, PLURAL, VERSION, Entries, entry, running_operator

from devstack.testing import wait_for

FINALIZER = "routing.engines.io/finalizer"
KOPF_ADDS_IT = "Adding the finalizer"
"""kopf's debug line when it adds the finalizer in a cycle of its own."""


def versions_since(entries: Entries, name: str, since: str) -> list[dict[str, Any]]:
    """Every version of entry ``name`` written after resourceVersion ``since``, in order: a watch
    from that version replays them, up to the first one with a status."""
    seen: list[dict[str, Any]] = []
    w = watch.Watch()  # type: ignore[no-untyped-call]
    for event in w.stream(
        entries.api.list_namespaced_custom_object, GROUP, VERSION, entries.ns, PLURAL,
        resource_version=since, timeout_seconds=10, field_selector=f"metadata.name={name}",
    ):  # fmt: skip
        seen.append(event["object"])
        if (event["object"].get("status") or {}).get("conditions"):
            w.stop()
    return seen


def test_a_new_entry_gets_the_finalizer_before_its_status_in_the_same_kopf_cycle(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    args = (kube_cluster.kubeconfig, entries.ns, collection, tmp_path)
    with running_operator(*args, "-v") as op:
        wait_for(lambda: "claims loaded" in op.log(), timeout=60, what="the operator's start")
        listed = entries.api.list_namespaced_custom_object(GROUP, VERSION, entries.ns, PLURAL)
        entries.create(entry("acme-kpi"))
        entries.wait_reason("acme-kpi", "Synced", "True")
        log = op.log()
    seen = versions_since(entries, "acme-kpi", listed["metadata"]["resourceVersion"])
    first_status = next(i for i, o in enumerate(seen) if (o.get("status") or {}).get("conditions"))
    assert FINALIZER not in (seen[0]["metadata"].get("finalizers") or []), "created with it?"
    with_finalizer = [
        i for i, o in enumerate(seen) if FINALIZER in (o["metadata"].get("finalizers") or [])
    ]
    assert with_finalizer and with_finalizer[0] < first_status, [
        (o["metadata"].get("finalizers"), bool(o.get("status"))) for o in seen
    ]
    assert KOPF_ADDS_IT not in log, "kopf added the finalizer in a cycle of its own"
    # kopf handled the creation once, in the cycle that saw the entry first.
    assert log.count("Creation is in progress") == 1
    obj = entries.get("acme-kpi")
    assert obj is not None and obj["metadata"].get("managedFields"), "stripped on the server?"


def test_an_entry_listed_at_start_keeps_another_finalizer_and_gets_the_operators_after_it(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    body = entry("acme-kpi")
    body["metadata"]["finalizers"] = ["example.com/other"]
    entries.create(body)
    with running_operator(kube_cluster.kubeconfig, entries.ns, collection, tmp_path, "-v") as op:
        entries.wait_reason("acme-kpi", "Synced", "True")
        log = op.log()
    obj = entries.get("acme-kpi")
    assert obj is not None
    assert obj["metadata"]["finalizers"] == ["example.com/other", FINALIZER]
    assert KOPF_ADDS_IT not in log
    # Let the namespace go: the other controller does not exist.
    entries.patch("acme-kpi", {"metadata": {"finalizers": None}})


def test_without_the_operator_nothing_adds_the_finalizer(
    kube_cluster: Any, entries: Entries
) -> None:
    """The control for the tests above: the finalizer comes from the operator, not the CRD."""
    entries.create(entry("acme-kpi"))
    obj = entries.get("acme-kpi")
    assert obj is not None and FINALIZER not in (obj["metadata"].get("finalizers") or [])
