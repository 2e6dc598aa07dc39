"""The built image, run the way the Helm chart runs it, against the local stack.

What ships is the image, so both of its entry points are exercised from it, not from the venv:
UID 10001, a read-only root filesystem with only ``/tmp`` writable (a tmpfs, as the chart's
emptyDir), every capability dropped, no-new-privileges. Covered:

* the container's own view of those restrictions (uid, capabilities, what it can write);
* the dev tooling (``devstack``, ``routing-dev``) is not in the image;
* the build lent pip this machine's settings and CA bundle without leaving them in any layer;
* ``routing-operator`` from the image drives RoutingEntries to Ready on the local kube-apiserver
  and the Firestore emulator;
* the engines app from the image answers ``/readyz`` 503 while entries are missing and 200 once
  every kind resolves, both with the Firestore source and with the mounted-files source (the
  operator's ConfigMaps exported as files and mounted read-only, as the chart's projected volume);
* ``podman kube play`` runs the chart's rendered engines Deployment (the pod spec itself).

``make image-test`` builds the image and runs this module. Without a container engine the tests
skip, saying why; with ``ROUTING_IMAGE_REQUIRED=1`` (CI) they fail instead. The operator runs with
its default peering, as the chart runs it: the test's namespace holds the KopfPeering the chart
would create there.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from devstack import free_port
from devstack._kube import PEERING_NAME as PEERING
from devstack.handles import FirestoreEmulator, GcsEmulator, KubeCluster, RedisServer
from devstack.testing import wait_for
from engines.routing.catalog import CATALOG, Backend

pytestmark = [pytest.mark.image, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("ROUTING_IMAGE", "")
REQUIRED = os.environ.get("ROUTING_IMAGE_REQUIRED") == "1"
GROUP, VERSION, PLURAL = "routing.engines.io", "v1alpha1", "routingentries"
ENV, TENANT, BUCKET = "prod", "acme", "image-test"
CHART_UID = "10001"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (ROUTING_IMAGE_REQUIRED=1: the image tests must run here)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Engine:
    """The container engine this machine offers, with the flags it needs to run anything."""

    name: str
    machine_flags: tuple[str, ...]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.name, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)}: {done.stderr.strip()}")
        return done

    @property
    def chart_flags(self) -> list[str]:
        """The chart's securityContext and /tmp emptyDir, as ``run`` flags."""
        flags = [
            f"--user={CHART_UID}:{CHART_UID}",
            "--read-only",
            "--tmpfs=/tmp:rw,size=64m,mode=1777",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
        ]
        if self.name == "podman":  # podman's --read-only also mounts tmpfs on /run and /var/tmp
            flags.append("--read-only-tmpfs=false")
        return flags

    def logs(self, container: str) -> str:
        done = self("logs", container, check=False)
        return (done.stdout + done.stderr)[-4000:]

    @contextmanager
    def container(self, name: str, *args: str) -> Iterator[str]:
        """Run ``args`` (run flags, the image and its command) detached; remove it afterwards."""
        self("run", "-d", f"--name={name}", *self.machine_flags, *self.chart_flags, *args)
        try:
            yield name
        finally:
            self("rm", "-f", "-t", "10", name, check=False)


