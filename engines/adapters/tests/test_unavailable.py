"""Unreachable backends surface as ``BackendUnavailable`` chained to the vendor error.

Covers, per durable backend: ``ping()`` and a real operation against an address where nothing
listens fail with ``BackendUnavailable`` (never a Redis/Google exception), within a bounded time,
with the vendor exception kept as ``__cause__``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engines.adapters import build_backend
from engines.ports import BackendUnavailable, BlobStore, DocumentStore, RateLimiter
from engines.routing.model import RoutingRecord


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(kind: str, backend: str, config: dict[str, Any]) -> RoutingRecord:
    return RoutingRecord(
        tenant="*",
        env="test",
        project="*",
        resource_kind=kind,  # type: ignore[arg-type]
        backend=backend,
        config=config,
        revision="r",
    )  # type: ignore[arg-type]


async def assert_unavailable(call: Callable[[], Awaitable[Any]], within: float = 30) -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await call()
    assert time.monotonic() - started < within
    assert info.value.__cause__ is not None
    assert not isinstance(info.value.__cause__, BackendUnavailable)


async def test_redis_unreachable() -> None:
    port = build_backend(
        record("rate_limit", "redis", {"url": f"redis://127.0.0.1:{dead_port()}/0"}),
        tenant="acme",
        allow_test_backends=False,
    )
    assert isinstance(port, RateLimiter)
    try:
        await assert_unavailable(port.ping)
        await assert_unavailable(lambda: port.hit("k", limit=1, window_s=1))
    finally:
        await port.aclose()


async def test_firestore_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{dead_port()}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "routing-test")
    port = build_backend(
        record("seo", "firestore", {"collection": "c"}), tenant="acme", allow_test_backends=False
    )
    assert isinstance(port, DocumentStore)
    try:
        await assert_unavailable(port.ping)
    finally:
        await port.aclose()


async def test_gcs_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{dead_port()}")
    port = build_backend(
        record("raw_storage", "gcs", {"bucket": "some-bucket"}),
        tenant="acme",
        allow_test_backends=False,
    )
    assert isinstance(port, BlobStore)
    try:
        await assert_unavailable(port.ping)
    finally:
        await port.aclose()


async def test_gcs_missing_bucket_is_unavailable(gcs_emulator: Any) -> None:
    port = build_backend(
        record("raw_storage", "gcs", {"bucket": "no-such-bucket-here"}),
        tenant="acme",
        allow_test_backends=False,
    )
    try:
        await assert_unavailable(port.ping)
    finally:
        await port.aclose()
