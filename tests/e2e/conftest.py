"""kind e2e fixtures: skip (with the reason) unless Docker answers and ``--cluster=kind`` is set.

Why a separate gate from the root plugin's: these tests build an image and load it into kind,
which only makes sense on a real container runtime. On a machine without a Docker daemon (the
local development sandbox) they are reported as skipped, never silently dropped. CI's kind job
sets ``ROUTING_E2E_REQUIRED=1``: there a skip would be a false green, so it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


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


@pytest.fixture(scope="session")
def e2e_gate(request: pytest.FixtureRequest) -> None:
    reason = docker_unavailable()
    if reason:
        reason = f"kind e2e needs Docker: {reason}"
    elif request.config.getoption("--cluster") != "kind":
        reason = "kind e2e runs only with `pytest tests/e2e --cluster=kind`"
    if reason and os.environ.get("ROUTING_E2E_REQUIRED") == "1":
        pytest.fail(f"ROUTING_E2E_REQUIRED=1 but {reason}")
    if reason:
        pytest.skip(reason)