@pytest.fixture(scope="session")
def engine() -> Engine:
    """Session-scoped so it is resolved, and skips, before the local stack starts."""
    if not IMAGE:
        _unavailable("the image tests run through `make image-test`, which builds the image first")
    found = subprocess.run(
        ["bash", str(ROOT / "hack" / "image.sh"), "engine"], capture_output=True, text=True
    )
    if found.returncode != 0:
        _unavailable(found.stderr.strip() or "no container engine")
    flags = subprocess.run(
        ["bash", str(ROOT / "hack" / "image.sh"), "run-flags"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    eng = Engine(found.stdout.strip(), tuple(flags))
    if eng("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is not built: run `make image`")
    return eng


@pytest.fixture(scope="module")
def stack(
    engine: Engine,
    kube_cluster: KubeCluster,
    firestore_emulator: FirestoreEmulator,
    redis_server: RedisServer,
    gcs_emulator: GcsEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The local stack as the containers see it: a kubeconfig UID 10001 can read, the endpoints."""
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    for cluster in config["clusters"]:
        ca = Path(cluster["cluster"].pop("certificate-authority"))
        cluster["cluster"]["certificate-authority-data"] = base64.b64encode(
            ca.read_bytes()
        ).decode()
    gcs = gcs_emulator.client()
    if gcs.lookup_bucket(BUCKET) is None:
        gcs.create_bucket(BUCKET)
    mounted = tmp_path_factory.mktemp("image-kube") / "kubeconfig"
    mounted.write_text(json.dumps(config))
    mounted.chmod(0o444)  # the container's user is not the file's owner
    return {
        "kube": kube_cluster,
        "kubeconfig": mounted,
        "env": {
            "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
            "GOOGLE_CLOUD_PROJECT": firestore_emulator.project,
            "STORAGE_EMULATOR_HOST": gcs_emulator.host,
        },
        "redis_url": redis_server.url,
    }


@pytest.fixture
def api(stack: dict[str, Any]) -> Iterator[client.ApiClient]:
    with stack["kube"].api_client() as api:
        yield api


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"image-{secrets.token_hex(3)}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # The peering object the chart creates for a watched namespace (templates/peering.yaml): the
    # operator runs with its default peering, as the chart runs it, not --standalone.
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        name,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    yield name
    core.delete_namespace(name)


def _env_flags(env: dict[str, str]) -> list[str]:
    return [f"--env={k}={v}" for k, v in env.items()]


@contextmanager
def _operator(
    engine: Engine, stack: dict[str, Any], namespace: str, collection: str
) -> Iterator[int]:
    """``routing-operator`` from the image with the chart's arguments; yields its liveness port."""
    live, metrics = free_port(), free_port()
    with engine.container(
        f"image-operator-{namespace}",
        f"--volume={stack['kubeconfig']}:/etc/routing/kubeconfig:ro",
        *_env_flags({**stack["env"], "KUBECONFIG": "/etc/routing/kubeconfig"}),
        IMAGE,
        "routing-operator",
        f"--namespace={namespace}",
        f"--collection={collection}",
        f"--metrics-port={metrics}",
        f"--liveness-port={live}",
    ) as name:
        try:
            yield live
        except BaseException:
            print(f"--- operator log ---\n{engine.logs(name)}")
            raise


@contextmanager
def _app(engine: Engine, stack: dict[str, Any], *args: str, **env: str) -> Iterator[httpx.Client]:
    """The engines app from the image with the chart's command; yields a client once it is live."""
    port = free_port()
    with engine.container(
        f"image-engines-{port}",
        *args,
        *_env_flags({**stack["env"], "ENGINES_ENV": ENV, "ENGINES_TENANTS": TENANT, **env}),
        IMAGE,
        "uvicorn",
        "--factory",
        "engines.chat.service.server:create_app",
        "--host=127.0.0.1",
        f"--port={port}",
    ) as name:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def live() -> bool:
            try:
                return http.get("/livez").status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_for(live, timeout=90, interval=0.2, what=lambda: engine.logs(name))
            yield http
        except BaseException:
            print(f"--- engines log ---\n{engine.logs(name)}")
            raise
        finally:
            http.close()


def _entries(collection: str, redis_url: str) -> list[dict[str, Any]]:
    """One env-wide (tenant "*") entry per catalog kind, each on its first durable backend."""
    settings = {
        Backend.FIRESTORE: {"collection": collection},
        Backend.REDIS: {"url": redis_url, "key_prefix": f"{collection}:"},
        Backend.GCS: {"bucket": BUCKET, "prefix": f"{collection}/"},
    }
    out = []
    for kind, spec in CATALOG.items():
        backend = spec.durable[0]
        out.append(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "RoutingEntry",
                "metadata": {"name": f"{ENV}-{kind.value.replace('_', '-')}"},
                "spec": {
                    "tenant": "*",
                    "env": ENV,
                    "resourceKind": kind.value,
                    "backend": backend.value,
                    backend.value: settings[backend],
                },
            }
        )
    return out


def _ready(api: client.ApiClient, namespace: str, name: str) -> bool:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, namespace, PLURAL, name
    )
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _apply_and_wait_ready(
    api: client.ApiClient, namespace: str, entries: list[dict[str, Any]]
) -> None:
    custom = client.CustomObjectsApi(api)
    for body in entries:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    for body in entries:
        name = body["metadata"]["name"]
        wait_for(
            lambda name=name: _ready(api, namespace, name),  # type: ignore[misc]
            timeout=90,
            interval=0.2,
            what=f"RoutingEntry {namespace}/{name} to turn Ready",
        )


def _readyz(http: httpx.Client) -> tuple[int, dict[str, Any]]:
    r = http.get("/readyz")
    return r.status_code, r.json()


def _assert_not_ready_for_every_kind(http: httpx.Client) -> None:
    code, body = _readyz(http)
    assert code == 503, body
    missing = {m["resource_kind"] for m in body["missing"]}
    assert missing == {k.value for k in CATALOG}, body


def _assert_ready_for_every_kind(http: httpx.Client, source: str) -> None:
    """/readyz turns 200 and /routing serves every catalog kind from ``source``."""
    wait_for(
        lambda: _readyz(http)[0] == 200,
        timeout=60,
        interval=0.2,
        what=lambda: f"/readyz 200 (now {_readyz(http)})",
    )
    table = http.get("/routing").json()
    assert table["registry"]["source"] == source
    assert {e["resource_kind"] for e in table["entries"]} == {k.value for k in CATALOG}


def test_the_container_runs_as_the_chart_runs_it_unprivileged_with_only_tmp_writable(
    engine: Engine,
) -> None:
    probe = (
        "import json, os\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status') if ':\\t' in l)\n"
        "writable = []\n"
        "for d in ('/', '/tmp', '/opt/venv', '/etc/engines/routing', '/var/tmp', '/run', '/usr'):\n"
        "    try:\n"
        "        open(os.path.join(d, '.probe'), 'w').close()\n"
        "        writable.append(d)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'writable': writable,\n"
        "    'caps': [status[k].strip() for k in ('CapEff', 'CapPrm', 'CapBnd')],\n"
        "    'nnp': status['NoNewPrivs'].strip()}))\n"
    )
    done = engine(
        "run", "--rm", *engine.machine_flags, *engine.chart_flags, IMAGE, "python", "-c", probe
    )
    seen = json.loads(done.stdout)
    assert seen == {
        "uid": 10001,
        "gid": 10001,
        "writable": ["/tmp"],
        "caps": ["0000000000000000"] * 3,
        "nnp": "1",
    }


def test_the_image_ships_no_dev_tooling(engine: Engine) -> None:
    """devstack (the local stack, the pytest fixtures, the testing kit) is dev tooling: neither
    the package nor its routing-dev script is in the image; both entry points are."""
    probe = (
        "import importlib.util, json, shutil\n"
        "print(json.dumps({'devstack': importlib.util.find_spec('devstack') is not None,\n"
        "    'scripts': [s for s in ('routing-dev', 'routing-operator', 'uvicorn')\n"
        "                if shutil.which(s)]}))\n"
    )
    done = engine("run", "--rm", *engine.machine_flags, IMAGE, "python", "-c", probe)
    assert json.loads(done.stdout) == {
        "devstack": False,
        "scripts": ["routing-operator", "uvicorn"],
    }


def _pem_blocks(text: str) -> set[str]:
    return set(re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S))


