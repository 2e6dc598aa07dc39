"""End to end on kind: the image built from the Dockerfile, the chart installed with Helm.

Why: the local suite proves each part against a real API server, but only a cluster with a
kubelet runs the pods — the image's entry points, the non-root read-only container, the probes,
the projected ConfigMap volume that kubelet refreshes in place. This is the user's path:

1. ``docker build`` the image and ``kind load`` it; start the backing services the examples name
   (Redis, a GCS emulator, the Firestore emulator) in namespace ``engines``;
2. ``helm install`` the chart (operator with peering, engines Deployment reading routing from
   the mounted ConfigMaps) — the engines pods run but stay NOT ready: no entries yet;
3. ``kubectl apply -f examples/`` — every entry turns Ready, the Deployment becomes Available;
4. a live backend switch: patch an entry, the same pod (no restart) serves the new revision;
5. the deletion guard refuses ``kubectl delete`` of a prod entry.

Run: ``pytest tests/e2e --cluster=kind`` (CI's kind job). Skips where Docker is unavailable.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engines.devstack._binaries import resolve_binaries
from engines.testing import wait_for

pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "routing-registry"
IMAGE_REPO, IMAGE_TAG = "routing-registry", "e2e"
NS = "engines"
RELEASE = "rr"
ENGINES = f"{RELEASE}-routing-registry-engines"
OPERATOR = f"{RELEASE}-routing-registry-operator"
PROJECT = "routing-e2e"

# Images of the backing services the examples point at (redis.engines.svc, ...).
REDIS_IMAGE = "redis:7.4-alpine"
GCS_IMAGE = "fsouza/fake-gcs-server:1.52.2"
FIRESTORE_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"


def sh(*argv: str | Path, input: str | None = None, timeout: float = 900) -> str:
    done = subprocess.run(
        [str(a) for a in argv], input=input, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(map(str, argv))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def buckets() -> list[str]:
    names = set()
    for f in (ROOT / "examples").glob("*.yaml"):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "RoutingEntry" and "gcs" in doc["spec"]:
                names.add(doc["spec"]["gcs"]["bucket"])
    return sorted(names)


def backing_services() -> str:
    """Redis, fake-gcs-server (buckets pre-created) and the Firestore emulator, in ``engines``."""
    mkdirs = " ".join(f"/data/{b}" for b in buckets())

    def deployment(name: str, port: int, container: dict[str, Any], **pod: Any) -> list[dict]:
        labels = {"app": name}
        return [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": name, **container}], **pod},
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"selector": labels, "ports": [{"port": port, "targetPort": port}]},
            },
        ]

    objs = [
        *deployment("redis", 6379, {"image": REDIS_IMAGE}),
        *deployment(
            "gcs", 4443,
            {
                "image": GCS_IMAGE,
                "args": ["-scheme", "http", "-port", "4443", "-backend", "memory",
                         "-data", "/data", "-public-host", f"gcs.{NS}.svc:4443"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
            initContainers=[{
                "name": "buckets", "image": REDIS_IMAGE,
                "command": ["sh", "-c", f"mkdir -p {mkdirs}"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            volumes=[{"name": "data", "emptyDir": {}}],
        ),
        *deployment(
            "firestore", 8080,
            {
                "image": FIRESTORE_IMAGE,
                "command": ["gcloud", "emulators", "firestore", "start",
                            "--host-port=0.0.0.0:8080", f"--project={PROJECT}"],
            },
        ),
    ]  # fmt: skip
    return "\n---\n".join(yaml.safe_dump(o) for o in objs)


@pytest.fixture(scope="module")
def cluster(e2e_gate: None, request: pytest.FixtureRequest) -> Any:
    kube = request.getfixturevalue("kube_cluster")  # the kind cluster, crds/ applied
    kind = request.getfixturevalue("kind_cluster")
    image = f"{IMAGE_REPO}:{IMAGE_TAG}"
    sh("docker", "build", "--tag", image, ROOT, timeout=1800)
    kind.load_docker_image(image)
    return kube


def kubectl(cluster: Any, *args: str, input: str | None = None) -> str:
    done = cluster.kubectl(*args, input=input)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return str(done.stdout)


@pytest.fixture(scope="module")
def installed(cluster: Any) -> Iterator[Any]:
    helm = resolve_binaries(["helm"])["helm"]
    kubectl(cluster, "apply", "-f", str(ROOT / "examples" / "00-namespace.yaml"))
    kubectl(cluster, "apply", "-f", "-", input=backing_services())
    for name in ("redis", "gcs", "firestore"):
        kubectl(cluster, "-n", NS, "rollout", "status", f"deploy/{name}", "--timeout=600s")
    emulator = f"firestore.{NS}.svc:8080"
    values = {
        "image": {"repository": IMAGE_REPO, "tag": IMAGE_TAG, "pullPolicy": "Never"},
        "operator": {
            "watchNamespaces": [NS],
            "driftPeriod": 10,
            "firestore": {"project": PROJECT, "emulatorHost": emulator},
        },
        "engines": {
            "enabled": True,
            "replicas": 1,
            "env": "prod",
            "tenants": ["acme", "globex"],
            "firestore": {"project": PROJECT, "emulatorHost": emulator},
            "extraEnv": [{"name": "STORAGE_EMULATOR_HOST", "value": f"http://gcs.{NS}.svc:4443"}],
        },
    }
    sh(
        helm, "install", RELEASE, CHART, "--namespace", NS, "-f", "-",
        "--kubeconfig", str(cluster.kubeconfig),
        input=yaml.safe_dump(values),
    )  # fmt: skip
    kubectl(cluster, "-n", NS, "rollout", "status", f"deploy/{OPERATOR}", "--timeout=300s")
    yield cluster
    for entry in json.loads(kubectl(cluster, "-n", NS, "get", "rte", "-o", "json"))["items"]:
        cluster.kubectl(
            "-n", NS, "annotate", "rte", entry["metadata"]["name"],
            "routing.engines.io/allow-delete=true", "--overwrite",
        )  # fmt: skip
    cluster.kubectl("-n", NS, "delete", "rte", "--all", "--timeout=120s")
    sh(helm, "uninstall", RELEASE, "--namespace", NS, "--kubeconfig", str(cluster.kubeconfig))


ADMIN_PATHS = ("/routing", "/metrics")  # on the chart's admin port (engines.adminPort)


def app_get(cluster: Any, path: str) -> tuple[int, dict[str, Any]]:
    """GET the engines app from inside its pod (the image has Python, not curl)."""
    port = 9091 if path in ADMIN_PATHS else 8000
    code = (
        "import json,sys,urllib.request,urllib.error\n"
        "try:\n"
        f"    r=urllib.request.urlopen('http://127.0.0.1:{port}{path}',timeout=5);s=r.status;b=r.read()\n"
        "except urllib.error.HTTPError as e:\n"
        "    s=e.code;b=e.read()\n"
        "print(json.dumps({'status':s,'body':json.loads(b)}))\n"
    )
    out = kubectl(cluster, "-n", NS, "exec", f"deploy/{ENGINES}", "--", "python", "-c", code)
    got = json.loads(out)
    return int(got["status"]), got["body"]


def engines_pod(cluster: Any) -> dict[str, Any] | None:
    pods = json.loads(
        kubectl(
            cluster, "-n", NS, "get", "pods", "-o", "json",
            "-l", "app.kubernetes.io/component=engines",
        )
    )["items"]  # fmt: skip
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    return running[0] if len(running) == 1 else None


def test_readiness_follows_entries_and_backends_switch_live(installed: Any) -> None:
    cluster = installed
    pod = wait_for(lambda: engines_pod(cluster), timeout=300, interval=2, what="engines pod")

    # Running, alive, but not ready: no entry exists yet for any kind it mounts.
    def answered() -> tuple[int, dict[str, Any]] | None:
        got = app_get(cluster, "/readyz")
        return got if got[0] in (200, 503) else None

    status, body = wait_for(answered, timeout=120, interval=2, what="/readyz answering")
    assert status == 503 and body["missing"], body
    assert {m["resource_kind"] for m in body["missing"]} >= {"kpi", "chat_bus", "raw_storage"}
    time.sleep(10)  # several readiness periods: it must stay unready, not flap to ready
    deploy = json.loads(kubectl(cluster, "-n", NS, "get", "deploy", ENGINES, "-o", "json"))
    assert not deploy["status"].get("readyReplicas"), deploy["status"]

    # The entries arrive: every one turns Ready, and so does the Deployment.
    kubectl(cluster, "apply", "-f", str(ROOT / "examples"))
    kubectl(
        cluster, "-n", NS, "wait", "rte", "--all", "--for=condition=Ready", "--timeout=300s"
    )  # fmt: skip
    kubectl(cluster, "-n", NS, "rollout", "status", f"deploy/{ENGINES}", "--timeout=300s")
    status, body = app_get(cluster, "/readyz")
    assert status == 200, body

    # Live switch: new revision served by the same container, no restart, no redeploy.
    before = engines_pod(cluster)
    assert before is not None and before["metadata"]["name"] == pod["metadata"]["name"]
    restarts = before["status"]["containerStatuses"][0]["restartCount"]
    kubectl(
        cluster, "-n", NS, "patch", "rte", "acme-prod-kpi", "--type=merge",
        "-p", json.dumps({"spec": {"firestore": {"collection": "kpi_v2"}}}),
    )  # fmt: skip

    def new_revision() -> str | None:
        obj = json.loads(kubectl(cluster, "-n", NS, "get", "rte", "acme-prod-kpi", "-o", "json"))
        st = obj.get("status") or {}
        fresh = st.get("observedGeneration") == obj["metadata"]["generation"]
        return st.get("revision") if fresh else None

    revision = wait_for(new_revision, timeout=120, interval=1, what="the operator to sync")

    def serving() -> bool:
        _, table = app_get(cluster, "/routing")
        for e in table["entries"]:
            if e["tenant"] == "acme" and e["resource_kind"] == "kpi":
                return bool((e.get("serving") or {}).get("revision") == revision)
        return False

    # kubelet refreshes projected ConfigMaps on its sync period (up to ~1-2 minutes).
    wait_for(serving, timeout=240, interval=2, what=f"acme/kpi served at revision {revision}")
    after = engines_pod(cluster)
    assert after is not None and after["metadata"]["name"] == pod["metadata"]["name"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == restarts
    assert app_get(cluster, "/readyz")[0] == 200


def test_deletion_guard_protects_prod_entries(installed: Any) -> None:
    cluster = installed
    kubectl(cluster, "apply", "-f", str(ROOT / "examples"))
    done = cluster.kubectl("-n", NS, "delete", "rte", "acme-prod-seo")
    assert done.returncode != 0 and "allow-delete" in done.stderr, done.stderr
    assert cluster.kubectl("-n", NS, "get", "rte", "acme-prod-seo").returncode == 0
