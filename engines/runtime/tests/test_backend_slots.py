"""Backend slot mechanics: first build, atomic swap under load, drain, coalescing, known-good.

Covers ``BackendSlots`` against the in-memory registry and the real adapters (``local`` blob
stores in temporary directories, whose revision changes with the path, so each switch is a real
new backend; ``redis`` pointed at a closed port for an unreachable backend). The only
instrumentation is a factory wrapper that counts builds and records ``aclose`` calls.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from devstack.testing import async_wait_for
from engines.ports import BlobStore, Port
from engines.routing import ConfigMissing, InMemoryRoutingRegistry, RoutingRecord, parse_spec
from engines.routing.catalog import ResourceKind
from engines.routing.errors import BackendUnavailable
from engines.runtime import BackendSlots, SlotStatus, adapter_factory

K = ResourceKind.MEDIA_V2_STORAGE
TENANTS = ("acme", "globex")


def local(path: Path, *, tenant: str = "*", env: str = "test") -> RoutingRecord:
    spec = {
        "tenant": tenant,
        "env": env,
        "resourceKind": K.value,
        "backend": "local",
        "local": {"path": str(path)},
    }
    return RoutingRecord.from_spec(parse_spec(spec))


class Recorder:
    """Wraps the real factory: counts builds and records which ports were closed."""

    def __init__(self) -> None:
        self.real = adapter_factory(allow_test_backends=True)
        self.built: list[Port] = []
        self.closed: list[Port] = []

    def __call__(self, record: RoutingRecord, tenant: str) -> Port:
        port = self.real(record, tenant)
        original = port.aclose

        async def aclose() -> None:
            self.closed.append(port)
            await original()

        port.aclose = aclose  # type: ignore[method-assign]
        self.built.append(port)
        return port


@pytest.fixture
def dirs(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(25):
        d = tmp_path / f"d{i}"
        d.mkdir()
        out.append(d)
    return out


async def make(registry: InMemoryRoutingRegistry, recorder: Recorder, **kw: Any) -> BackendSlots:
    kw.setdefault("tenants", TENANTS)
    slots = BackendSlots(registry, env="test", kinds=[K], factory=recorder, **kw)
    await slots.start()
    return slots


async def blob_dir(slots: BackendSlots, tenant: str = "acme") -> Path:
    """Write through a lease and report which directory received the blob."""
    async with slots.lease(tenant, K) as port:
        assert isinstance(port, BlobStore)
        await port.put("probe", b"x")
        return Path(port.settings.path)  # type: ignore[attr-defined]


async def test_first_build_serves_every_tenant(dirs: list[Path]) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    registry.create(local(dirs[0]))
    slots = await make(registry, recorder)
    try:
        assert slots.ready
        assert await blob_dir(slots, "acme") == dirs[0]
        assert await blob_dir(slots, "globex") == dirs[0]
        assert (dirs[0] / "acme" / "probe").exists()
        assert len(recorder.built) == 2  # one backend per tenant
    finally:
        await slots.aclose()
    assert sorted(map(id, recorder.closed)) == sorted(map(id, recorder.built))


async def test_switch_under_load_never_fails_and_lands_on_newest(dirs: list[Path]) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    registry.create(local(dirs[0]))
    slots = await make(registry, recorder)
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                await blob_dir(slots)
            except Exception as exc:
                errors.append(exc)
            await asyncio.sleep(0)

    clients = [asyncio.create_task(client()) for _ in range(20)]
    try:
        for d in dirs[1:6]:
            registry.update(local(d))
            await async_wait_for(lambda d=d: _serving(slots, d), timeout=5, what=f"switch to {d}")
        stop.set()
        await asyncio.gather(*clients)
        assert errors == []
        assert await blob_dir(slots) == dirs[5]
        # every retired backend was closed once its calls ended
        await async_wait_for(
            lambda: _true(len(recorder.closed) == len(recorder.built) - 2),
            timeout=5,
            what="old backends closed",
        )
    finally:
        stop.set()
        await slots.aclose()


async def _serving(slots: BackendSlots, d: Path) -> bool:
    held = slots.slot("acme", K).current
    return held is not None and held.record.config["path"] == str(d)


async def _true(value: bool) -> bool:
    return value


async def test_old_backend_is_closed_only_after_its_calls_end(dirs: list[Path]) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    registry.create(local(dirs[0]))
    slots = await make(registry, recorder, tenants=("acme",), drain_timeout=30)
    try:
        held = slots.slot("acme", K).current
        assert held is not None
        lease = slots.lease("acme", K)
        old = await lease.__aenter__()
        assert old is held.port
        registry.update(local(dirs[1]))
        await async_wait_for(lambda: _serving(slots, dirs[1]), timeout=5, what="switch")
        assert await blob_dir(slots) == dirs[1]  # new calls go to the new backend at once
        # The swap retired the old backend; the drain path closes it only once ``drained`` is
        # set, which the exit of its last in-flight call does (drain_timeout is 30 s).
        assert held.retired and lease.superseded.is_set()
        assert held.inflight == 1 and not held.drained.is_set()
        [drain] = _drain_tasks()  # the task the swap started to close the old backend
        # The in-flight call still works on the old backend; the put runs in a thread, so the
        # loop turns (and the drain task runs up to its wait) while it is under way.
        await old.put("late", b"y")
        assert not drain.done() and old not in recorder.closed  # still in use: not closed
        await lease.__aexit__(None, None, None)
        assert held.drained.is_set()  # the last call's exit releases the drain task at once
        await asyncio.wait_for(drain, 5)
        assert old in recorder.closed
    finally:
        await slots.aclose()


def _drain_tasks() -> list[asyncio.Task[Any]]:
    """Pending tasks of the manager's drain path (``_close_when_drained``)."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__name__", "") == "_close_when_drained" and not t.done()
    ]


