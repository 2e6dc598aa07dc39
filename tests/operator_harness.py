"""Test harness for the operator: run ``routing-operator`` as a real subprocess, and small
helpers to create, read and wait on RoutingEntry objects through the real API server.

A subprocess (not an in-process KopfRunner) so tests can SIGKILL it mid-way and restart it, the
way a node failure would, and so its flags are exercised exactly as a user passes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from devstack import stop_group
from devstack.testing import metric_sum, wait_for
from engines.routing.contract import ALLOW_DELETE_ANNOTATION, PLURAL
from engines.routing.contract import API_GROUP as GROUP
from engines.routing.contract import API_VERSION as VERSION

CRD_NAME = f"{PLURAL}.{GROUP}"
ALLOW_DELETE = {ALLOW_DELETE_ANNOTATION: "true"}


def doc(fs: Any, collection: str, doc_id: str) -> dict[str, Any] | None:
    """The Firestore document ``collection/doc_id`` as a dict, or None when there is none."""
    snap = fs.collection(collection).document(doc_id).get()
    return snap.to_dict() if snap.exists else None


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        collection: str,
        log_dir: Path,
        *extra: str,
        metrics_port: int = 0,
        liveness_port: int = 0,
    ) -> None:
        self.metrics_port = metrics_port
        self.args = [
            sys.executable,
            "-m",
            "routing_operator.cli",
            "--namespace",
            namespace,
            "--collection",
            collection,
            "--metrics-port",
            str(metrics_port),
            "--liveness-port",
            str(liveness_port),
            *extra,
        ]
        if "--peering" not in extra:
            self.args.append("--standalone")
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.log_path = log_dir / f"operator-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group: no graceful shutdown, like a node loss."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop_group(self.proc.pid, what="routing-operator")
            self.proc.wait(10)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A metric's value from the operator's ``/metrics`` (0 while it does not answer)."""
        import httpx

        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        except httpx.TransportError:
            return 0.0
        return metric_sum(text, name, labels)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_operator(
    kubeconfig: Path,
    namespace: str,
    collection: str,
    log_dir: Path,
    *extra: str,
    metrics_port: int = 0,
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        kubeconfig, namespace, collection, log_dir, *extra, metrics_port=metrics_port
    ).start()
    try:
        yield op
    finally:
        op.stop()


def entry(
    name: str,
    *,
    tenant: str = "acme",
    env: str = "prod",
    project: str = "*",
    kind: str = "kpi",
    backend: str = "firestore",
    settings: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    settings = settings if settings is not None else {"collection": f"{kind}_data"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RoutingEntry",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "tenant": tenant,
            "env": env,
            "project": project,
            "resourceKind": kind,
            "backend": backend,
            backend: settings,
        },
    }


class Entries:
    """CRUD on RoutingEntries of one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.api.create_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, self.ns, PLURAL, body
        )

    def try_create(self, body: dict[str, Any]) -> bool:
        """Create ``body``; False when the API server refuses it as invalid (422)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.create(body)
            return True
        except ApiException as exc:
            if exc.status == 422:
                return False
            raise

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, self.ns, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, self.ns, PLURAL, name, body
        )

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def condition(self, name: str, ctype: str = "Ready") -> dict[str, Any]:
        obj = self.get(name) or {}
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return c  # type: ignore[no-any-return]
        return {}

    def wait_reason(
        self, name: str, reason: str, status: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            c = self.condition(name)
            ok = c.get("reason") == reason and (status is None or c.get("status") == status)
            return c if ok else None

        return wait_for(
            check,
            timeout=timeout,  # type: ignore[no-any-return]
            what=lambda: f"{name} Ready reason={reason} (at the deadline: {self.condition(name)})",
        )

    def configmap_data(self, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_namespaced_config_map(name, self.ns).data or {}
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def store_past_crd_rules(
    kube_cluster: Any, entries: Entries, body: dict[str, Any], *path: str
) -> None:
    """Store an entry that the CRD's CEL rules at ``path`` (``"spec"``, ``"spec", "redis"``...)
    refuse, as if stored before those rules existed: the rules are lifted, the entry is stored,
    the rules come back. A real API server can be made to hold such an object no other way."""

    def rules_at(crd: Any) -> Any:
        node = crd.spec.versions[0].schema.open_apiv3_schema
        for name in path:
            node = node.properties[name]
        return node

    with kube_cluster.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        relaxed = ext.read_custom_resource_definition(CRD_NAME)
        saved = rules_at(relaxed).x_kubernetes_validations
        rules_at(relaxed).x_kubernetes_validations = None
        ext.replace_custom_resource_definition(CRD_NAME, relaxed)
        try:
            wait_for(
                lambda: entries.try_create(body),
                timeout=60,
                what="the relaxed CRD to accept the entry",
            )
        finally:
            current = ext.read_custom_resource_definition(CRD_NAME)
            rules_at(current).x_kubernetes_validations = saved
            ext.replace_custom_resource_definition(CRD_NAME, current)
