"""Where the stack's Go binaries come from: ``hack/build-binaries.sh``, built once and cached.

etcd, kube-apiserver and the GCS emulator are built from their Go modules at pinned versions by
the repository's script, which caches them under ``~/.cache/routing-registry/bin/`` and honours
``KUBEBUILDER_ASSETS`` for etcd and kube-apiserver as envtest users expect. Outside a checkout
(an installed wheel has no ``hack/``), ``KUBEBUILDER_ASSETS`` and then ``PATH`` are searched.
Builds are serialised with a file lock: two test sessions must not build into the same cache.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from devstack._errors import StackError

__all__ = ["build_with_script", "cache_dir", "repo_root", "resolve_binaries"]

_SCRIPT = Path("hack") / "build-binaries.sh"


def repo_root() -> Path | None:
    """The checkout this package lives in, if it is one."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / _SCRIPT).is_file() else None


def cache_dir() -> Path:
    """Where built binaries and images are cached (``ROUTING_CACHE_DIR``, else ~/.cache)."""
    return Path(os.environ.get("ROUTING_CACHE_DIR", Path.home() / ".cache" / "routing-registry"))


def build_with_script(
    script: Path, names: list[str], selector: str = "ROUTING_BINARIES"
) -> dict[str, Path]:
    """Run a build script of ``hack/`` for ``names`` (passed in the variable ``selector``), one
    build at a time per cache; returns the ``name=DIR`` lines it prints as paths."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, selector: " ".join(names)}
    with (cache / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            ["bash", str(script)], env=env, stdout=subprocess.PIPE, text=True, check=False
        )
    if done.returncode != 0:
        raise StackError(f"{script} failed (exit {done.returncode}); its stderr is above")
    found = {}
    for line in done.stdout.splitlines():
        name, sep, directory = line.partition("=")
        if sep:
            found[name.strip()] = Path(directory.strip()) / name.strip()
    return found


def _from_path(names: Iterable[str]) -> dict[str, Path]:
    found = {}
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    for name in names:
        if assets and (Path(assets) / name).is_file():
            found[name] = Path(assets) / name
        elif (exe := shutil.which(name)) is not None:
            found[name] = Path(exe)
    return found


def resolve_binaries(names: Iterable[str]) -> dict[str, Path]:
    """Absolute paths of the named binaries, building them first if needed."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    root = repo_root()
    found = build_with_script(root / _SCRIPT, wanted) if root is not None else _from_path(wanted)
    missing = [n for n in wanted if n not in found or not os.access(found[n], os.X_OK)]
    if missing:
        raise StackError(
            f"binaries not found: {', '.join(missing)} (run hack/build-binaries.sh, or set "
            "KUBEBUILDER_ASSETS / PATH)"
        )
    return {n: found[n] for n in wanted}
