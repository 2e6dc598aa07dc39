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

Secret rotation: kubelet rewrites a mounted Secret in place (an atomic swap of ``..data``) and
nothing tells the registry, so the slots look. Every ``secret_check_interval`` seconds each
serving backend built with a ``secretRef`` compares the sha256 of the value on disk with the one
it was built with; a difference marks the slot dirty. Polling a digest is deliberately simple:
it works whatever the volume type, survives symlink swaps that inotify watches lose, and costs
one small tmpfs read per secret-backed slot per interval. A new value that fails (a wrong
password) is a failed switch: the backend built with the previous value keeps serving, and the
failure is in ``/routing``, the metrics and the log.

Because the worker re-reads the table each round, a burst of changes to one slot coalesces into
one build of the newest revision: a build that finishes after a newer change arrived is dropped
unbuilt-into-service. A failed build keeps the last known-good backend serving, records the
failure on the slot (``/routing``), counts it (metrics) and logs it; unreachable backends are
retried with exponential backoff. Nothing here ever exits the process or falls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

from engines.ports import Port
from engines.routing.catalog import ResourceKind
from engines.routing.errors import ConfigMissing, InvalidRouting, RoutingError
from engines.routing.model import RoutingRecord, SecretRef
from engines.routing.registry import RoutingRegistry
from engines.routing.table import RoutingChange

from . import metrics
from .secrets import MountedSecrets, SecretResolver
from .slots import HeldBackend, Slot, SlotFailure, SlotLease, SlotStatus

__all__ = [
    "BackendFactory",
    "BackendSlots",
    "SecretDigests",
    "TenantNotServed",
    "adapter_factory",
]

log = logging.getLogger("engines.runtime")
P = TypeVar("P", bound=Port)

BackendFactory = Callable[[RoutingRecord, str], Port]
"""``factory(record, tenant)`` builds the backend ``record`` routes to for the served tenant.

Raises ``InvalidRouting`` / ``TestBackendNotAllowed`` / ``BackendUnavailable``; does no I/O
(reachability is checked afterwards with ``await port.ping()``)."""


class SecretDigests(Protocol):
    """What the slots need from a secret reader to notice a rotated Secret."""

    def digest(self, ref: SecretRef) -> str | None:
        """sha256 of the value the last build read for ``ref``."""

    def current_digest(self, ref: SecretRef) -> str | None:
        """sha256 of the value mounted now (``None`` when it cannot be read)."""


class TenantNotServed(LookupError):
    """A request named a tenant this pod does not serve (``ENGINES_TENANTS``)."""

    def __init__(self, tenant: str, served: Iterable[str]) -> None:
        self.tenant = tenant
        super().__init__(f"tenant {tenant!r} is not served here; served: {', '.join(served)}")


class _AdapterFactory:
    """``build_backend`` with the ``secretRef`` resolved after the checks that may refuse it."""

    def __init__(self, allow_test_backends: bool, secrets: SecretResolver) -> None:
        self.allow_test_backends = allow_test_backends
        self.secrets = secrets

    def __call__(self, record: RoutingRecord, tenant: str) -> Port:
        from engines.adapters import build_backend, check_buildable

        # A record this pod must not build (another tenant's, a test-only backend without the
        # flag) is refused before its Secret is read: the value never reaches an adapter.
        check_buildable(record, tenant=tenant, allow_test_backends=self.allow_test_backends)
        ref = record.secret_ref
        secret = self.secrets(ref) if ref is not None else None
        return build_backend(
            record,
            tenant=tenant,
            allow_test_backends=self.allow_test_backends,
            secret_value=secret,
        )


