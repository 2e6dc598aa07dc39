"""pytest fixtures that hand tests real services: Kubernetes API, Firestore, Redis, GCS.

Session-scoped, each starts only what it needs (a registry test pays for the Firestore emulator,
not for kube-apiserver) in one temporary state directory, and everything is stopped when the
session ends. A service whose address is already in the environment (``FIRESTORE_EMULATOR_HOST``,
``REDIS_URL``, ``STORAGE_EMULATOR_HOST``, e.g. after ``. .routing-dev/env.sh``) is reused.

``--cluster=local`` (default) runs etcd + kube-apiserver locally; ``--cluster=node`` adds a
real node beside them (containerd, kubelet, kube-controller-manager, kube-scheduler);
``--cluster=kind`` uses pytest-kind-ng's cluster and skips when Docker is unavailable;
``--cluster=existing`` uses the current ``KUBECONFIG``. The CRDs under ``crds/`` are applied in
every mode.

Tests are marked by what they use (``cluster``, ``firestore``, ``redis``, ``gcs``, ``kind``), so
``-m "not cluster"`` selects the tests that need no API server.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack._kube import apply_crds
from devstack._node import NODE_COMPONENTS
from devstack.handles import FirestoreEmulator, GcsEmulator, KubeCluster, RedisServer
from devstack.stack import LocalStack, default_crds_dir

__all__ = [
    "firestore_emulator",
    "gcs_emulator",
    "kube_cluster",
    "local_stack",
    "namespace",
    "redis_server",
]

TEST_PROJECT = "routing-test"

_MARKERS = {
    "kube_cluster": "cluster",
    "firestore_emulator": "firestore",
    "redis_server": "redis",
    "gcs_emulator": "gcs",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=("local", "node", "kind", "existing"),
        default="local",
        help="Kubernetes API for cluster tests: local kube-apiserver+etcd (default), the same "
        "plus a real node (kubelet + containerd; needs root), a kind cluster (needs Docker), "
        "or the current KUBECONFIG",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kind = config.getoption("--cluster") == "kind"
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _MARKERS.items():
            if fixture in names:
                item.add_marker(marker)
        if kind and "kube_cluster" in names:
            item.add_marker("kind")


@pytest.fixture(scope="session")
def _devstack_environ() -> Iterator[pytest.MonkeyPatch]:
    """Environment changes that last the session and are undone after it."""
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The session's ``LocalStack`` (nothing started yet); stopped entirely at session end."""
    stack = LocalStack(tmp_path_factory.mktemp("routing-dev"), project=TEST_PROJECT)
    yield stack
    stack.down()


@pytest.fixture(scope="session")
def firestore_emulator(
    request: pytest.FixtureRequest, _devstack_environ: pytest.MonkeyPatch
) -> FirestoreEmulator:
    """Firestore emulator; sets ``FIRESTORE_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT``."""
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or TEST_PROJECT
    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    stack: LocalStack | None = None
    if not host:
        stack = request.getfixturevalue("local_stack")
        project = stack.project
        stack.up(["firestore"])
        host = stack.env()["FIRESTORE_EMULATOR_HOST"]
    _devstack_environ.setenv("FIRESTORE_EMULATOR_HOST", host)
    _devstack_environ.setenv("GOOGLE_CLOUD_PROJECT", project)
    return FirestoreEmulator(host=host, project=project, stack=stack)


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, _devstack_environ: pytest.MonkeyPatch
) -> RedisServer:
    """redis-server on loopback; sets ``REDIS_URL``."""
    url = os.environ.get("REDIS_URL")
    if not url:
        stack: LocalStack = request.getfixturevalue("local_stack")
        stack.up(["redis"])
        url = stack.env()["REDIS_URL"]
    _devstack_environ.setenv("REDIS_URL", url)
    return RedisServer(url=url)


@pytest.fixture(scope="session")
def gcs_emulator(
    request: pytest.FixtureRequest, _devstack_environ: pytest.MonkeyPatch
) -> GcsEmulator:
    """The GCS emulator; sets ``STORAGE_EMULATOR_HOST``."""
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or TEST_PROJECT
    if not host:
        stack: LocalStack = request.getfixturevalue("local_stack")
        stack.up(["gcs"])
        host, project = stack.env()["STORAGE_EMULATOR_HOST"], stack.project
    _devstack_environ.setenv("STORAGE_EMULATOR_HOST", host)
    return GcsEmulator(host=host, project=project)


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> KubeCluster:
    """A Kubernetes API with ``crds/`` applied, chosen by ``--cluster``."""
    mode = request.config.getoption("--cluster")
    if mode == "local":
        stack: LocalStack = request.getfixturevalue("local_stack")
        stack.up(["kube-apiserver"])  # applies crds/ itself
        return KubeCluster(kubeconfig=stack.kubeconfig, mode=mode)
    if mode == "node":
        stack = request.getfixturevalue("local_stack")
        stack.up(list(NODE_COMPONENTS))  # the API server (crds/ applied) and one Ready node
        return KubeCluster(kubeconfig=stack.kubeconfig, mode=mode)
    if mode == "kind":
        _require_docker()
        kind = request.getfixturevalue("kind_cluster")  # from pytest-kind-ng
        cluster = KubeCluster(kubeconfig=Path(kind.kubeconfig_path), mode=mode)
    else:
        first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        path = Path(first) if first else Path.home() / ".kube" / "config"
        if not path.is_file():
            pytest.fail(f"--cluster=existing: no kubeconfig at {path} (set KUBECONFIG)")
        cluster = KubeCluster(kubeconfig=path, mode=mode)
    apply_crds(cluster.kubeconfig, default_crds_dir())
    return cluster


def _require_docker() -> None:
    if shutil.which("docker") is None:
        pytest.skip("--cluster=kind needs Docker: no `docker` on PATH")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"--cluster=kind needs Docker: `docker info` failed ({reason})")


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace for this test, deleted afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    with kube_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        yield name
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
