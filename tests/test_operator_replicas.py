"""The operator as a process among others, against the real stack: two replicas in kopf's peering
do not fight (the standby pauses, then resumes when the worker leaves), and each process serves
its metrics and liveness endpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from operator_harness import Entries, OperatorProcess, entry

from devstack import free_port
from devstack.testing import wait_for


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
