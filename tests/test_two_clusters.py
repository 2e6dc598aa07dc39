"""Two clusters sharing one Firestore collection, on the real topology: two control planes (two
etcd + kube-apiserver pairs, the second from ``routing-dev``'s ``emulators_from``) on one Firestore
emulator, one operator each, a drift sweep every second.

Covers: neither operator touches the other's documents across several sweeps; an identity both
claim is a Conflict on the later one, naming the other cluster and its owner; adopting on purpose
moves it (an ``Adopted`` Event, the annotation consumed) and the first cluster's entry then
reports Conflict and never takes it back; entries removed without allow-delete (a finalizer
stripped by hand, a plain delete) keep their projections, counted as orphans per cluster;
``routingctl diff`` reports this cluster's orphans only, and ``routingctl prune`` deletes exactly
them (``--dry-run`` nothing), conditional on them being unchanged.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_harness import Entries, OperatorProcess, entry

from devstack import LocalStack, free_port
from devstack.handles import KubeCluster
from devstack.testing import wait_for
from engines.cli.routingctl import main as routingctl

ADOPT = "routing.engines.io/adopt"
SWEEPS = "routing_operator_drift_sweeps_total"


@pytest.fixture(scope="module")
def second_cluster(
    local_stack: LocalStack,
    kube_cluster: KubeCluster,
    firestore_emulator: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KubeCluster]:
    """A second control plane sharing the first stack's emulators (``routing-dev up
    --share-emulators-with``)."""
    local_stack.up([])  # records the first stack's state, whatever it runs itself
    stack = LocalStack(
        tmp_path_factory.mktemp("routing-dev-b"), emulators_from=local_stack.state_dir
    )
    try:
        stack.up(["kube-apiserver"])
        shared = stack.env().get("FIRESTORE_EMULATOR_HOST")
        assert shared in (None, firestore_emulator.host), "not the first stack's emulator"
        yield KubeCluster(kubeconfig=stack.kubeconfig, mode="local")
    finally:
        stack.down()


class Side:
    """One cluster of the pair: its entries in one namespace, its identity and its operator."""

    def __init__(self, cluster: KubeCluster, api: client.ApiClient, namespace: str) -> None:
        self.cluster = cluster
        self.entries = Entries(api, namespace)
        self.uid = str(client.CoreV1Api(api).read_namespace("kube-system").metadata.uid)
        self.op: OperatorProcess | None = None

    def start(self, collection: str, log_dir: Path) -> OperatorProcess:
        self.op = OperatorProcess(
            self.cluster.kubeconfig,
            self.entries.ns,
            collection,
            log_dir,
            "--drift-period",
            "1",
            metrics_port=free_port(),
        ).start()
        return self.op

    def sweeps(self) -> float:
        assert self.op is not None
        return self.op.metric(SWEEPS)

    def wait_sweeps(self, count: int) -> None:
        """Until this operator completed ``count`` more drift sweeps."""
        target = self.sweeps() + count
        wait_for(lambda: self.sweeps() >= target, timeout=60, what=f"{count} sweeps")


@pytest.fixture
def pair(
    kube_cluster: KubeCluster,
    second_cluster: KubeCluster,
    firestore_emulator: Any,
    tmp_path: Path,
) -> Iterator[tuple[Side, Side, str]]:
    """Cluster A and cluster B, a namespace of the same name in each, and a fresh collection;
    their operators are started by the test and stopped here."""
    name = f"shared-{uuid.uuid4().hex[:6]}"
    collection = f"routing_{uuid.uuid4().hex[:8]}"
    with kube_cluster.api_client() as api_a, second_cluster.api_client() as api_b:
        sides = []
        for cluster, api in ((kube_cluster, api_a), (second_cluster, api_b)):
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
            )
            sides.append(Side(cluster, api, name))
        a, b = sides
        assert a.uid != b.uid
        try:
            yield a, b, collection
        finally:
            for side in sides:
                if side.op is not None:
                    side.op.stop()
                    print(f"--- {side.cluster.kubeconfig} operator ---\n{side.op.log()[-5000:]}")


def stored(fs: Any, collection: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    """document id → (update time, fields) of every document."""
    return {s.id: (s.update_time, s.to_dict()) for s in fs.collection(collection).stream()}


def events(entries: Entries, name: str, reason: str) -> list[Any]:
    found = entries.core.list_namespaced_event(
        entries.ns, field_selector=f"involvedObject.name={name},reason={reason}"
    )
    return list(found.items)


def test_clusters_keep_to_their_own_documents_and_adoption_is_one_way(
    pair: tuple[Side, Side, str], firestore_emulator: Any, tmp_path: Path
) -> None:
    a, b, collection = pair
    fs = firestore_emulator.client()
    a.start(collection, tmp_path)
    b.start(collection, tmp_path)
    a.entries.create(entry("kpi", settings={"collection": "from_a"}))
    a.entries.create(entry("seo", kind="seo"))
    b.entries.create(entry("budget", kind="budget"))
    for side, name in ((a, "kpi"), (a, "seo"), (b, "budget")):
        side.entries.wait_reason(name, "Synced", "True")
    b.entries.create(entry("kpi", settings={"collection": "from_b"}))
    lost = b.entries.wait_reason("kpi", "Conflict", "False")
    assert f"belongs to cluster {a.uid} (RoutingEntry {a.entries.ns}/kpi there)" in lost["message"]
    assert ADOPT in lost["message"]
    written = b.entries.configmap_data("routing.prod.acme") or {}
    assert "acme._.kpi.json" not in written, "a Conflict writes nowhere"

    before = stored(fs, collection)
    assert {k: v[1]["source"]["cluster"] for k, v in before.items()} == {
        "prod:acme:*:kpi": a.uid,
        "prod:acme:*:seo": a.uid,
        "prod:acme:*:budget": b.uid,
    }
    a.wait_sweeps(3)
    b.wait_sweeps(3)
    assert stored(fs, collection) == before, "a sweep touched a document"
    assert b.entries.condition("kpi")["reason"] == "Conflict"

    # B adopts on purpose; the annotation is consumed, A's entry turns to Conflict
    b.entries.patch("kpi", {"metadata": {"annotations": {ADOPT: "true"}}})
    b.entries.wait_reason("kpi", "Synced", "True")
    document = stored(fs, collection)["prod:acme:*:kpi"][1]
    assert document["source"]["cluster"] == b.uid
    assert document["config"]["collection"] == "from_b"
    adopted = wait_for(
        lambda: events(b.entries, "kpi", "Adopted"), timeout=30, what="the Adopted Event"
    )
    assert f"from cluster {a.uid}" in adopted[0].message
    wait_for(
        lambda: ADOPT not in ((b.entries.get("kpi") or {})["metadata"].get("annotations") or {}),
        timeout=30,
        what="the adopt annotation consumed",
    )
    lost = a.entries.wait_reason("kpi", "Conflict", "False")
    assert f"belongs to cluster {b.uid} (RoutingEntry {b.entries.ns}/kpi there)" in lost["message"]

    # and A never takes it back by itself
    after = stored(fs, collection)
    a.wait_sweeps(3)
    b.wait_sweeps(3)
    assert stored(fs, collection) == after
    assert a.entries.condition("kpi")["reason"] == "Conflict"
    assert a.entries.condition("seo")["status"] == "True"
    assert a.op is not None and b.op is not None
    assert "orphan" not in a.op.log() and "orphan" not in b.op.log()


def test_removed_entries_keep_their_projections_and_prune_deletes_only_this_clusters(
    pair: tuple[Side, Side, str], firestore_emulator: Any, tmp_path: Path
) -> None:
    a, b, collection = pair
    fs = firestore_emulator.client()
    a.start(collection, tmp_path)
    b.start(collection, tmp_path)
    a.entries.create(entry("kpi"))
    a.entries.create(entry("seo", kind="seo"))
    b.entries.create(entry("budget", kind="budget"))
    for side, name in ((a, "kpi"), (a, "seo"), (b, "budget")):
        side.entries.wait_reason(name, "Synced", "True")

    # A: a finalizer removed by hand (no handler runs), and a plain delete; B: a plain delete
    a.entries.patch("kpi", {"metadata": {"finalizers": None}})
    a.entries.delete("kpi")
    a.entries.delete("seo")
    b.entries.delete("budget")
    for side, name in ((a, "kpi"), (a, "seo"), (b, "budget")):
        wait_for(lambda s=side, n=name: s.entries.get(n) is None, timeout=60, what=f"{name} gone")
    assert a.op is not None and b.op is not None
    wait_for(
        lambda: a.op.metric("routing_operator_orphans", {"env": "prod"}) == 4,  # type: ignore[union-attr]
        timeout=60,
        what="A's two documents and two keys counted as orphans",
    )
    wait_for(
        lambda: b.op.metric("routing_operator_orphans", {"env": "prod"}) == 2,  # type: ignore[union-attr]
        timeout=60,
        what="B's document and key counted as orphans",
    )
    assert set(stored(fs, collection)) == {
        "prod:acme:*:kpi",
        "prod:acme:*:seo",
        "prod:acme:*:budget",
    }
    assert set(a.entries.configmap_data("routing.prod.acme") or {}) == {
        "acme._.kpi.json",
        "acme._.seo.json",
    }

    def ctl(side: Side, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        argv = [*args, "--kubeconfig", str(side.cluster.kubeconfig), "--collection", collection]
        argv += ["-n", side.entries.ns]  # entries of other tests share these identities
        code = routingctl(argv, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    code, out, _ = ctl(a, "diff", "-o", "json")
    report = json.loads(out)
    orphans = sorted(
        (f["projection"], f["key"]) for f in report["findings"] if f["state"] == "orphaned"
    )
    assert code == 1
    assert orphans == [
        ("configmap", "prod:acme:*:kpi"),
        ("configmap", "prod:acme:*:seo"),
        ("firestore", "prod:acme:*:kpi"),
        ("firestore", "prod:acme:*:seo"),
    ], "B's document is none of A's business"

    code, out, _ = ctl(a, "prune", "--dry-run")
    assert code == 0 and out.count("would delete ") == 4, out
    assert len(stored(fs, collection)) == 3

    code, out, err = ctl(a, "prune", "--env", "prod")
    assert code == 0, err
    assert sorted(out.splitlines()) == sorted(
        [
            f"deleted configmap {a.entries.ns}/routing.prod.acme[acme._.kpi.json] "
            f"(RoutingEntry {a.entries.ns}/kpi is gone)",
            f"deleted configmap {a.entries.ns}/routing.prod.acme[acme._.seo.json] "
            f"(RoutingEntry {a.entries.ns}/seo is gone)",
            f"deleted firestore {collection}/prod:acme:*:kpi (RoutingEntry {a.entries.ns}/kpi "
            "is gone)",
            f"deleted firestore {collection}/prod:acme:*:seo (RoutingEntry {a.entries.ns}/seo "
            "is gone)",
        ]
    )
    assert f"of cluster {a.uid}" in err
    remaining = stored(fs, collection)
    assert set(remaining) == {"prod:acme:*:budget"}
    assert remaining["prod:acme:*:budget"][1]["source"]["cluster"] == b.uid
    assert a.entries.configmap_data("routing.prod.acme") is None, "the emptied ConfigMap is deleted"
    assert set(b.entries.configmap_data("routing.prod.acme") or {}) == {"acme._.budget.json"}
    wait_for(
        lambda: a.op.metric("routing_operator_orphans", {"env": "prod"}) == 0,  # type: ignore[union-attr]
        timeout=60,
        what="A's orphans gauge back to 0",
    )
    assert ctl(a, "prune")[1] == ""  # nothing left of A's