def _is_tar(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data)):
            return True
    except tarfile.TarError:
        return False


def _scan_archive(archive: Path, needles: set[bytes]) -> tuple[int, list[str]]:
    """Layers in a saved image, and every pip config file, user pip directory or needle found in
    them or in the archive's other files (image config, history, manifests)."""
    found: list[str] = []
    layers = 0
    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            if not _is_tar(data):
                found += [f"{member.name}: {n[:60]!r}" for n in needles if n in data]
                continue
            layers += 1
            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                for item in layer:
                    path = item.name.lstrip("./")
                    if Path(path).name in {"pip.conf", "pip.ini"} or path.startswith(
                        ("root/.config", "root/.pip")
                    ):
                        found.append(f"{member.name}: {path}")
                    if item.isfile():
                        content = layer.extractfile(item).read()  # type: ignore[union-attr]
                        found += [
                            f"{member.name}:{path}: {n[:60]!r}" for n in needles if n in content
                        ]
    return layers, found


def test_no_layer_holds_the_build_machines_pip_settings_or_ca_bundle(
    engine: Engine, tmp_path: Path
) -> None:
    """The build borrowed pip's config and CA bundle through a mount over /root: no layer, config
    or history of the image may carry a pip config file, an index URL or a machine CA."""
    import certifi

    settings = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
    ).stdout
    needles = {
        m.group(2).encode()
        for m in re.finditer(r"\.(index-url|extra-index-url|proxy)='(.+)'", settings)
    }
    bundle_path = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE") or ""
    machine = _pem_blocks(Path(bundle_path).read_text()) if bundle_path else set()
    # Public CAs the base image and the venv ship anyway are not the machine's own.
    base = engine(
        "run",
        "--rm",
        *engine.machine_flags,
        IMAGE,
        "cat",
        "/etc/ssl/certs/ca-certificates.crt",
        check=False,
    ).stdout
    own_cas = machine - _pem_blocks(Path(certifi.where()).read_text()) - _pem_blocks(base)
    needles |= {block.encode() for block in own_cas}

    archive = tmp_path / "image.tar"
    engine("save", "-o", str(archive), IMAGE, timeout=600)
    layers, found = _scan_archive(archive, needles)
    assert layers >= 2, f"{archive} holds {layers} layers: not an image archive"
    assert not found, found


