"""Fixtures shared by the operator test modules: a private Firestore collection per test, and
RoutingEntry helpers bound to the test's namespace on the real API server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import Entries


@pytest.fixture
def collection() -> str:
    return f"routing_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def entries(kube_cluster: Any, namespace: str) -> Iterator[Entries]:
    with kube_cluster.api_client() as api:
        yield Entries(api, namespace)
