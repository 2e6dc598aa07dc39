"""``BackendSlots``: every (served tenant, mounted kind) slot, kept in step with the registry.

The registry calls us on its own thread (Firestore snapshot thread, file poller); the callback
only hands the change to the event loop (``call_soon_threadsafe``) and marks the affected slots
dirty. One worker task per slot then re-resolves from the registry's table and converges:

* nothing resolves          → the slot goes ``MISSING`` (old backend retired and drained);
* same revision as serving  → nothing to build (the winning entry may have moved);
* a new revision            → build it (``BackendFactory``), ``ping`` it, swap it in, retire the
                              old one: it is closed once its in-flight calls end;
* same revision, but its mounted Secret value changed (rotated) → rebuilt and swapped exactly
                              like a new revision.

How a rotated Secret is noticed is in :mod:`.rotation`; how a retired backend is drained and
closed, in :mod:`.draining`; what builds a backend, in :mod:`.factory`; the log line of each
transition, in :mod:`.logs`.

Because the worker re-reads the table each round, a burst of changes to one slot coalesces into
one build of the newest revision: a build that finishes after a newer change arrived is dropped
unbuilt-into-service. A failed build keeps the last known-good backend serving, records the
failure on the slot (``/routing``), counts it (metrics) and logs it; unreachable backends are
retried with exponential backoff. Nothing here ever exits the process or falls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator

from engines.ports import Port
from engines.routing.catalog import ResourceKind
from engines.routing.errors import ConfigMissing, InvalidRouting, RoutingError
from engines.routing.model import RoutingRecord
from engines.routing.registry import RoutingRegistry
from engines.routing.table import RoutingChange

from . import logs, metrics
from .draining import Retirements
from .factory import BackendFactory
from .rotation import SecretDigests, rotated_slots, secret_rotated
from .slots import HeldBackend, Slot, SlotFailure, SlotLease, SlotStatus

__all__ = ["BackendSlots", "TenantNotServed"]


class TenantNotServed(LookupError):
    """A request named a tenant this pod does not serve (``ENGINES_TENANTS``)."""

    def __init__(self, tenant: str, served: Iterable[str]) -> None:
        self.tenant = tenant
        super().__init__(f"tenant {tenant!r} is not served here; served: {', '.join(served)}")


class BackendSlots:
    """The backends of one pod: a slot per (tenant in ``tenants``, kind in ``kinds``)."""

    def __init__(
        self,
        registry: RoutingRegistry,
        *,
        env: str,
        tenants: Iterable[str],
        kinds: Iterable[ResourceKind],
        factory: BackendFactory,
        project: str = "*",
        verify: bool = True,
        ping_timeout: float = 5.0,
        drain_timeout: float = 30.0,
        pending_wait: float = 5.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        secrets: SecretDigests | None = None,
        secret_check_interval: float = 10.0,
    ) -> None:
        self.registry = registry
        self.env = env
        self.project = project
        self.tenants: tuple[str, ...] = tuple(dict.fromkeys(tenants))
        self.kinds: tuple[ResourceKind, ...] = tuple(
            sorted({ResourceKind(k) for k in kinds}, key=list(ResourceKind).index)
        )
        self.factory = factory
        self.verify = verify
        """Ping every new backend before it serves (a bad bucket or URL never goes live)."""
        self.ping_timeout = ping_timeout
        self.pending_wait = pending_wait
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        if secrets is None:  # the production factory exposes the reader it reads Secrets with
            reader = getattr(factory, "secrets", None)
            has_digests = hasattr(reader, "digest") and hasattr(reader, "current_digest")
            secrets = reader if has_digests else None
        self.secrets: SecretDigests | None = secrets
        """Where digests of mounted secret values come from (None: rotation is not followed)."""
        self.secret_check_interval = secret_check_interval
        """Seconds between two looks at the mounted Secrets of serving backends (0: never)."""
        self._secret_watch: asyncio.Task[None] | None = None
        self._slots: dict[tuple[str, ResourceKind], Slot] = {
            (t, k): Slot(t, k, env, project) for t in self.tenants for k in self.kinds
        }
        self._by_kind = {k.value: k for k in self.kinds}
        self._tenant_set = frozenset(self.tenants)
        self._not_ready: dict[tuple[str, ResourceKind], Slot] = dict(self._slots)
        self._retirements = Retirements(drain_timeout=drain_timeout, close_timeout=ping_timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False
        self._started = False
        self.generation = 0
        """Bumped on every status change (lets readers cache what they derive from slots)."""

    # -- queries -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots.values())

    def __len__(self) -> int:
        return len(self._slots)

    def slot(self, tenant: str, kind: ResourceKind | str) -> Slot:
        """The slot of a served tenant and mounted kind; ``TenantNotServed`` / ``KeyError``."""
        found = self._slots.get((tenant, kind))  # type: ignore[arg-type]
        if found is not None:
            return found
        if tenant not in self._tenant_set:
            raise TenantNotServed(tenant, self.tenants)
        raise KeyError(f"resource_kind {kind} is not mounted in this app")

    def serves(self, tenant: str) -> bool:
        return tenant in self._tenant_set

    @property
    def ready(self) -> bool:
        """Every slot serves a backend."""
        return not self._not_ready

    def not_ready(self) -> list[Slot]:
        return list(self._not_ready.values())

    def lease(self, tenant: str, kind: ResourceKind | str) -> SlotLease[Port]:
        """``async with slots.lease(tenant, kind) as port``; raises the slot's error when empty."""
        return SlotLease(self.slot(tenant, kind), self.pending_wait)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the registry, build every slot, and wait until each has settled."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.registry.subscribe(self._on_registry_change)
        for slot in self._slots.values():
            metrics.SLOT_READY.labels(slot.tenant, slot.kind.value).set(0)
            self._mark_dirty(slot, None)
        await self.settle()
        self._started = True
        if self.secrets is not None and self.secret_check_interval > 0:
            self._secret_watch = self._loop.create_task(
                self._watch_secrets(self.secret_check_interval), name="secret-rotation"
            )

    async def settle(self, timeout: float | None = None) -> None:
        """Wait until no slot has pending work (first builds, switches in progress)."""

        async def drain() -> None:
            await asyncio.sleep(0)  # let changes already handed to the loop mark their slots
            while True:
                workers = {s.worker for s in self._slots.values() if s.worker is not None}
                if not workers:
                    return
                await asyncio.wait(workers)

        await asyncio.wait_for(drain(), timeout)

    async def aclose(self) -> None:
        """Stop following the registry, then drain and close every backend."""
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        workers = []
        if self._secret_watch is not None:
            self._secret_watch.cancel()
            workers.append(self._secret_watch)
        for slot in self._slots.values():
            if slot.retry_handle is not None:
                slot.retry_handle.cancel()
            if slot.worker is not None:
                slot.worker.cancel()
                workers.append(slot.worker)
        await asyncio.gather(*workers, return_exceptions=True)
        for slot in self._slots.values():
            held, slot.current = slot.current, None
            if held is not None:
                self._retirements.retire(held)
        await self._retirements.wait()

    # -- registry changes (any thread) ---------------------------------------------------------

    def _on_registry_change(self, change: RoutingChange) -> None:
        key = change.key
        if key.env != self.env or key.resource_kind not in self._by_kind:
            return
        if key.project not in ("*", self.project):
            return
        loop = self._loop
        if loop is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nothing to update
            loop.call_soon_threadsafe(
                self._invalidate, key.resource_kind, key.tenant, time.monotonic()
            )

    def _invalidate(self, kind_value: str, tenant: str, seen_at: float) -> None:
        if self._closed:
            return
        kind = self._by_kind[kind_value]
        tenants = self.tenants if tenant == "*" else (tenant,) if tenant in self._tenant_set else ()
        for t in tenants:
            self._mark_dirty(self._slots[(t, kind)], seen_at)

    def _mark_dirty(self, slot: Slot, seen_at: float | None) -> None:
        slot.dirty = True
        if slot.changed_at is None:
            slot.changed_at = seen_at
        if slot.retry_handle is not None:
            slot.retry_handle.cancel()
            slot.retry_handle = None
        if slot.worker is None:
            slot.settled.clear()
            slot.worker = asyncio.get_running_loop().create_task(
                self._reconcile(slot), name=f"slot:{slot.tenant}:{slot.kind.value}"
            )

    # -- the per-slot worker -------------------------------------------------------------------

    async def _reconcile(self, slot: Slot) -> None:
        try:
            while slot.dirty and not self._closed:
                slot.dirty = False
                record = self._resolve(slot)
                slot.desired = record
                if record is None:
                    self._make_missing(slot)
                    continue
                held = slot.current
                if (
                    held is not None
                    and held.record.revision == record.revision
                    and not secret_rotated(self.secrets, held)
                ):
                    held.record = record  # another entry won, same backend: nothing to rebuild
                    self._clear_failure(slot)
                    continue
                if held is None and slot.status is not SlotStatus.PENDING:
                    self._set_status(slot, SlotStatus.PENDING)
                built = await self._build(slot, record)
                if built is None:
                    continue
                port, digest = built
                latest = self._resolve(slot)
                if latest is None or latest.revision != record.revision:
                    # A newer change arrived while building: coalesce to it, drop this one.
                    slot.dirty = True
                    await self._retirements.close_quietly(port)
                    continue
                self._swap(slot, HeldBackend(port, latest, digest))
        finally:
            slot.worker = None
            slot.settled.set()

    def _resolve(self, slot: Slot) -> RoutingRecord | None:
        try:
            return self.registry.resolve(slot.kind.value, slot.tenant, self.env, self.project)
        except ConfigMissing:
            return None

    async def _build(self, slot: Slot, record: RoutingRecord) -> tuple[Port, str | None] | None:
        port: Port | None = None
        try:
            port = self.factory(record, slot.tenant)
            # Read right after the (synchronous) factory: the digest of the very value it used.
            ref = record.secret_ref
            digest = self.secrets.digest(ref) if ref is not None and self.secrets else None
            if self.verify:
                await asyncio.wait_for(port.ping(), self.ping_timeout)
            return port, digest
        except asyncio.CancelledError:
            if port is not None:
                await self._retirements.close_quietly(port)
            raise
        except Exception as exc:  # every failure is reported; the slot keeps what it serves
            if port is not None:
                await self._retirements.close_quietly(port)
            self._fail(slot, record, exc)
            return None

    def _swap(self, slot: Slot, new: HeldBackend) -> None:
        old, slot.current = slot.current, new
        rec = new.record
        slot.switched_at = time.time()
        slot.retry_delay = 0.0
        slot.failure = None
        metrics.SWITCHES.labels(slot.kind.value, rec.backend.value).inc()
        metrics.SLOT_STALE.labels(slot.tenant, slot.kind.value).set(0)
        if slot.changed_at is not None:
            elapsed = time.monotonic() - slot.changed_at
            metrics.SWITCH_SECONDS.labels(slot.kind.value).observe(elapsed)
            slot.changed_at = None
        else:
            elapsed = 0.0
        self._set_status(slot, SlotStatus.READY)
        logs.swapped(slot, old, rec, elapsed)
        if old is not None:
            self._retirements.retire(old)

    def _make_missing(self, slot: Slot) -> None:
        old, slot.current = slot.current, None
        slot.failure = None
        slot.changed_at = None
        metrics.SLOT_STALE.labels(slot.tenant, slot.kind.value).set(0)
        if slot.status is not SlotStatus.MISSING and self._started:
            logs.lost(slot)
        self._set_status(slot, SlotStatus.MISSING)
        if old is not None:
            self._retirements.retire(old)

    def _fail(self, slot: Slot, record: RoutingRecord, exc: BaseException) -> None:
        status = SlotStatus.INVALID if isinstance(exc, InvalidRouting) else SlotStatus.UNAVAILABLE
        if isinstance(exc, TimeoutError):
            message = f"ping timed out after {self.ping_timeout}s"
        elif isinstance(exc, RoutingError):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
        held = slot.current
        if held is not None and held.record.revision == record.revision:
            message = logs.rotation_failed(record, message)
        slot.failure = SlotFailure(
            status, message, record.revision, record.backend.value, time.time()
        )
        metrics.BUILD_FAILURES.labels(slot.kind.value, record.backend.value, status.value).inc()
        if held is None:
            self._set_status(slot, status)
        else:
            metrics.SLOT_STALE.labels(slot.tenant, slot.kind.value).set(1)
        logs.failed(slot, record, held, message, exc)
        if status is SlotStatus.UNAVAILABLE and not self._closed:
            delay = min(self.retry_max, max(self.retry_initial, slot.retry_delay * 2))
            slot.retry_delay = delay
            loop = asyncio.get_running_loop()
            slot.retry_handle = loop.call_later(delay, self._retry, slot)

    def _retry(self, slot: Slot) -> None:
        slot.retry_handle = None
        if not self._closed:
            self._mark_dirty(slot, slot.changed_at)

    def _clear_failure(self, slot: Slot) -> None:
        slot.failure = None
        slot.changed_at = None
        slot.retry_delay = 0.0
        metrics.SLOT_STALE.labels(slot.tenant, slot.kind.value).set(0)
        self._set_status(slot, SlotStatus.READY)

    # -- secret rotation -----------------------------------------------------------------------

    async def _watch_secrets(self, interval: float) -> None:
        """Mark dirty every serving slot whose mounted Secret value changed (once per value)."""
        assert self.secrets is not None
        while not self._closed:
            await asyncio.sleep(interval)
            self.check_secrets()

    def check_secrets(self) -> int:
        """One look at every secret-backed slot (what the periodic task runs); slots marked."""
        if self.secrets is None or self._closed:
            return 0
        rotated = rotated_slots(self.secrets, self._slots.values())
        for slot in rotated:
            self._mark_dirty(slot, time.monotonic())
        return len(rotated)

    def _set_status(self, slot: Slot, status: SlotStatus) -> None:
        if slot.status is status:
            return
        slot.status = status
        ident = (slot.tenant, slot.kind)
        if status is SlotStatus.READY:
            self._not_ready.pop(ident, None)
        else:
            self._not_ready[ident] = slot
        metrics.SLOT_READY.labels(slot.tenant, slot.kind.value).set(
            1 if status is SlotStatus.READY else 0
        )
        self.generation += 1
