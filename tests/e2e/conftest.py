"""e2e fixtures: run on a real node of our own (``--cluster=node``) or on kind (``--cluster=kind``).

Why a gate separate from the root plugin's: these tests need pods to run, which the plain local
API server cannot do. ``--cluster=node`` runs them beside the local control plane (kubelet +
containerd, needs root and the image from ``make image``); ``--cluster=kind`` needs a Docker
daemon. Anywhere else they are reported as skipped with the reason, never silently dropped. CI
sets ``ROUTING_E2E_REQUIRED=1``: there a skip would be a false green, so it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from devstack._node.images import DEFAULT_NODE_IMAGE


def docker_unavailable() -> str | None:
    """Why Docker cannot be used here, or None when ``docker info`` answers."""
    if shutil.which("docker") is None:
        return "no `docker` executable on PATH"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30s"
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines() or ["no output"]
        return f"no Docker daemon: `docker info` failed ({lines[-1]})"
    return None


def image_on_node() -> str:
    """The image the node runs: ``make image``'s, or ``ROUTING_E2E_IMAGE`` (any podman ref)."""
    return os.environ.get("ROUTING_E2E_IMAGE") or DEFAULT_NODE_IMAGE


@pytest.fixture(scope="session")
def node_image() -> str:
    """The podman image ref the chart's pods run on the local node."""
    return image_on_node()


def node_unavailable() -> str | None:
    """Why the local node cannot run here, or None."""
    if os.geteuid() != 0:
        return "the local node needs root (containerd, a bridge, iptables rules)"
    if shutil.which("podman") is None:
        return "no `podman` to hand the image to the node (`make image` builds it)"
    exists = subprocess.run(
        ["podman", "image", "exists", image_on_node()], capture_output=True, check=False
    )
    if exists.returncode != 0:
        return f"image {image_on_node()} not built: run `make image`"
    return None


@pytest.fixture(scope="session")
def e2e_gate(request: pytest.FixtureRequest) -> str:
    """The cluster mode the e2e tests run on (``node`` or ``kind``), or skip/fail with why."""
    mode = request.config.getoption("--cluster")
    reason: str | None
    if mode == "node":
        reason = node_unavailable()
        reason = f"e2e on the local node: {reason}" if reason else None
    elif mode == "kind":
        reason = docker_unavailable()
        reason = f"kind e2e needs Docker: {reason}" if reason else None
    else:
        reason = "e2e runs only with `pytest tests/e2e --cluster=node` (or `--cluster=kind`)"
    if reason and os.environ.get("ROUTING_E2E_REQUIRED") == "1":
        pytest.fail(f"ROUTING_E2E_REQUIRED=1 but {reason}")
    if reason:
        pytest.skip(reason)
    return str(mode)
