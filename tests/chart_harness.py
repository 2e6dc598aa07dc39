"""Helpers shared by the chart tests: render the chart with the project's helm, apply a release
to the real API server (what ``helm install`` does, minus its bookkeeping), remove it, and bind
a test namespace to tenants and envs the way a cluster admin would, and a kubeconfig holding a
real token of the chart's ServiceAccount.

Why a module: the chart suites (test_helm_chart.py, test_chart_access.py, test_chart_security.py,
test_namespace_deletion.py) install the same releases; one copy of how the chart is rendered
keeps them all honest about what users get.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack._kube import apply_crds
from devstack.testing import wait_for
from engines.routing.crd import CRD_PATH

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "routing-registry"
CRD_NAME = CRD_PATH.name.removesuffix(".yaml")
# The local kube-apiserver is built from source and reports v0.0.0; hack/build-binaries.sh
# pins it to 1.34, the version the chart is rendered for here.
KUBE_VERSION = "1.34.0"
ALLOW_DELETE = "routing.engines.io/allow-delete"
TENANTS = "routing.engines.io/tenants"
ENVS = "routing.engines.io/envs"


def run(
    *argv: str | Path, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], input=input, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


def render(
    helm: Path,
    release: str,
    namespace: str,
    values: dict[str, Any] | None = None,
    values_files: tuple[Path, ...] = (),
    *extra: str,
) -> subprocess.CompletedProcess[str]:
    """``helm template`` with values given as YAML on stdin (``-f -``) after the files."""
    args: list[str | Path] = [helm, "template", release, CHART, "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION, *extra]
    for f in values_files:
        args += ["-f", f]
    args += ["-f", "-"]
    return run(*args, input=yaml.safe_dump(values or {}))


def docs_of(manifest: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifest) if d]


def apply_chart_crds(kube_cluster: Any) -> None:
    """Install the chart's crds/ for real (Helm does so before the templates) and wait."""
    assert apply_crds(kube_cluster.kubeconfig, CHART / "crds", field_manager="helm-chart-test")


def bind_namespace(
    kube_cluster: Any, namespace: str, *, tenants: str = "*", envs: str = "*"
) -> None:
    """What a cluster admin does before a team may create entries in ``namespace``."""
    done = kube_cluster.kubectl(
        "annotate", "namespace", namespace, "--overwrite", f"{TENANTS}={tenants}",
        f"{ENVS}={envs}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str
    peering: str
    objects: list[dict[str, Any]]

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def named(self, kind: str, suffix: str) -> str:
        """The name of the rendered ``kind`` object whose name ends with ``suffix``."""
        (name,) = [
            o["metadata"]["name"]
            for o in self.objects
            if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)
        ]
        return str(name)


def install(helm: Path, kube_cluster: Any, namespace: str, values: dict[str, Any]) -> Release:
    """Render and apply a release for real; the namespace is bound to every tenant and env."""
    apply_chart_crds(kube_cluster)
    bind_namespace(kube_cluster, namespace)
    release = f"rr-{secrets.token_hex(3)}"
    done = render(helm, release, namespace, values)
    assert done.returncode == 0, done.stderr
    applied = kube_cluster.kubectl("apply", "-f", "-", input=done.stdout)
    assert applied.returncode == 0, applied.stderr
    objs = docs_of(done.stdout)
    (sa,) = [d["metadata"]["name"] for d in objs if d["kind"] == "ServiceAccount"]
    peering = next(
        d["metadata"]["name"] for d in objs if d["kind"] in ("KopfPeering", "ClusterKopfPeering")
    )
    return Release(release, namespace, sa, peering, objs)


def uninstall(kube_cluster: Any, rel: Release) -> None:
    """Delete the cluster-scoped objects (namespaced ones go with the test namespace)."""
    cluster_scoped = [o for o in rel.objects if "namespace" not in o["metadata"]]
    manifest = "\n---\n".join(yaml.safe_dump(o) for o in cluster_scoped)
    done = kube_cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest)
    assert done.returncode == 0, f"uninstall of {rel.name}: {done.stderr}"


def confined_values(namespace: str, **operator: Any) -> dict[str, Any]:
    """Defaults, with the namespaced admission policies confined to this test's namespace.

    Other test modules create entries in unbound namespaces and delete prod entries on purpose;
    a cluster-wide policy left behind by a failed teardown must not break them.
    """
    only_here = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return {
        "operator": {"firestore": {"project": "routing-ci"}, **operator},
        "admissionPolicy": {"namespaceSelector": only_here},
        "tenancy": {"namespaceSelector": only_here},
    }


def wait_enforced(probe: Any, what: str) -> str:
    """Wait until ``probe()`` (a dry-run the policy must refuse) is refused; its stderr.

    A new policy takes effect once the API server's informer has seen it and its binding.
    """

    def refused() -> str | None:
        done = probe()
        return str(done.stderr) if done.returncode != 0 else None

    message: str = wait_for(refused, timeout=60, interval=0.5, what=what)
    return message


def service_account_kubeconfig(kube_cluster: Any, rel: Release, path: Path) -> Path:
    """A kubeconfig holding a real token of the chart's ServiceAccount (TokenRequest API)."""
    token = kube_cluster.kubectl(
        "create", "token", rel.service_account, "-n", rel.namespace, "--duration=1h"
    )
    assert token.returncode == 0, token.stderr
    admin = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": rel.user, "user": {"token": token.stdout.strip()}}],
                "contexts": [
                    {
                        "name": "sa",
                        "context": {
                            "cluster": "local",
                            "user": rel.user,
                            "namespace": rel.namespace,
                        },
                    }
                ],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return path
