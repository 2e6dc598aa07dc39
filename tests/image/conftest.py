"""Registers the ``image`` marker: these tests run a built image (``make image-test``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "image: runs the built container image (make image-test builds it first)"
    )
