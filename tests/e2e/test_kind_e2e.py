"""End to end: the project image run by a kubelet, the chart installed with Helm.

Why: the local suite proves each part against a real API server, but only a cluster with a
kubelet runs the pods — the image's entry points, the non-root read-only container, the probes,
the projected ConfigMap volume that kubelet refreshes in place, the namespace controller. This is
the user's path, on either cluster:

- ``--cluster=node``: the local control plane plus a real node (kubelet + containerd, see
  ``devstack/_node/``); the image from ``make image`` is imported; the backing services
  are the local stack's own (Firestore emulator, redis, GCS emulator on the host), which pods
  reach at the node's bridge address.
- ``--cluster=kind``: ``docker build`` + ``kind load``; the backing services run as Deployments.

1. ``helm install`` the chart (operator with peering, engines Deployment reading routing from
   the mounted ConfigMaps) — the engines pods run but stay NOT ready: no entries yet;
2. ``kubectl apply -f examples/`` — every entry turns Ready, the Deployment becomes Available
   and the Service's EndpointSlices list the pod as ready;
3. a live backend switch: patch an entry, the same pod (no restart) serves the new revision;
4. the deletion guard refuses ``kubectl delete`` of a prod entry;
5. the chart's securityContext is enforced by the runtime (non-root, read-only root, no caps);
6. removing one kind's entry takes the pod out of readiness, and out of the EndpointSlices;
7. deleting a namespace of entries: the namespace controller empties and removes it.

Run: ``hack/e2e.sh`` (``pytest tests/e2e --cluster=node``) or ``pytest tests/e2e --cluster=kind``
(CI's kind job). Skips where neither can run, fails instead with ``ROUTING_E2E_REQUIRED=1``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack._binaries import resolve_binaries
from devstack._kube import kubectl as run_kubectl
from devstack._node.host import NODE_IP
from devstack._node.images import import_node_images
from devstack.testing import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "routing-registry"
IMAGE_REPO, IMAGE_TAG = "routing-registry", "e2e"
NS = "engines"
RELEASE = "rr"
DOOMED = "e2e-doomed"
"""A second watched namespace, deleted whole by one test (the namespace controller's path)."""
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
def cluster(e2e_gate: str, request: pytest.FixtureRequest) -> Any:
    kube = request.getfixturevalue("kube_cluster")  # the node's or kind's API, crds/ applied
    if e2e_gate == "node":
        stack = request.getfixturevalue("local_stack")
        import_node_images(stack.state_dir, [request.getfixturevalue("node_image")])
        return kube
    kind = request.getfixturevalue("kind_cluster")
    image = f"{IMAGE_REPO}:{IMAGE_TAG}"
    sh("docker", "build", "--tag", image, ROOT, timeout=1800)
    kind.load_docker_image(image)
    return kube


@dataclass(frozen=True)
class Backends:
    """Where pods reach the backing services, and the image the chart runs."""

    firestore: str
    gcs: str
    image: dict[str, str]
    redis: str | None = None
    """host:port replacing the examples' ``redis.engines.svc:6379`` (the node has no DNS)."""


@dataclass(frozen=True)
class Installed:
    """The cluster with the chart installed, and where its pods reach the backing services."""

    cluster: Any
    backends: Backends

    @property
    def kubeconfig(self) -> Path:
        return Path(self.cluster.kubeconfig)

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        # Longer than any --timeout the scenarios pass to `kubectl wait` / `rollout status`.
        return run_kubectl(self.kubeconfig, *args, input=input, timeout=900)


def apply_examples(installed: Installed, *names: str) -> None:
    """``kubectl apply -f examples/`` (or the named files), as a user would. On the node the
    redis URLs point at the host's redis: there is no cluster DNS for ``redis.engines.svc``."""
    files = [ROOT / "examples" / n for n in names] or sorted((ROOT / "examples").glob("*.yaml"))
    text = "\n---\n".join(f.read_text() for f in files)
    if installed.backends.redis is not None:
        text = text.replace("redis.engines.svc:6379", installed.backends.redis)
    kubectl(installed, "apply", "-f", "-", input=text)


def host_backends(request: pytest.FixtureRequest) -> Backends:
    """The local stack's emulators and redis, reached from pods at the node's bridge address."""
    gateway = NODE_IP
    firestore = request.getfixturevalue("firestore_emulator")
    gcs = request.getfixturevalue("gcs_emulator")
    redis = request.getfixturevalue("redis_server")
    client = gcs.client()
    for name in buckets():
        if client.lookup_bucket(name) is None:
            client.create_bucket(name)
    repo, tag = request.getfixturevalue("node_image").rsplit(":", 1)
    return Backends(
        firestore=f"{gateway}:{firestore.host.rsplit(':', 1)[1]}",
        gcs=f"http://{gateway}:{gcs.host.rsplit(':', 1)[1]}",
        image={"repository": repo, "tag": tag, "pullPolicy": "Never"},
        redis=f"{gateway}:{redis.url.rsplit(':', 1)[1].split('/')[0]}",
    )


def cluster_backends(cluster: Any) -> Backends:
    """Redis, the GCS and Firestore emulators as Deployments in ``engines`` (kind)."""
    kubectl(cluster, "apply", "-f", "-", input=backing_services())
    for name in ("redis", "gcs", "firestore"):
        kubectl(cluster, "-n", NS, "rollout", "status", f"deploy/{name}", "--timeout=600s")
    return Backends(
        firestore=f"firestore.{NS}.svc:8080",
        gcs=f"http://gcs.{NS}.svc:4443",
        image={"repository": IMAGE_REPO, "tag": IMAGE_TAG, "pullPolicy": "Never"},
    )


def doomed_namespace() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": DOOMED,
            # The chart's tenancy binding: an annotation holds a list, a label only one name.
            "annotations": {
                "routing.engines.io/tenants": "doomed",
                "routing.engines.io/envs": "prod,test",
            },
        },
    }