async def test_stuck_call_does_not_pin_the_old_backend_forever(dirs: list[Path]) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    registry.create(local(dirs[0]))
    slots = await make(registry, recorder, drain_timeout=0.2)
    try:
        lease = slots.lease("acme", K)
        old = await lease.__aenter__()
        registry.update(local(dirs[1]))
        await async_wait_for(lambda: _true(old in recorder.closed), timeout=5, what="forced")
        await lease.__aexit__(None, None, None)
    finally:
        await slots.aclose()


async def test_burst_from_another_thread_coalesces_to_newest(dirs: list[Path]) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    registry.create(local(dirs[0]))
    slots = await make(registry, recorder, tenants=("acme",))
    try:

        def burst() -> None:
            for d in dirs[1:]:
                registry.update(local(d))

        thread = threading.Thread(target=burst)
        thread.start()
        await asyncio.to_thread(thread.join)
        await async_wait_for(lambda: _serving(slots, dirs[-1]), timeout=5, what="newest")
        await slots.settle(timeout=5)
        assert _serving_now(slots, dirs[-1])
        # 24 updates; each build that is overtaken is dropped, so far fewer builds happen
        assert len(recorder.built) < 1 + len(dirs[1:])
    finally:
        await slots.aclose()


def _serving_now(slots: BackendSlots, d: Path) -> bool:
    held = slots.slot("acme", K).current
    return held is not None and held.record.config["path"] == str(d)


