"""Fixtures shared by the operator test modules: a private Firestore collection per test,
RoutingEntry helpers bound to the test's namespace on the real API server, a Firestore client,
the cluster's default identity, and a running operator, with or without its metrics served (a
module may define its own ``operator`` with other flags); for the chart's suites, the helm binary
and an installed release of the chart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_harness import Release, confined_values, install, uninstall, wait_enforced
from kubernetes import client
from operator_harness import Entries, OperatorProcess, running_operator

from devstack import free_port
from devstack._binaries import resolve_binaries

DRIFT_PERIOD = "2"


@pytest.fixture
def collection() -> str:
    return f"routing_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def entries(kube_cluster: Any, namespace: str) -> Iterator[Entries]:
    with kube_cluster.api_client() as api:
        yield Entries(api, namespace)


@pytest.fixture
def fs(firestore_emulator: Any) -> Any:
    return firestore_emulator.client()


def _operator(
    kube_cluster: Any, namespace: str, collection: str, tmp_path: Path, metrics_port: int = 0
) -> Iterator[OperatorProcess]:
    """The operator on the test's namespace and collection; its log's tail printed after."""
    with running_operator(
        kube_cluster.kubeconfig,
        namespace,
        collection,
        tmp_path,
        "--drift-period",
        DRIFT_PERIOD,
        metrics_port=metrics_port,
    ) as op:
        yield op
    print(f"--- operator log ({op.log_path}) ---\n{op.log()[-6000:]}")


@pytest.fixture
def operator(
    kube_cluster: Any, firestore_emulator: Any, namespace: str, collection: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    yield from _operator(kube_cluster, namespace, collection, tmp_path)


@pytest.fixture
def metered_operator(
    kube_cluster: Any, firestore_emulator: Any, namespace: str, collection: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The ``operator`` fixture's process with its ``/metrics`` served, for ``metric()``."""
    yield from _operator(kube_cluster, namespace, collection, tmp_path, free_port())


@pytest.fixture(scope="module")
def cluster_uid(kube_cluster: Any) -> str:
    """This cluster's default identity: the uid of namespace kube-system."""
    with kube_cluster.api_client() as api:
        return str(client.CoreV1Api(api).read_namespace("kube-system").metadata.uid)


@pytest.fixture(scope="module")
def helm() -> Path:
    return resolve_binaries(["helm"])["helm"]


@pytest.fixture
def release(helm: Path, kube_cluster: Any, namespace: str) -> Iterator[Release]:
    rel = install(helm, kube_cluster, namespace, confined_values(namespace))
    try:
        # The operator's own policy in force before anything runs as its ServiceAccount.
        wait_enforced(
            lambda: kube_cluster.kubectl(
                "create", "configmap", "probe", "-n", namespace, f"--as={rel.user}",
                "--dry-run=server",
            ),
            "the operator-scope policy to refuse",
        )  # fmt: skip
        yield rel
    finally:
        uninstall(kube_cluster, rel)
