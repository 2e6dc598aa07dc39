"""The operator's intake of new entries, against the real stack (kube-apiserver + etcd,
Firestore emulator): a burst of creations beyond what kopf may queue waits outside kopf.

Covers: with one worker, a burst of new entries is held in the intake (the
``routing_operator_entries_held`` gauge rises), every entry still becomes Ready, and the gauge
returns to 0; an entry changed while it waited is reconciled at its latest spec, not at the one
it was created with; an entry deleted while it waited is gone without the operator writing
anything for it; kopf's per-event success line of the operator's event handler is left out of
the log (without ``-v``), its reconcile lines are not.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from operator_harness import Entries, OperatorProcess, doc, entry

from devstack import free_port
from devstack.testing import wait_for

BURST = 40


def test_a_burst_waits_in_the_intake_and_every_entry_is_reconciled_at_its_latest_spec(
    kube_cluster: Any, firestore_emulator: Any, entries: Entries, collection: str, tmp_path: Path
) -> None:
    fs = firestore_emulator.client()
    op = OperatorProcess(
        kube_cluster.kubeconfig,
        entries.ns,
        collection,
        tmp_path,
        "--concurrent-entries=1",
        "--api-connections=1",
        metrics_port=free_port(),
    ).start()
    peak = 0.0
    burst_over = threading.Event()

    def watch_gauge() -> None:
        nonlocal peak
        while not burst_over.is_set():
            peak = max(peak, op.metric("routing_operator_entries_held"))
            burst_over.wait(0.02)

    watcher = threading.Thread(target=watch_gauge, daemon=True)
    try:
        # Watching (not listing) once a first entry is handled: the burst comes by the watch.
        entries.create(entry("first", tenant="first"))
        entries.wait_reason("first", "Synced", "True", timeout=60)
        watcher.start()
        names = [f"e{i:02d}" for i in range(BURST)]
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: entries.create(entry(names[i], tenant=f"t{i:02d}")), range(BURST)
                )
            )
        # The last entries are still waiting for the single worker: change one, delete another.
        entries.patch(names[-1], {"spec": {"firestore": {"collection": "changed_data"}}})
        entries.delete(names[-2])
        for name in names[:-2] + names[-1:]:
            entries.wait_reason(name, "Synced", "True", timeout=120)
        wait_for(lambda: entries.get(names[-2]) is None, what=f"{names[-2]} gone")
        wait_for(lambda: op.metric("routing_operator_entries_held") == 0, what="the intake empty")
    finally:
        burst_over.set()
        op.stop()
    log = op.log()
    assert peak > 0, f"the burst never waited in the intake: {log[-3000:]}"
    assert "Handler 'claims' succeeded" not in log
    assert log.count("Handler 'reconcile' succeeded") >= BURST - 1
    latest = doc(fs, collection, f"prod:t{BURST - 1:02d}:*:kpi")
    assert latest is not None and latest["config"]["collection"] == "changed_data", latest
    obj = entries.get(names[-1])
    assert obj is not None and obj["status"]["observedGeneration"] == 2
    assert doc(fs, collection, f"prod:t{BURST - 2:02d}:*:kpi") is None
    assert f"t{BURST - 2:02d}._.kpi.json" not in (
        entries.configmap_data(f"routing.prod.t{BURST - 2:02d}") or {}
    )
