"""kubectl against a kubeconfig, applying ``crds/`` until every CRD is Established, and what
kopf's peering needs for the operator's documented commands.

The machine's ``kubectl`` is used (no client library round-trip to re-implement ``apply``);
this is shared by the local API server and by the ``kind`` / ``existing`` test clusters.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devstack._errors import StackError

__all__ = [
    "PEERING_NAME",
    "PEERING_NAMESPACES",
    "apiserver_requests",
    "apply_crds",
    "install_peering",
    "kubectl",
]

PEERING_NAME = "routing-operator"
"""The operator's default ``--peering`` (``routing_operator.cli``; a test keeps them equal)."""
PEERING_NAMESPACES = ("default", "engines")
"""Namespaces given a KopfPeering: ``default``, and the README's ``--namespace engines``."""
NO_CONDITIONS_YET = ".status.conditions accessor error"
"""kubectl's wait refusal of an object whose ``status.conditions`` is still null."""


def kubectl(
    kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run kubectl with ``--kubeconfig``; the caller inspects the returncode."""
    exe = shutil.which("kubectl")
    if exe is None:
        raise StackError("kubectl not found on PATH")
    return subprocess.run(
        [exe, f"--kubeconfig={kubeconfig}", *args],
        input=input, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def apply_crds(
    kubeconfig: Path,
    crds_dir: Path | None,
    pattern: str = "*.yaml",
    field_manager: str = "routing-dev",
) -> list[Path]:
    """Server-side apply every ``pattern`` file in ``crds_dir``; wait until each is Established."""
    files = sorted(crds_dir.glob(pattern)) if crds_dir is not None else []
    if not files:
        return []
    args = [f"--filename={f}" for f in files]
    apply = ("apply", "--server-side", "--force-conflicts", f"--field-manager={field_manager}")
    done = kubectl(kubeconfig, *apply, *args)
    if done.returncode != 0:
        raise StackError(f"kubectl apply of {crds_dir} failed:\n{done.stderr.strip()}")
    deadline = time.monotonic() + 60
    while True:
        left = max(1, int(deadline - time.monotonic()))
        done = kubectl(
            kubeconfig, "wait", "--for=condition=Established", f"--timeout={left}s", *args
        )
        if done.returncode == 0:
            return files
        # kubectl's wait gives up at once, instead of waiting, on a CRD read before the API
        # server has written its first status (conditions still null): read it again.
        if NO_CONDITIONS_YET not in done.stderr or time.monotonic() > deadline:
            raise StackError(f"kubectl wait of {crds_dir} failed:\n{done.stderr.strip()}")
        time.sleep(0.2)


def install_peering(
    kubeconfig: Path,
    crds_dir: Path | None,
    name: str = PEERING_NAME,
    namespaces: tuple[str, ...] = PEERING_NAMESPACES,
) -> None:
    """kopf's peering CRDs (``*.kopf.dev.yaml`` in ``crds_dir``, the chart's), the
    ClusterKopfPeering ``name`` (for ``--all-namespaces``) and a KopfPeering ``name`` in each of
    ``namespaces`` (for ``--namespace NS``), creating those namespaces when absent. Without
    them an operator started with its default ``--peering`` stays paused. Idempotent: kopf
    writes only the objects' ``status``, which this apply leaves alone."""
    if not apply_crds(kubeconfig, crds_dir, "*.kopf.dev.yaml"):
        return
    for namespace in namespaces:
        # Created with --save-config, so a later `kubectl apply` of the same namespace (as
        # examples/00-namespace.yaml) merges into it without a warning.
        done = kubectl(kubeconfig, "create", "namespace", namespace, "--save-config")
        if done.returncode != 0 and "AlreadyExists" not in done.stderr:
            raise StackError(f"kubectl create namespace {namespace} failed:\n{done.stderr.strip()}")
    objects = [
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}},
        *(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": name, "namespace": namespace},
            }
            for namespace in namespaces
        ),
    ]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    done = kubectl(
        kubeconfig, "apply", "--server-side", "--field-manager=routing-dev", "--filename=-",
        input=manifest,
    )  # fmt: skip
    if done.returncode != 0:
        raise StackError(f"kubectl apply of the peering objects failed:\n{done.stderr.strip()}")


def apiserver_requests(kubeconfig: Path) -> dict[tuple[str, str], float]:
    """The API server's own request counters (``apiserver_request_total``) summed by
    (verb, resource) with the subresource after a slash: ``("PATCH", "routingentries")``,
    ``("PATCH", "routingentries/status")``."""
    done = kubectl(kubeconfig, "get", "--raw", "/metrics")
    if done.returncode != 0:
        raise StackError(f"kubectl get --raw /metrics failed:\n{done.stderr.strip()}")
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(done.stdout):
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            get = sample.labels.get
            resource = "/".join(p for p in (get("resource"), get("subresource")) if p)
            key = (get("verb", ""), resource)
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts
