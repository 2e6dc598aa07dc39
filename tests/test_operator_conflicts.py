"""Two RoutingEntries claiming one identity, against the real stack: the oldest wins, the loser
is written nowhere and takes over on its own when the winner goes, including a winner deleted
while no operator ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from operator_harness import Entries, OperatorProcess, doc, entry

from devstack.testing import wait_for


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