def kubectl(cluster: Any, *args: str, input: str | None = None) -> str:
    done = cluster.kubectl(*args, input=input)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return str(done.stdout)


@pytest.fixture(scope="module")
def installed(cluster: Any, e2e_gate: str, request: pytest.FixtureRequest) -> Iterator[Installed]:
    helm = resolve_binaries(["helm"])["helm"]
    kubectl(cluster, "apply", "-f", str(ROOT / "examples" / "00-namespace.yaml"))
    kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump(doomed_namespace()))
    backends = host_backends(request) if e2e_gate == "node" else cluster_backends(cluster)
    emulator = backends.firestore
    values = {
        "image": backends.image,
        "operator": {
            "watchNamespaces": [NS, DOOMED],
            "driftPeriod": 10,
            "firestore": {"project": PROJECT, "emulatorHost": emulator},
        },
        "engines": {
            "enabled": True,
            "replicas": 1,
            "env": "prod",
            "tenants": ["acme", "globex"],
            "firestore": {"project": PROJECT, "emulatorHost": emulator},
            "extraEnv": [{"name": "STORAGE_EMULATOR_HOST", "value": backends.gcs}],
        },
    }
    sh(
        helm, "install", RELEASE, CHART, "--namespace", NS, "-f", "-",
        "--kubeconfig", str(cluster.kubeconfig),
        input=yaml.safe_dump(values),
    )  # fmt: skip
    kubectl(cluster, "-n", NS, "rollout", "status", f"deploy/{OPERATOR}", "--timeout=300s")
    yield Installed(cluster, backends)
    for ns in (NS, DOOMED):
        listed = cluster.kubectl("-n", ns, "get", "rte", "-o", "json")
        for entry in json.loads(listed.stdout or '{"items": []}')["items"]:
            cluster.kubectl(
                "-n", ns, "annotate", "rte", entry["metadata"]["name"],
                "routing.engines.io/allow-delete=true", "--overwrite",
            )  # fmt: skip
    # Only when the namespace test failed: nothing must hold the next run's namespace.
    listed = cluster.kubectl("-n", DOOMED, "get", "rte", "-o", "name")
    for name in listed.stdout.split():
        cluster.kubectl(
            "-n", DOOMED, "patch", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )  # fmt: skip
    cluster.kubectl("delete", "namespace", DOOMED, "--ignore-not-found", "--wait=false")
    run_kubectl(
        cluster.kubeconfig, "-n", NS, "delete", "rte", "--all", "--timeout=300s", timeout=600
    )
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


