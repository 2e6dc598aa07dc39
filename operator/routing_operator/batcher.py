"""The ConfigMap write path's batching: a tenant's entries are usually applied together, and
entries of one ConfigMap reconciled close together share one read and one write instead of one
read-modify-write each (which would also conflict with each other on the resourceVersion).

Kept apart from the reconciler because it has its own state (the pending batches and their
timers) and its own rule: a key waits for its entry's Firestore write, so an entry whose document
turned out to be someone else's is written nowhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engines.routing.collection import Outcome
from engines.routing.errors import OwnershipConflict
from engines.routing.model import RoutingRecord

if TYPE_CHECKING:
    from .reconciler import Reconciler

__all__ = ["ConfigMapBatcher"]


@dataclass(frozen=True, slots=True)
class _Pending:
    """A ConfigMap key waiting for its batch."""

    record: RoutingRecord
    future: asyncio.Future[Outcome]
    after: asyncio.Future[Any] | None


class ConfigMapBatcher:
    """Coalesces ConfigMap writes: entries of one ConfigMap reconciled within ``window`` seconds
    share one read and one write (a tenant's entries are usually applied together).

    A record may wait on another write (``after``: its Firestore document, written meanwhile):
    the batch is flushed once those are done, and a record whose document turned out to be
    someone else's (``OwnershipConflict``) is not written, so an entry in Conflict is written
    nowhere. The document's write normally ends within the batching window."""

    def __init__(self, reconciler: Reconciler, window: float = 0.05) -> None:
        self.reconciler = reconciler
        self.window = window
        self._pending: dict[tuple[str, str], list[_Pending]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _schedule(self, loop: asyncio.AbstractEventLoop, slot: tuple[str, str]) -> None:
        def start() -> None:
            task = loop.create_task(self._flush(slot))
            self._tasks.add(task)  # asyncio keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

        loop.call_later(self.window, start)

    async def ensure(
        self, namespace: str, record: RoutingRecord, after: asyncio.Future[Any] | None = None
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        slot = (namespace, record.key.configmap_name)
        batch = self._pending.setdefault(slot, [])
        batch.append(_Pending(record, future, after))
        if len(batch) == 1:
            self._schedule(loop, slot)
        return await future

    async def _flush(self, slot: tuple[str, str]) -> None:
        batch = self._pending.pop(slot, [])
        gates = [p.after for p in batch if p.after is not None and not p.after.done()]
        if gates:
            await asyncio.wait(gates)
        # One record per key per write; a second claim of the same key waits for the next batch
        # and then meets the first one's ownership.
        first: dict[str, tuple[RoutingRecord, asyncio.Future[Outcome]]] = {}
        later: list[_Pending] = []
        for pending in batch:
            record, future, after = pending.record, pending.future, pending.after
            if after is not None and not after.cancelled():
                refused = after.exception()
                if isinstance(refused, OwnershipConflict):
                    if not future.done():
                        future.set_exception(OwnershipConflict(str(refused)))
                    continue
            if record.key.configmap_key in first:
                later.append(pending)
            else:
                first[record.key.configmap_key] = (record, future)
        if later:
            # Records that arrived while the gates were awaited started a batch of their own.
            waiting = self._pending.setdefault(slot, [])
            if not waiting:
                self._schedule(asyncio.get_running_loop(), slot)
            waiting.extend(later)
        if not first:
            return
        records = [r for r, _ in first.values()]
        try:
            results = await self.reconciler.run_blocking(
                self.reconciler.configmaps.ensure_many,
                slot[0],
                slot[1],
                records,
                self.reconciler.owner_alive,
            )
        except Exception as exc:
            for _, future in first.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for key, (_, future) in first.items():
            if future.done():
                continue
            outcome = results[key]
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