def test_the_operator_from_the_image_drives_entries_to_ready_and_the_app_turns_ready(
    engine: Engine, stack: dict[str, Any], api: client.ApiClient, namespace: str
) -> None:
    """Firestore source: the operator writes documents, the app reads them from Firestore."""
    collection = f"image_{secrets.token_hex(4)}"
    entries = _entries(collection, stack["redis_url"])
    with (
        _operator(engine, stack, namespace, collection),
        _app(
            engine,
            stack,
            ENGINES_ROUTING_SOURCE="firestore",
            ENGINES_ROUTING_COLLECTION=collection,
        ) as http,
    ):
        _assert_not_ready_for_every_kind(http)
        _apply_and_wait_ready(api, namespace, entries)
        _assert_ready_for_every_kind(http, source="firestore")


def test_the_app_from_the_image_serves_the_operators_configmaps_mounted_as_files(
    engine: Engine,
    stack: dict[str, Any],
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Files source: the ConfigMaps the operator wrote, one file per key as a projected volume
    lays them out, mounted read-only; the app turns ready when they appear."""
    collection = f"image_{secrets.token_hex(4)}"
    routing_dir = tmp_path / "routing"
    routing_dir.mkdir()
    routing_dir.chmod(0o755)
    with (
        _operator(engine, stack, namespace, collection),
        _app(
            engine,
            stack,
            f"--volume={routing_dir}:/etc/engines/routing:ro",
            ENGINES_ROUTING_SOURCE="files",
            ENGINES_ROUTING_DIR="/etc/engines/routing",
        ) as http,
    ):
        _assert_not_ready_for_every_kind(http)
        _apply_and_wait_ready(api, namespace, _entries(collection, stack["redis_url"]))
        data = client.CoreV1Api(api).read_namespaced_config_map(f"routing.{ENV}", namespace).data
        assert data and len(data) == len(CATALOG), data
        for key, value in data.items():
            (routing_dir / key).write_text(value)
            (routing_dir / key).chmod(0o444)
        _assert_ready_for_every_kind(http, source="files")


def test_podman_kube_play_runs_the_charts_engines_deployment(
    engine: Engine, stack: dict[str, Any], tmp_path: Path
) -> None:
    """The chart's rendered engines Deployment itself (command, env, securityContext, the /tmp
    emptyDir), run by ``podman kube play``: the pod starts as the chart says and its app answers.

    Routing source ``firestore``: the chart's default ``files`` projects ConfigMaps that kube play
    would need as objects of its own. Network slirp4netns with the host's loopback reachable at
    10.0.2.2 (the emulator's address for the pod): with ``--network=host`` kube play refuses the
    Deployment's containerPort ("PortMappings can only be used with Bridge or slirp4netns")."""
    if engine.name != "podman":
        pytest.skip("kube play is podman's; this machine builds with docker")
    from devstack._binaries import resolve_binaries

    port = 8000
    emulator_port = stack["env"]["FIRESTORE_EMULATOR_HOST"].rsplit(":", 1)[1]
    repository, _, tag = IMAGE.rpartition(":")
    project = stack["env"]["GOOGLE_CLOUD_PROJECT"]
    values = {
        "image": {"repository": _qualified(repository), "tag": tag, "pullPolicy": "Never"},
        "operator": {"firestore": {"project": project}},
        "engines": {
            "enabled": True,
            "replicas": 1,
            "env": ENV,
            "tenants": [TENANT],
            "port": port,
            "routing": {"source": "firestore", "collection": f"image_{secrets.token_hex(4)}"},
            "firestore": {"project": project, "emulatorHost": f"10.0.2.2:{emulator_port}"},
        },
    }
    helm = resolve_binaries(["helm"])["helm"]
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            "image-test",
            str(ROOT / "helm" / "routing-registry"),
            "--namespace=engines",
            "--show-only=templates/engines-deployment.yaml",
            "--values=-",
        ],
        input=yaml.safe_dump(values),
        capture_output=True,
        text=True,
    )
    assert rendered.returncode == 0, rendered.stderr
    deployment = next(
        d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Deployment"
    )
    manifest = tmp_path / "engines.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    # kube play takes no --ulimit: the machine's limits go through a containers.conf of its own.
    ulimits = [f.split("=", 1)[1] for f in engine.machine_flags if f.startswith("--ulimit=")]
    conf = tmp_path / "containers.conf"
    conf.write_text(f"[containers]\ndefault_ulimits = {json.dumps(ulimits)}\n")
    runtime = [f for f in engine.machine_flags if f.startswith("--runtime=")]
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *runtime, *args], env=env, capture_output=True, text=True, timeout=300
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()}")
        return done

    podman("kube", "play", "--network=slirp4netns:allow_host_loopback=true", str(manifest))
    container = f"{deployment['metadata']['name']}-pod-0-engines"
    try:
        seen = json.loads(podman("inspect", container).stdout)[0]
        assert seen["Config"]["User"] == f"{CHART_UID}:{CHART_UID}"
        assert seen["HostConfig"]["ReadonlyRootfs"] is True
        assert not seen["EffectiveCaps"], seen["EffectiveCaps"]
        assert "no-new-privileges" in seen["HostConfig"]["SecurityOpt"]
        # The pod has its own network: ask from inside it, with the image's own Python.
        ask = (
            "import json, urllib.request as r, urllib.error as e\n"
            f"try: res = r.urlopen('http://127.0.0.1:{port}/readyz', timeout=5)\n"
            "except e.HTTPError as err: res = err\n"
            "print(json.dumps([res.status, json.load(res)]))\n"
        )

        def readyz() -> tuple[int, dict[str, Any]] | None:
            done = podman("exec", container, "python", "-c", ask, check=False)
            if done.returncode != 0:
                return None
            code, body = json.loads(done.stdout)
            return code, body

        answer = wait_for(
            readyz,
            timeout=90,
            interval=0.5,
            what=lambda: podman("logs", container, check=False).stderr[-3000:],
        )
        assert answer is not None
        code, body = answer
        assert code == 503, body
        assert {m["resource_kind"] for m in body["missing"]} == {k.value for k in CATALOG}, body
        assert {m["tenant"] for m in body["missing"]} == {TENANT}, body
    finally:
        podman("kube", "down", str(manifest), check=False)


def _qualified(repository: str) -> str:
    """The name podman stores a locally built image under."""
    first = repository.split("/", 1)[0]
    if "/" in repository and ("." in first or ":" in first or first == "localhost"):
        return repository
    return f"localhost/{repository}"
