"""kubectl against a kubeconfig, and applying ``crds/`` until every CRD is Established.

The machine's ``kubectl`` is used (no client library round-trip to re-implement ``apply``);
this is shared by the local API server and by the ``kind`` / ``existing`` test clusters.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engines.devstack._errors import StackError

__all__ = ["apiserver_requests", "apply_crds", "kubectl"]


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


def apply_crds(kubeconfig: Path, crds_dir: Path | None) -> list[Path]:
    """Server-side apply every ``*.yaml`` in ``crds_dir`` and wait until each is Established."""
    files = sorted(crds_dir.glob("*.yaml")) if crds_dir is not None else []
    if not files:
        return []
    args = [f"--filename={f}" for f in files]
    steps = (
        ("apply", "--server-side", "--force-conflicts", "--field-manager=routing-dev", *args),
        ("wait", "--for=condition=Established", "--timeout=60s", *args),
    )
    for step in steps:
        done = kubectl(kubeconfig, *step)
        if done.returncode != 0:
            raise StackError(f"kubectl {step[0]} of {crds_dir} failed:\n{done.stderr.strip()}")
    return files


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
