"""Early writes: a synced entry's changed spec reaches Firestore from its watch event, ahead of
kopf's handling (operator/routing_operator/early_writes.py), against the real stack
(kube-apiserver + etcd, Firestore emulator).

Covers: a switch is written once, started before kopf invokes the reconcile, which reports that
write (``syncedAt`` moves, no drift counted); a quick series of changes, ending with a change
back to the first spec, leaves the document at the entry's last spec; an entry deleted right
after a switch leaves no document behind (the deletion waits for the write started before it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from operator_harness import ALLOW_DELETE, Entries, OperatorProcess, doc, entry, running_operator

from devstack import free_port
from devstack.testing import wait_for

DOC_ID = "prod:acme:*:kpi"
EARLY = "routing_operator_early_writes_total"


def switched_to(entries: Entries, name: str, generation: int) -> dict[str, Any] | None:
    """The entry's status once it reports Ready for ``generation``."""
    obj = entries.get(name) or {}
    st = obj.get("status") or {}
    ready = [c for c in st.get("conditions") or [] if c["type"] == "Ready"]
    done = st.get("observedGeneration") == generation and ready and ready[0]["status"] == "True"
    return st if done else None


def start(kube_cluster: Any, entries: Entries, collection: str, tmp_path: Path) -> Any:
    return running_operator(
        kube_cluster.kubeconfig, entries.ns, collection, tmp_path, "-v", metrics_port=free_port()
    )


def synced(entries: Entries, op: OperatorProcess, name: str = "acme-kpi") -> dict[str, Any]:
    entries.create(entry(name, settings={"collection": "kpi_a"}))
    entries.wait_reason(name, "Synced", "True")
    wait_for(lambda: op.metric("routing_operator_reconciles_total") > 0, timeout=30, what="metrics")
    return entries.get(name)["status"]  # type: ignore[index,no-any-return]


def test_a_switch_is_written_from_its_watch_event_before_kopf_invokes_the_reconcile(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, fs: Any, collection: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    with start(kube_cluster, entries, collection, tmp_path) as op:
        before = synced(entries, op)
        assert op.metric(EARLY) == 0, "a new entry is kopf's to write"
        entries.patch("acme-kpi", {"spec": {"firestore": {"collection": "kpi_b"}}})
        after = wait_for(
            lambda: switched_to(entries, "acme-kpi", 2), timeout=60, what="the switch's status"
        )
        log = op.log()
        assert op.metric(EARLY) == 1
        assert op.metric("routing_operator_drift_repairs_total") == 0
    stored = doc(fs, collection, DOC_ID)
    assert stored is not None and stored["config"]["collection"] == "kpi_b"
    assert stored["revision"] == after["revision"] != before["revision"]
    # The reconcile reported the early write as its own: the document was written now.
    assert after["firestore"]["syncedAt"] >= before["firestore"]["syncedAt"]
    assert after["firestore"]["document"] == f"{collection}/{DOC_ID}"
    early = log.index("early write of revision")
    invoked = log.rindex("Handler 'reconcile' is invoked")
    assert early < invoked, "the write started only after kopf invoked the reconcile"


def test_quick_changes_ending_back_at_the_first_spec_leave_the_document_at_the_last(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, fs: Any, collection: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    with start(kube_cluster, entries, collection, tmp_path) as op:
        first = synced(entries, op)
        for name in ("kpi_b", "kpi_c", "kpi_a"):  # no wait in between: back to the first
            patched = entries.patch("acme-kpi", {"spec": {"firestore": {"collection": name}}})
        generation = patched["metadata"]["generation"]
        st = wait_for(
            lambda: switched_to(entries, "acme-kpi", generation), timeout=60, what="the status"
        )
        assert st["revision"] == first["revision"]  # the same spec as at first

        def document_is_the_entrys() -> bool:
            stored = doc(fs, collection, DOC_ID) or {}
            return stored.get("config", {}).get("collection") == "kpi_a"

        # The status may be set before the last early write lands (kopf saw no difference
        # from what it last handled): the document follows within the deadline.
        wait_for(document_is_the_entrys, timeout=30, what="the document back at kpi_a")
        assert op.metric(EARLY) >= 1


def test_an_entry_deleted_right_after_a_switch_leaves_no_document(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, fs: Any, collection: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    with start(kube_cluster, entries, collection, tmp_path) as op:
        synced(entries, op)
        entries.patch("acme-kpi", {"metadata": {"annotations": ALLOW_DELETE}})
        wait_for(
            lambda: (
                switched_to(entries, "acme-kpi", 1)
                and "allow-delete" in str((entries.get("acme-kpi") or {})["metadata"])
            ),
            timeout=30,
            what="the annotation",
        )
        entries.patch("acme-kpi", {"spec": {"firestore": {"collection": "kpi_b"}}})
        entries.delete("acme-kpi")
        wait_for(lambda: entries.get("acme-kpi") is None, timeout=60, what="the entry gone")
        assert op.metric(EARLY) == 1, "the switch was not written early"
    assert doc(fs, collection, DOC_ID) is None