def failed_readiness_probes(cluster: Any, pod_name: str) -> int:
    """How many readiness probes kubelet reported failed for the pod (its Unhealthy Events,
    aggregated by count)."""
    events = json.loads(
        kubectl(
            cluster, "-n", NS, "get", "events", "-o", "json",
            "--field-selector", f"involvedObject.name={pod_name},reason=Unhealthy",
        )
    )["items"]  # fmt: skip
    return sum(
        int(e.get("count") or 1)
        for e in events
        if str(e.get("message", "")).startswith("Readiness probe failed")
    )


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
    # kubelet's own probes, not only ours: several fail in a row, and it never turns ready.
    name = pod["metadata"]["name"]
    wait_for(
        lambda: failed_readiness_probes(cluster, name) >= 3,
        timeout=120,
        interval=2,
        what=lambda: (
            f"3 failed readiness probes of {name}, not {failed_readiness_probes(cluster, name)}"
        ),
    )
    deploy = json.loads(kubectl(cluster, "-n", NS, "get", "deploy", ENGINES, "-o", "json"))
    assert not deploy["status"].get("readyReplicas"), deploy["status"]
    now = engines_pod(cluster)
    assert now is not None and not pod_ready(now), now
    assert endpoint_ready(cluster, name) is not True

    # The entries arrive: every one turns Ready, and so does the Deployment.
    apply_examples(cluster)
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
    apply_examples(cluster)
    done = cluster.kubectl("-n", NS, "delete", "rte", "acme-prod-seo")
    assert done.returncode != 0 and "allow-delete" in done.stderr, done.stderr
    assert cluster.kubectl("-n", NS, "get", "rte", "acme-prod-seo").returncode == 0


def exec_python(cluster: Any, code: str) -> dict[str, Any]:
    """Run ``code`` in the engines container; it prints one JSON object."""
    out = kubectl(cluster, "-n", NS, "exec", f"deploy/{ENGINES}", "--", "python", "-c", code)
    got: dict[str, Any] = json.loads(out)
    return got


def test_security_context_is_enforced_by_the_runtime(installed: Any) -> None:
    """Not what the manifest asks for, what the container gets: non-root, read-only root
    filesystem, no capabilities, no privilege escalation."""
    cluster = installed
    wait_for(lambda: engines_pod(cluster), timeout=300, interval=2, what="engines pod")
    got = exec_python(
        cluster,
        "import json,os\n"
        "status=dict(l.split(':\\t',1) for l in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in l)\n"
        "try:\n"
        "    open('/engines-e2e-probe','w'); root_writable=True\n"
        "except OSError as e:\n"
        "    root_writable=e.strerror\n"
        "print(json.dumps({'uid':os.getuid(),'gid':os.getgid(),'root':root_writable,"
        "'cap_eff':status['CapEff'].strip(),'cap_prm':status['CapPrm'].strip(),"
        "'cap_bnd':status['CapBnd'].strip(),'no_new_privs':status['NoNewPrivs'].strip()}))\n",
    )
    assert got["uid"] != 0 and got["gid"] != 0, got
    assert got["root"] == "Read-only file system", got
    assert int(got["cap_eff"], 16) == 0 and int(got["cap_prm"], 16) == 0, got
    assert int(got["cap_bnd"], 16) == 0, got
    assert got["no_new_privs"] == "1", got


