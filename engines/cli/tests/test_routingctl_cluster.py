"""``routingctl`` against the local stack: a real kube-apiserver (``--source cluster``, ``diff``)
and the Firestore emulator (``--source firestore``, ``diff``).

Covers: the matrix and explain over RoutingEntry objects (the shipped examples applied to a
fresh namespace), also as ``kubectl routing`` through kubectl's plugin lookup; the §3 conflict
rule on real creationTimestamps (the older entry wins even when its name sorts later);
explain over Firestore documents; and ``diff`` — in sync when the projections are exactly what
the operator writes, then drift made by hand (a changed field in Firestore, a key deleted from
a ConfigMap), an orphaned document and ConfigMap key, a conflicting entry, an entry not yet
projected, and nothing once the projections are repaired. The projections are written here the
way §5 says the operator writes them, so these tests do not depend on the operator running; the
end-to-end run with the operator is the last test, skipped when the operator is absent.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.handles import FirestoreEmulator, KubeCluster
from engines.cli import main
from engines.routing import CATALOG, RoutingRecord, Source, parse_spec

ROOT = Path(__file__).resolve().parents[3]
GROUP, VERSION, PLURAL = "routing.engines.io", "v1alpha1", "routingentries"
MANAGED = {"app.kubernetes.io/managed-by": "routing-operator"}
KINDS = [k.value for k in CATALOG]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def examples() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs += [
            d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "RoutingEntry"
        ]
    return docs


def body(name: str, tenant: str, kind: str, collection: str, env: str = "prod") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RoutingEntry",
        "metadata": {"name": name},
        "spec": {
            "tenant": tenant,
            "env": env,
            "resourceKind": kind,
            "backend": "firestore",
            "firestore": {"collection": collection},
        },
    }


class Cluster:
    """Create RoutingEntries and hand-made projections in one namespace."""

    def __init__(self, kube: KubeCluster, namespace: str) -> None:
        from kubernetes import client

        self.kube = kube
        self.ns = namespace
        self.api = kube.api_client()
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.uid = str(self.core.read_namespace("kube-system").metadata.uid)
        """The cluster identity the operator records by default."""

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": self.ns}}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, obj)  # type: ignore[no-any-return]

    def record(self, obj: dict[str, Any]) -> RoutingRecord:
        meta = obj["metadata"]
        return RoutingRecord.from_spec(
            parse_spec(obj["spec"]),
            generation=int(meta["generation"]),
            source=Source(cluster=self.uid, namespace=self.ns, name=meta["name"], uid=meta["uid"]),
        )

    def project_configmap(self, records: list[RoutingRecord]) -> None:
        from kubernetes import client

        by_name: dict[str, dict[str, str]] = {}
        for r in records:
            by_name.setdefault(r.key.configmap_name, {})[r.key.configmap_key] = json.dumps(
                r.to_document(), sort_keys=True, separators=(",", ":")
            )
        for name, data in by_name.items():
            cm = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=name, labels=MANAGED), data=data
            )
            self.core.create_namespaced_config_map(self.ns, cm)

    def close(self) -> None:
        self.api.close()


@pytest.fixture
def cluster(kube_cluster: KubeCluster, namespace: str) -> Iterator[Cluster]:
    c = Cluster(kube_cluster, namespace)
    yield c
    c.close()


def cluster_args(c: Cluster) -> list[str]:
    return ["--source", "cluster", "-n", c.ns, "--kubeconfig", str(c.kube.kubeconfig)]


# -- cluster source ----------------------------------------------------------------------------


def test_matrix_and_explain_over_the_applied_examples(cluster: Cluster) -> None:
    for obj in examples():
        cluster.create(obj)
    code, out, err = run(
        "matrix", "--env", "prod", "--tenants", "acme,globex", *cluster_args(cluster), "-o", "json"
    )
    assert code == 0, err
    cells = {(c["tenant"], c["resource_kind"]): c for c in json.loads(out)["cells"]}
    assert all(cells["acme", k]["state"] == "own" for k in KINDS)
    assert all(cells["globex", k]["state"] == "default" for k in KINDS)
    assert cells["acme", "chat_bus"]["origin"] == f"RoutingEntry {cluster.ns}/acme-prod-chat-bus"

    code, out, _ = run(
        "explain",
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--kind",
        "raw_storage",
        *cluster_args(cluster),
    )
    assert code == 0
    assert f"source:    RoutingEntry {cluster.ns}/acme-prod-raw-storage" in out
    assert '"bucket": "acme-prod-media"' in out


def test_kubectl_routing_plugin_renders_the_matrix(cluster: Cluster, tmp_path: Path) -> None:
    for obj in examples()[:3]:
        cluster.create(obj)
    plugin = tmp_path / "kubectl-routing"
    plugin.write_text(f'#!/bin/sh\nexec {sys.executable} -m engines.cli "$@"\n')
    plugin.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(cluster.kube.kubeconfig),
    }
    done = subprocess.run(
        [
            "kubectl",
            "routing",
            "matrix",
            "--env",
            "prod",
            "--source",
            "cluster",
            "-n",
            cluster.ns,
            "--kinds",
            "feature_flags,kpi,budget,seo",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # seo has no entry yet
    assert "routing matrix: env prod" in done.stdout
    row = next(line for line in done.stdout.splitlines() if "│ seo" in line)
    assert "MISSING" in row


def test_cluster_conflict_oldest_wins_even_when_its_name_sorts_later(cluster: Cluster) -> None:
    cluster.create(body("zz-older", "acme", "kpi", "older"))
    time.sleep(1.1)  # creationTimestamp has second resolution
    cluster.create(body("aa-newer", "acme", "kpi", "newer"))
    code, out, _ = run(
        "explain",
        "--env",
        "prod",
        "--tenant",
        "acme",
        "--kind",
        "kpi",
        *cluster_args(cluster),
        "-o",
        "json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["winner"]["entry"] == f"{cluster.ns}/zz-older"
    assert result["winner"]["config"]["collection"] == "older"
    assert result["steps"][0]["losers"] == [f"RoutingEntry {cluster.ns}/aa-newer"]


def test_cluster_source_errors_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.kubeconfig"
    code, out, err = run(
        "matrix", "--env", "prod", "--source", "cluster", "--kubeconfig", str(missing)
    )
    assert (code, out) == (2, "")
    assert "cannot load kubeconfig" in err


# -- firestore source --------------------------------------------------------------------------


def test_explain_over_firestore_documents(firestore_emulator: FirestoreEmulator) -> None:
    from google.cloud import firestore

    collection = f"routing_{uuid.uuid4().hex[:8]}"
    client = firestore_emulator.client()
    for name, tenant in (("default-seo", "*"), ("acme-seo", "acme")):
        record = RoutingRecord.from_spec(
            parse_spec(body(name, tenant, "seo", f"seo_{name}")["spec"]),
            generation=1,
            source=Source(namespace="engines", name=name, uid=str(uuid.uuid4())),
        )
        client.collection(collection).document(record.key.document_id).set(
            {**record.to_document(), "updated_at": firestore.SERVER_TIMESTAMP}
        )
    client.collection(collection).document("prod:broken:*:seo").set(
        {"tenant": "broken", "env": "prod"}
    )
    args = [
        "explain",
        "--env",
        "prod",
        "--kind",
        "seo",
        "--source",
        "firestore",
        "--collection",
        collection,
    ]
    code, out, _ = run(*args, "--tenant", "acme", "-o", "json")
    assert code == 0
    result = json.loads(out)
    assert result["winner"]["origin"] == f"firestore {collection}/prod:acme:*:seo"
    assert result["winner"]["entry"] == "engines/acme-seo"
    assert [i["origin"] for i in result["invalid"]] == [f"firestore {collection}/prod:broken:*:seo"]
    code, out, _ = run(*args, "--tenant", "globex")
    assert code == 0 and "prod:*:*:seo" in out.split("wins")[0].splitlines()[-1]


# -- diff --------------------------------------------------------------------------------------


def diff(c: Cluster, collection: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = run(
        "diff",
        "-n",
        c.ns,
        "--kubeconfig",
        str(c.kube.kubeconfig),
        "--collection",
        collection,
        *extra,
        "-o",
        "json",
    )
    assert code in (0, 1), err
    return code, json.loads(out), err


def test_diff_in_sync_then_hand_made_drift_then_repaired(
    cluster: Cluster, firestore_emulator: FirestoreEmulator
) -> None:
    from google.cloud import firestore

    collection = f"routing_{uuid.uuid4().hex[:8]}"
    fs = firestore_emulator.client().collection(collection)
    created = [
        cluster.create(body("acme-kpi", "acme", "kpi", "kpi")),
        cluster.create(body("default-seo", "*", "seo", "seo")),
    ]
    records = [cluster.record(o) for o in created]
    for r in records:
        fs.document(r.key.document_id).set(
            {**r.to_document(), "updated_at": firestore.SERVER_TIMESTAMP}
        )
    cluster.project_configmap(records)

    code, report, _ = diff(cluster, collection)
    assert code == 0
    assert [(f["state"], f["entry"]) for f in report["findings"]] == [  # in identity order
        ("in-sync", f"{cluster.ns}/default-seo"),
        ("in-sync", f"{cluster.ns}/acme-kpi"),
    ]

    # drift by hand: a field changed in Firestore, a key deleted from a ConfigMap
    fs.document("prod:acme:*:kpi").update({"config.collection": "hacked"})
    cluster.core.patch_namespaced_config_map(
        "routing.prod", cluster.ns, [{"op": "remove", "path": "/data/_._.seo.json"}]
    )
    # orphans: a document and a key whose RoutingEntry is gone
    gone = RoutingRecord.from_spec(
        parse_spec(body("gone", "acme", "budget", "budget")["spec"]),
        source=Source(
            cluster=cluster.uid, namespace=cluster.ns, name="gone", uid=str(uuid.uuid4())
        ),
    )
    fs.document(gone.key.document_id).set(gone.to_document())
    cluster.core.patch_namespaced_config_map(
        "routing.prod.acme",
        cluster.ns,
        {"data": {gone.key.configmap_key: json.dumps(gone.to_document())}},
    )
    # a conflicting entry (same identity as acme-kpi, newer) and one not projected yet
    time.sleep(1.1)
    cluster.create(body("acme-kpi-again", "acme", "kpi", "again"))
    chat = body("new-chat", "acme", "chat_bus", "unused")
    chat["spec"] = {**chat["spec"], "backend": "redis", "redis": {"url": "redis://r:6379/0"}}
    chat["spec"].pop("firestore")
    cluster.create(chat)
    code, report, _ = diff(cluster, collection)
    assert code == 1
    got = {(f["state"], f["entry"], f["projection"]): f for f in report["findings"]}
    drift_fs = got["drifted", f"{cluster.ns}/acme-kpi", "firestore"]
    assert drift_fs["fields"] == [
        {"field": "config.collection", "want": "kpi", "have": "hacked", "problem": "differs"}
    ]
    assert drift_fs["location"] == f"{collection}/prod:acme:*:kpi"
    drift_cm = got["drifted", f"{cluster.ns}/default-seo", "configmap"]
    assert drift_cm["detail"] == "key missing"
    assert drift_cm["location"] == f"{cluster.ns}/routing.prod[_._.seo.json]"
    assert got["orphaned", None, "firestore"]["key"] == "prod:acme:*:budget"
    assert "gone, which no longer exists" in got["orphaned", None, "firestore"]["detail"]
    assert (
        got["orphaned", None, "configmap"]["location"]
        == f"{cluster.ns}/routing.prod.acme[acme._.budget.json]"
    )
    assert got["conflicting", f"{cluster.ns}/acme-kpi-again", None]["detail"].startswith(
        f"same identity as {cluster.ns}/acme-kpi"
    )
    assert got["drifted", f"{cluster.ns}/new-chat", "firestore"]["detail"] == "document missing"
    assert got["drifted", f"{cluster.ns}/new-chat", "configmap"]["detail"] == "key missing"
    assert report["summary"]["orphaned"] == 2

    # text output names projection and field on one line
    code, out, _ = run(
        "diff",
        "-n",
        cluster.ns,
        "--kubeconfig",
        str(cluster.kube.kubeconfig),
        "--collection",
        collection,
    )
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("drifted") and "acme-kpi " in x)
    assert line.endswith(
        f"firestore {collection}/prod:acme:*:kpi: config.collection: have 'hacked', want 'kpi'"
    )

    # repair (what the operator does) and clean up: nothing left to report
    for name in ("acme-kpi-again", "new-chat"):
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL, name)
    fs.document(gone.key.document_id).delete()
    for r in records:
        fs.document(r.key.document_id).set(
            {**r.to_document(), "updated_at": firestore.SERVER_TIMESTAMP}
        )
    for name in ("routing.prod", "routing.prod.acme"):
        cluster.core.delete_namespaced_config_map(name, cluster.ns)
    cluster.project_configmap(records)
    code, report, _ = diff(cluster, collection)
    assert code == 0, report
    assert report["summary"]["in-sync"] == 2


def test_diff_ignores_other_clusters_documents_except_one_holding_an_entrys_identity(
    cluster: Cluster, firestore_emulator: FirestoreEmulator
) -> None:
    collection = f"routing_{uuid.uuid4().hex[:8]}"
    fs = firestore_emulator.client().collection(collection)
    record = cluster.record(cluster.create(body("acme-kpi", "acme", "kpi", "kpi")))
    for kind in ("kpi", "budget"):  # the first holds acme-kpi's identity
        theirs = RoutingRecord.from_spec(
            parse_spec(body("far", "acme", kind, kind)["spec"]),
            source=Source(cluster="other", namespace=cluster.ns, name="far", uid="u-" + kind),
        )
        fs.document(theirs.key.document_id).set(theirs.to_document())
    cluster.project_configmap([record])

    code, report, _ = diff(cluster, collection)

    assert code == 1
    assert [(f["state"], f["key"], f["detail"]) for f in report["findings"]] == [
        (
            "conflicting",
            "prod:acme:*:kpi",
            f"held by cluster other (RoutingEntry {cluster.ns}/far there); written nowhere "
            "until adopted (annotation routing.engines.io/adopt)",
        )
    ]
    code, _, err = run("diff", "--kubeconfig", str(cluster.kube.kubeconfig), "--cluster-id", "a b")
    assert code == 2 and "--cluster-id 'a b' is not a valid cluster identity" in err


def test_diff_paused_entries_are_not_compared(
    cluster: Cluster, firestore_emulator: FirestoreEmulator
) -> None:
    obj = body("paused-kpi", "acme", "kpi", "kpi")
    obj["metadata"]["annotations"] = {"routing.engines.io/paused": "true"}
    cluster.create(obj)
    code, report, _ = diff(cluster, f"routing_{uuid.uuid4().hex[:8]}", "--projections", "firestore")
    assert code == 0
    assert [f["state"] for f in report["findings"]] == ["paused"]


# -- with the operator -------------------------------------------------------------------------


class _Operator:
    """``routing-operator`` as a subprocess on one namespace and collection (started by us)."""

    def __init__(self, kube: KubeCluster, namespace: str, collection: str, log: Path) -> None:
        self.args = [
            sys.executable,
            "-m",
            "routing_operator.cli",
            "--namespace",
            namespace,
            "--collection",
            collection,
            "--standalone",
            "--drift-period",
            "1",
            "--metrics-port",
            "0",
            "--liveness-port",
            "0",
        ]
        self.env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def _until_in_sync(
    c: Cluster, collection: str, op: _Operator, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, report, _ = diff(c, collection)
        if code == 0:
            return report
        if time.monotonic() > deadline:
            raise AssertionError(
                f"never in sync: {report}\n--- operator log ---\n{op.log.read_text()[-3000:]}"
            )
        time.sleep(0.3)


def test_diff_reports_hand_made_drift_and_nothing_once_the_operator_repaired_it(
    cluster: Cluster, firestore_emulator: FirestoreEmulator, tmp_path: Path
) -> None:
    pytest.importorskip("routing_operator.cli")
    collection = f"routing_{uuid.uuid4().hex[:8]}"
    op = _Operator(cluster.kube, cluster.ns, collection, tmp_path / "operator.log")
    cluster.create(body("acme-kpi", "acme", "kpi", "kpi"))
    op.start()
    try:
        report = _until_in_sync(cluster, collection, op)
        assert [f["state"] for f in report["findings"]] == ["in-sync"]
        op.stop()  # so the drift stays until diff has seen it

        fs = firestore_emulator.client().collection(collection)
        fs.document("prod:acme:*:kpi").update({"config.collection": "by-hand"})
        code, report, _ = diff(cluster, collection)
        assert code == 1
        drifted = [f for f in report["findings"] if f["state"] == "drifted"]
        assert [(f["projection"], [x["field"] for x in f["fields"]]) for f in drifted] == [
            ("firestore", ["config.collection"])
        ]

        op.start()
        report = _until_in_sync(cluster, collection, op)
        assert report["summary"] == {**{s: 0 for s in report["summary"]}, "in-sync": 1}
    finally:
        op.stop()