def adapter_factory(
    *, allow_test_backends: bool, secrets: SecretResolver | None = None
) -> BackendFactory:
    """The production factory: ``engines.adapters.build_backend`` with secrets resolved.

    Its ``secrets`` reader (the mounted Secrets by default) is what ``BackendSlots`` asks for
    digests to notice a rotated Secret.
    """
    return _AdapterFactory(allow_test_backends, secrets or MountedSecrets())


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
        self.drain_timeout = drain_timeout
        """How long a retired backend waits for its in-flight calls before it is closed anyway."""
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
        self._closers: set[asyncio.Task[None]] = set()
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
                self._retire(held)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

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
                    and not self._secret_rotated(held)
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
                    await self._close_quietly(port, slot)
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
                await self._close_quietly(port, slot)
            raise
        except Exception as exc:  # every failure is reported; the slot keeps what it serves
            if port is not None:
                await self._close_quietly(port, slot)
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
        if old is None:
            log.info(
                "serving tenant=%s resource_kind=%s with %s (revision %s)",
                slot.tenant,
                slot.kind.value,
                rec.backend.value,
                rec.revision[:12],
            )
        elif old.record.revision == rec.revision and rec.secret_ref is not None:
            log.info(
                "rebuilt tenant=%s resource_kind=%s %s (revision %s) with the rotated secret %s/%s "
                "in %.0f ms; draining %d in-flight call(s) on the backend built with the old value",
                slot.tenant,
                slot.kind.value,
                rec.backend.value,
                rec.revision[:12],
                rec.secret_ref.name,
                rec.secret_ref.key,
                elapsed * 1000,
                old.inflight,
            )
            self._retire(old)
        else:
            log.info(
                "switched tenant=%s resource_kind=%s from %s (revision %s) to %s (revision %s) "
                "in %.0f ms; draining %d in-flight call(s) on the old backend",
                slot.tenant,
                slot.kind.value,
                old.record.backend.value,
                old.record.revision[:12],
                rec.backend.value,
                rec.revision[:12],
                elapsed * 1000,
                old.inflight,
            )
            self._retire(old)

    def _make_missing(self, slot: Slot) -> None:
        old, slot.current = slot.current, None
        slot.failure = None
        slot.changed_at = None
        metrics.SLOT_STALE.labels(slot.tenant, slot.kind.value).set(0)
        if slot.status is not SlotStatus.MISSING and self._started:
            log.warning(
                "no RoutingEntry resolves for tenant=%s env=%s project=%s resource_kind=%s: "
                "requests get ConfigMissing and the pod is not ready",
                slot.tenant,
                self.env,
                self.project,
                slot.kind.value,
            )
        self._set_status(slot, SlotStatus.MISSING)
        if old is not None:
            self._retire(old)

    def _fail(self, slot: Slot, record: RoutingRecord, exc: BaseException) -> None:
        status = SlotStatus.INVALID if isinstance(exc, InvalidRouting) else SlotStatus.UNAVAILABLE
        if isinstance(exc, TimeoutError):
            message = f"ping timed out after {self.ping_timeout}s"
        elif isinstance(exc, RoutingError):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
        held = slot.current
        rotated = held is not None and held.record.revision == record.revision
        if rotated and record.secret_ref is not None:
            ref = record.secret_ref
            message = (
                f"the rotated value of secret {ref.name}/{ref.key} does not work: {message}; the "
                "backend built with the previous value keeps serving"
            )
        slot.failure = SlotFailure(
            status, message, record.revision, record.backend.value, time.time()
        )
        metrics.BUILD_FAILURES.labels(slot.kind.value, record.backend.value, status.value).inc()
        if held is None:
            self._set_status(slot, status)
            log.error(
                "cannot build %s for tenant=%s resource_kind=%s (revision %s): %s; the kind is "
                "not served",
                record.backend.value,
                slot.tenant,
                slot.kind.value,
                record.revision[:12],
                message,
                exc_info=not isinstance(exc, RoutingError | TimeoutError),
            )
        else:
            metrics.SLOT_STALE.labels(slot.tenant, slot.kind.value).set(1)
            log.error(
                "cannot switch tenant=%s resource_kind=%s to %s (revision %s): %s; keeping the "
                "last known-good %s (revision %s)",
                slot.tenant,
                slot.kind.value,
                record.backend.value,
                record.revision[:12],
                message,
                held.record.backend.value,
                held.record.revision[:12],
                exc_info=not isinstance(exc, RoutingError | TimeoutError),
            )
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

    def _secret_rotated(self, held: HeldBackend) -> bool:
        """The Secret value mounted now differs from the one ``held`` was built with."""
        ref = held.record.secret_ref
        if ref is None or self.secrets is None or held.secret_digest is None:
            return False
        now = self.secrets.current_digest(ref)
        return now is not None and now != held.secret_digest

    async def _watch_secrets(self, interval: float) -> None:
        """Mark dirty every serving slot whose mounted Secret value changed (once per value)."""
        assert self.secrets is not None
        while not self._closed:
            await asyncio.sleep(interval)
            self.check_secrets()

    def check_secrets(self) -> int:
        """One look at every secret-backed slot (what the periodic task runs); slots marked."""
        marked = 0
        if self.secrets is None or self._closed:
            return marked
        seen: dict[SecretRef, str | None] = {}  # one read per Secret key per look, not per slot
        for slot in self._slots.values():
            held = slot.current
            ref = held.record.secret_ref if held is not None else None
            if held is None or held.secret_digest is None or ref is None:
                continue
            if ref not in seen:
                seen[ref] = self.secrets.current_digest(ref)
            now = seen[ref]
            if now is None or now == held.secret_digest or now == slot.secret_seen:
                continue  # unreadable (keep serving), unchanged, or already tried
            slot.secret_seen = now
            log.info(
                "secret %s/%s changed for tenant=%s resource_kind=%s: rebuilding its backend",
                ref.name,
                ref.key,
                slot.tenant,
                slot.kind.value,
            )
            self._mark_dirty(slot, time.monotonic())
            marked += 1
        return marked

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

    # -- draining ------------------------------------------------------------------------------

    def _retire(self, held: HeldBackend) -> None:
        held.retire()
        task = asyncio.get_running_loop().create_task(self._close_when_drained(held))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close_when_drained(self, held: HeldBackend) -> None:
        try:
            await asyncio.wait_for(held.drained.wait(), self.drain_timeout)
        except TimeoutError:
            log.warning(
                "closing the retired %s backend (revision %s) with %d call(s) still running "
                "after %.0fs",
                held.record.backend.value,
                held.record.revision[:12],
                held.inflight,
                self.drain_timeout,
            )
        await self._close_quietly(held.port, None)

    async def _close_quietly(self, port: Port, slot: Slot | None) -> None:
        try:
            await asyncio.wait_for(port.aclose(), self.ping_timeout)
        except Exception:  # closing a dead backend must not take the slot down with it
            log.warning("closing backend %r failed", port, exc_info=True)
