"""The tests run on exactly what the image ships: the venv ``make setup`` builds matches
``requirements.lock`` package for package.

``hack/setup.sh`` and the Dockerfile both install with ``-c requirements.lock``, so a release
upstream changes nothing until ``make lock`` rewrites the lock on purpose. A package the project
or its test extras need but the lock does not pin would float: that fails here, with the fix.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What `pip freeze` leaves out of the lock: the installer itself and the project (editable).
UNPINNED = {"pip", "setuptools", "wheel", "routing-registry"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock: {line!r} is not NAME==VERSION"
            pins[_norm(name)] = version.strip()
    return pins


def _installed() -> dict[str, str]:
    return {
        _norm(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if _norm(d.metadata["Name"]) not in UNPINNED
    }


def test_every_installed_package_is_pinned_at_its_installed_version() -> None:
    pins, installed = _lock(), _installed()
    unpinned = sorted(set(installed) - set(pins))
    differ = sorted(
        f"{name}: venv {installed[name]}, lock {pins[name]}"
        for name in set(installed) & set(pins)
        if installed[name] != pins[name]
    )
    assert not unpinned and not differ, (
        f"the venv strays from requirements.lock (unpinned: {unpinned}; different: {differ}): "
        "run `make lock` to re-resolve, or `make setup` to install the lock"
    )


def test_the_lock_pins_nothing_the_venv_does_not_install() -> None:
    stale = sorted(set(_lock()) - set(_installed()))
    assert not stale, f"requirements.lock pins packages nothing installs: {stale}: run `make lock`"
