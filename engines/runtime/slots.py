"""One slot per (tenant, kind): the backend serving it now, its revision, and its in-flight calls.

A slot is only ever touched from the event loop thread, so its state changes are plain
assignments: swapping ``slot.current`` is atomic by construction, and a request that checked out
the old backend keeps it (its :class:`HeldBackend` counts the call) until the call ends. The old
backend is closed only once that count reaches zero ("drain"), or after a deadline so a stuck
caller cannot pin a dead connection pool forever.

A slot that has no backend explains why, as the error a request gets:
``ConfigMissing`` (no entry resolves), ``InvalidRouting`` (the entry cannot be built, e.g. a
test-only backend without the flag) or ``BackendUnavailable`` (being built, or unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Generic, TypeVar

from engines.ports import Port
from engines.routing.catalog import ResourceKind
from engines.routing.contract import RoutingKey
from engines.routing.errors import BackendUnavailable, ConfigMissing, InvalidRouting, RoutingError
from engines.routing.model import RoutingRecord
from engines.routing.table import candidate_keys

__all__ = ["HeldBackend", "Slot", "SlotFailure", "SlotLease", "SlotStatus"]

P = TypeVar("P", bound=Port)


class SlotStatus(StrEnum):
    """Where a slot stands; only ``READY`` counts for readiness."""

    PENDING = "pending"
    """An entry resolves and its first backend is being built."""
    READY = "ready"
    """A backend is serving (possibly the last known-good one: see ``Slot.failure``)."""
    MISSING = "missing"
    """No routing entry resolves for this (tenant, kind)."""
    INVALID = "invalid"
    """The entry resolves but cannot be built (bad settings, test-only backend refused)."""
    UNAVAILABLE = "unavailable"
    """The entry resolves but its backend cannot be reached; retried with backoff."""


@dataclass(frozen=True, slots=True)
class SlotFailure:
    """Why the newest entry of a slot is not serving."""

    status: SlotStatus
    """``INVALID`` or ``UNAVAILABLE``."""
    message: str
    revision: str
    backend: str
    at: float
    """Wall-clock time (``time.time()``) of the failure."""

    def as_dict(self) -> dict[str, object]:
        return {
            "reason": self.status.value,
            "message": self.message,
            "revision": self.revision,
            "backend": self.backend,
            "at": self.at,
        }


class HeldBackend:
    """A built backend plus the count of calls running on it; drained once retired and idle."""

    __slots__ = (
        "built_at",
        "drained",
        "inflight",
        "port",
        "record",
        "retired",
        "secret_digest",
        "superseded",
    )

    def __init__(self, port: Port, record: RoutingRecord, secret_digest: str | None = None) -> None:
        self.port = port
        self.record = record
        self.secret_digest = secret_digest
        """sha256 of the ``secretRef`` value this backend was built with (None: no secret)."""
        self.inflight = 0
        self.retired = False
        self.built_at = time.time()
        self.drained = asyncio.Event()
        """Set when the backend is retired and no call runs on it any more."""
        self.superseded = asyncio.Event()
        """Set when another backend (or none) took this one's place: long streams re-lease."""

    def enter(self) -> None:
        self.inflight += 1

    def exit(self) -> None:
        self.inflight -= 1
        if self.retired and self.inflight == 0:
            self.drained.set()

    def retire(self) -> None:
        self.retired = True
        self.superseded.set()
        if self.inflight == 0:
            self.drained.set()


class Slot:
    """The backend of one served (tenant, kind); mutated only on the event loop thread."""

    __slots__ = (
        "changed_at",
        "current",
        "desired",
        "dirty",
        "env",
        "failure",
        "kind",
        "project",
        "retry_delay",
        "retry_handle",
        "secret_seen",
        "settled",
        "status",
        "switched_at",
        "tenant",
        "worker",
    )

    def __init__(self, tenant: str, kind: ResourceKind, env: str, project: str) -> None:
        self.tenant = tenant
        self.kind = kind
        self.env = env
        self.project = project
        self.current: HeldBackend | None = None
        self.desired: RoutingRecord | None = None
        """The record the registry resolves now (what the slot converges to)."""
        self.status = SlotStatus.PENDING
        self.failure: SlotFailure | None = None
        """Set while the newest entry failed to build (the slot may still serve the previous)."""
        self.dirty = False
        self.worker: asyncio.Task[None] | None = None
        self.settled = asyncio.Event()
        self.retry_handle: asyncio.TimerHandle | None = None
        self.retry_delay = 0.0
        self.changed_at: float | None = None
        """``time.monotonic()`` of the oldest registry change not yet applied."""
        self.switched_at: float | None = None
        """Wall-clock time the serving backend was swapped in."""
        self.secret_seen: str | None = None
        """Digest of the newest mounted secret value a rebuild was started for (rotation)."""

    @property
    def key(self) -> RoutingKey:
        """The requested key (the served tenant and project, not the winning entry's)."""
        return RoutingKey(self.env, self.tenant, self.project, self.kind.value)

    def error(self) -> RoutingError:
        """The error a request gets while this slot has no backend."""
        if self.status is SlotStatus.MISSING:
            return ConfigMissing(
                self.key, candidate_keys(self.kind.value, self.tenant, self.env, self.project)
            )
        failure = self.failure
        if self.status is SlotStatus.INVALID and failure is not None:
            return InvalidRouting(
                f"resource_kind={self.kind.value} tenant={self.tenant}: the routing entry "
                f"(revision {failure.revision[:12]}) cannot be built: {failure.message}"
            )
        if failure is not None:
            return BackendUnavailable(
                f"resource_kind={self.kind.value} tenant={self.tenant}: backend "
                f"{failure.backend} is unavailable: {failure.message}"
            )
        return BackendUnavailable(
            f"resource_kind={self.kind.value} tenant={self.tenant}: backend is being built"
        )


class SlotLease(Generic[P]):
    """``async with slots.lease(tenant, kind) as port``: the port stays open until the block ends.

    Entering raises the slot's error (``ConfigMissing``...) when there is no backend; a backend
    whose first build is under way is waited for, up to ``pending_wait`` seconds.
    """

    __slots__ = ("_held", "_pending_wait", "_slot")

    def __init__(self, slot: Slot, pending_wait: float) -> None:
        self._slot = slot
        self._pending_wait = pending_wait
        self._held: HeldBackend | None = None

    async def __aenter__(self) -> P:
        slot = self._slot
        held = slot.current
        if held is None and slot.worker is not None and self._pending_wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.settled.wait(), self._pending_wait)
            held = slot.current
        if held is None:
            raise slot.error()
        held.enter()
        self._held = held
        return held.port  # type: ignore[return-value]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.exit()

    @property
    def superseded(self) -> asyncio.Event:
        """Set when the leased backend was swapped out (long-lived streams should re-lease)."""
        assert self._held is not None, "superseded is only known inside the `async with` block"
        return self._held.superseded