async def test_failed_build_keeps_last_known_good(
    dirs: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    registry.create(local(dirs[0]))
    slots = await make(registry, recorder, tenants=("acme",))
    labels = {"resource_kind": K.value, "backend": "local", "reason": "invalid"}
    before = REGISTRY.get_sample_value("engines_backend_build_failures_total", labels) or 0
    try:
        with caplog.at_level(logging.ERROR, logger="engines.runtime"):
            registry.update(local(tmp_path / "does-not-exist"))
            await slots.settle(timeout=5)
        slot = slots.slot("acme", K)
        assert slot.failure is not None and slot.failure.status is SlotStatus.INVALID
        assert "local.path" in slot.failure.message
        assert slots.ready  # still serving
        assert await blob_dir(slots) == dirs[0]  # the last known-good backend
        assert "keeping the last known-good" in caplog.text
        after = REGISTRY.get_sample_value("engines_backend_build_failures_total", labels)
        assert after == before + 1
        assert (
            REGISTRY.get_sample_value(
                "engines_backend_slot_stale", {"tenant": "acme", "resource_kind": K.value}
            )
            == 1
        )
        registry.update(local(dirs[1]))  # fixing the entry switches and clears the failure
        await async_wait_for(lambda: _serving(slots, dirs[1]), timeout=5, what="fixed")
        assert slot.failure is None
    finally:
        await slots.aclose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_backend_is_unavailable_and_retried() -> None:
    kind = ResourceKind.RATE_LIMIT
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    spec = {
        "tenant": "*",
        "env": "test",
        "resourceKind": kind.value,
        "backend": "redis",
        "redis": {"url": url},
    }
    registry = InMemoryRoutingRegistry()
    registry.create(RoutingRecord.from_spec(parse_spec(spec)))
    slots = BackendSlots(
        registry,
        env="test",
        tenants=("acme",),
        kinds=[kind],
        factory=adapter_factory(allow_test_backends=True),
        retry_initial=0.05,
        pending_wait=0,
    )
    await slots.start()
    try:
        slot = slots.slot("acme", kind)
        assert slot.status is SlotStatus.UNAVAILABLE and not slots.ready
        with pytest.raises(BackendUnavailable):
            async with slots.lease("acme", kind):
                pass
        await async_wait_for(
            lambda: _true(slot.retry_delay >= 0.1), timeout=5, what="retried with backoff"
        )
        memory = {
            "tenant": "*",
            "env": "test",
            "resourceKind": kind.value,
            "backend": "memory",
            "memory": {},
        }
        registry.update(RoutingRecord.from_spec(parse_spec(memory)))
        await async_wait_for(lambda: _true(slots.ready), timeout=5, what="switch to memory")
    finally:
        await slots.aclose()


async def test_removed_entry_makes_the_kind_missing(dirs: list[Path]) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    record = local(dirs[0])
    registry.create(record)
    slots = await make(registry, recorder)
    try:
        registry.delete(record.key)
        await async_wait_for(lambda: _true(not slots.ready), timeout=5, what="not ready")
        with pytest.raises(ConfigMissing) as info:
            async with slots.lease("acme", K):
                pass
        assert [k.document_id for k in info.value.tried] == [
            "test:acme:*:media_v2_storage",
            "test:*:*:media_v2_storage",
        ]
        assert {s.status for s in slots} == {SlotStatus.MISSING}
        await async_wait_for(lambda: _true(len(recorder.closed) == 2), timeout=5, what="closed")
    finally:
        await slots.aclose()


async def test_tenant_entry_overrides_wildcard_for_that_tenant_only(dirs: list[Path]) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    registry.create(local(dirs[0]))
    slots = await make(registry, recorder)
    try:
        registry.create(local(dirs[1], tenant="globex"))
        await slots.settle(timeout=5)
        assert await blob_dir(slots, "globex") == dirs[1]
        assert await blob_dir(slots, "acme") == dirs[0]
    finally:
        await slots.aclose()


async def test_other_environments_are_ignored(dirs: list[Path]) -> None:
    registry, recorder = InMemoryRoutingRegistry(), Recorder()
    slots = BackendSlots(registry, env="staging", tenants=TENANTS, kinds=[K], factory=recorder)
    await slots.start()
    try:
        registry.create(local(dirs[0]))  # env test: never seen by a staging pod
        await slots.settle(timeout=5)
        assert not slots.ready and recorder.built == []
        assert {s.status for s in slots} == {SlotStatus.MISSING}
    finally:
        await slots.aclose()