def endpoint_ready(cluster: Any, pod_name: str) -> bool | None:
    """The ``ready`` condition of ``pod_name`` in the engines Service's EndpointSlices."""
    slices = json.loads(
        kubectl(
            cluster, "-n", NS, "get", "endpointslices", "-o", "json",
            "-l", f"kubernetes.io/service-name={ENGINES}",
        )
    )["items"]  # fmt: skip
    for s in slices:
        for ep in s.get("endpoints") or []:
            if (ep.get("targetRef") or {}).get("name") == pod_name:
                return bool(ep.get("conditions", {}).get("ready"))
    return None


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_removing_one_kinds_entry_takes_the_pod_out_of_its_service(installed: Any) -> None:
    """globex has only the env-wide defaults: deleting the default ``seo`` entry leaves it
    unresolved, so kubelet's probe fails and the pod leaves the Service; re-applying it brings
    the same pod back."""
    cluster = installed
    apply_examples(cluster)
    kubectl(cluster, "-n", NS, "rollout", "status", f"deploy/{ENGINES}", "--timeout=300s")
    pod = engines_pod(cluster)
    assert pod is not None
    name = pod["metadata"]["name"]
    wait_for(lambda: endpoint_ready(cluster, name), timeout=120, interval=1, what="endpoint ready")

    kubectl(
        cluster, "-n", NS, "annotate", "rte", "default-prod-seo",
        "routing.engines.io/allow-delete=true", "--overwrite",
    )  # fmt: skip
    kubectl(cluster, "-n", NS, "delete", "rte", "default-prod-seo", "--timeout=120s")

    def unready() -> bool:
        now = engines_pod(cluster)
        return now is not None and not pod_ready(now) and endpoint_ready(cluster, name) is False

    wait_for(unready, timeout=240, interval=2, what="the pod unready and out of the Service")
    status, body = app_get(cluster, "/readyz")
    assert status == 503, body
    assert {(m["tenant"], m["resource_kind"]) for m in body["missing"]} == {("globex", "seo")}

    apply_examples(cluster, "prod-defaults.yaml")
    wait_for(lambda: endpoint_ready(cluster, name), timeout=240, interval=2, what="ready again")
    after = engines_pod(cluster)
    assert after is not None and after["metadata"]["name"] == name


def firestore_documents_exist(cluster: Any, paths: list[str]) -> dict[str, bool]:
    """Whether each Firestore document exists, read from inside the engines pod (which reaches
    the emulator the operator writes to, on kind and on the node alike)."""
    got = exec_python(
        cluster,
        "import json,os\n"
        "from google.cloud import firestore\n"
        "db=firestore.Client(project=os.environ['GOOGLE_CLOUD_PROJECT'])\n"
        f"print(json.dumps({{p: db.document(p).get().exists for p in {paths!r}}}))\n",
    )
    return {str(k): bool(v) for k, v in got.items()}


def doomed_entry(env: str) -> dict[str, Any]:
    return {
        "apiVersion": "routing.engines.io/v1alpha1",
        "kind": "RoutingEntry",
        "metadata": {"name": f"doomed-{env}-seo", "namespace": DOOMED},
        "spec": {
            "tenant": "doomed",
            "env": env,
            "resourceKind": "seo",
            "backend": "firestore",
            "firestore": {"collection": "seo"},
        },
    }


def test_deleting_a_namespace_of_entries_keeps_what_prod_serves(installed: Any) -> None:
    """The namespace controller deletes every entry of a namespace being deleted, and the
    namespace goes away: the operator releases its finalizers although the chart's Role there is
    deleted with them (its patch right on entries is cluster-wide) and the ConfigMaps refuse it
    (left to the namespace). A ``test`` entry's document goes with it; a ``prod`` entry deleted
    this way, without ``allow-delete``, keeps its document: nothing served is lost by accident
    (DESIGN §2)."""
    cluster = installed
    kubectl(
        cluster,
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all([doomed_entry("prod"), doomed_entry("test")]),
    )
    kubectl(
        cluster, "-n", DOOMED, "wait", "rte", "--all", "--for=condition=Ready", "--timeout=300s"
    )  # fmt: skip
    entries = json.loads(kubectl(cluster, "-n", DOOMED, "get", "rte", "-o", "json"))["items"]
    documents = {e["spec"]["env"]: e["status"]["firestore"]["document"] for e in entries}
    assert set(documents) == {"prod", "test"}, documents
    assert all(firestore_documents_exist(cluster, list(documents.values())).values())

    kubectl(cluster, "delete", "namespace", DOOMED, "--wait=false")

    def gone() -> bool:
        return bool(cluster.kubectl("get", "namespace", DOOMED).returncode != 0)

    wait_for(gone, timeout=240, interval=2, what=f"namespace {DOOMED} deleted")
    exists = firestore_documents_exist(cluster, list(documents.values()))
    assert exists == {documents["prod"]: True, documents["test"]: False}, exists
