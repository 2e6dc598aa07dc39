"""The memory adapters (one class per port); see the package docstring."""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from collections.abc import Mapping
from typing import Any

from engines.ports.base import check_collection, check_key, check_positive, check_tenant
from engines.ports.blob_store import BlobStore, check_blob_name, check_bytes, check_prefix
from engines.ports.document_store import (
    Document,
    Documents,
    DocumentStore,
    Updater,
    add_to_field,
    check_amount,
    check_data,
    check_field,
    check_limit,
    check_ref,
    json_equal,
)
from engines.ports.errors import LockNotHeld, NotFound
from engines.ports.features import Feature
from engines.ports.lock_manager import Lease, LockManager
from engines.ports.message_bus import MessageBus, Subscription, check_topic
from engines.ports.presence import Member, PresenceRegistry
from engines.ports.rate_limiter import Decision, RateLimiter, check_hit
from engines.routing.catalog import Backend, MemorySettings

from .._settings import from_json, parse_settings, to_json

__all__ = [
    "MemoryBlobStore",
    "MemoryDocumentStore",
    "MemoryLockManager",
    "MemoryMessageBus",
    "MemoryPresenceRegistry",
    "MemoryRateLimiter",
]


class _Memory:
    backend = Backend.MEMORY

    def __init__(
        self,
        config: Mapping[str, Any] | MemorySettings | None = None,
        *,
        tenant: str,
        secret: str | None = None,
    ) -> None:
        self.settings = parse_settings(Backend.MEMORY, MemorySettings, config or {})
        self.tenant = check_tenant(tenant)


def _copy(data: Any) -> Any:
    # A JSON round trip: callers never share mutable state with the store, as with real backends.
    return from_json(to_json(data))


class MemoryDocumentStore(_Memory, DocumentStore):
    features = frozenset(
        {Feature.READ_YOUR_WRITES, Feature.QUERY, Feature.TRANSACTION, Feature.INCREMENT}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._collections: dict[str, dict[str, dict[str, Any]]] = {}
        self._ids: dict[str, list[str]] = {}

    async def get(self, collection: str, id: str) -> dict[str, Any] | None:
        check_ref(collection, id)
        doc = self._collections.get(collection, {}).get(id)
        return None if doc is None else _copy(doc)

    async def put(self, collection: str, id: str, data: dict[str, Any]) -> None:
        check_ref(collection, id)
        self._write(collection, id, _copy(check_data(data)))

    async def delete(self, collection: str, id: str) -> None:
        check_ref(collection, id)
        self._write(collection, id, None)

    def _write(self, collection: str, id: str, data: dict[str, Any] | None) -> None:
        docs = self._collections.setdefault(collection, {})
        ids = self._ids.setdefault(collection, [])
        if data is None:
            if docs.pop(id, None) is not None:
                ids.pop(bisect.bisect_left(ids, id))
            return
        if id not in docs:
            bisect.insort(ids, id)
        docs[id] = data

    async def list(
        self, collection: str, *, limit: int = 100, start_after: str | None = None
    ) -> Documents:
        check_collection(collection)
        check_limit(limit)
        ids = self._ids.get(collection, [])
        start = 0 if start_after is None else bisect.bisect_right(ids, check_key(start_after))
        docs = self._collections.get(collection, {})
        return [Document(i, _copy(docs[i])) for i in ids[start : start + limit]]

    async def query(
        self, collection: str, field: str, value: Any, *, limit: int = 100
    ) -> Documents:
        check_collection(collection)
        check_field(field)
        check_limit(limit)
        docs = self._collections.get(collection, {})
        out = []
        for i in self._ids.get(collection, []):
            if field in docs[i] and json_equal(docs[i][field], value):
                out.append(Document(i, _copy(docs[i])))
                if len(out) == limit:
                    break
        return out

    async def update(self, collection: str, id: str, fn: Updater) -> dict[str, Any] | None:
        check_ref(collection, id)
        # No await between read and write: atomic on the event loop.
        current = self._collections.get(collection, {}).get(id)
        new = fn(None if current is None else _copy(current))
        if new is not None:
            new = _copy(check_data(new))
        self._write(collection, id, new)
        return None if new is None else _copy(new)

    async def increment(
        self, collection: str, id: str, field: str, amount: int | float = 1
    ) -> int | float:
        check_ref(collection, id)
        check_field(field)
        check_amount(amount)
        doc, new = add_to_field(self._collections.get(collection, {}).get(id), field, amount)
        self._write(collection, id, doc)
        return new


class MemoryRateLimiter(_Memory, RateLimiter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, closes_at)

    async def hit(self, key: str, *, limit: int, window_s: float) -> Decision:
        check_hit(key, limit, window_s)
        now = time.monotonic()
        count, closes_at = self._windows.get(key, (0, 0.0))
        if now >= closes_at:
            count, closes_at = 0, now + window_s
        count += 1
        self._windows[key] = (count, closes_at)
        reset_after = min(window_s, closes_at - now)  # no float drift past the window
        return Decision(count <= limit, limit, max(0, limit - count), reset_after)


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryMessageBus, topic: str) -> None:
        self.topic = topic
        self._bus = bus
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._closed = False

    async def __anext__(self) -> dict[str, Any]:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        message = await self._queue.get()
        if message is None:
            raise StopAsyncIteration
        return message

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._subscribers.get(self.topic, set()).discard(self)
            self._queue.put_nowait(None)


class MemoryMessageBus(_Memory, MessageBus):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscribers: dict[str, set[_MemorySubscription]] = {}

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        check_topic(topic)
        payload = check_data(message)
        for sub in list(self._subscribers.get(topic, ())):
            sub._queue.put_nowait(_copy(payload))

    async def subscribe(self, topic: str) -> Subscription:
        check_topic(topic)
        sub = _MemorySubscription(self, topic)
        self._subscribers.setdefault(topic, set()).add(sub)
        return sub

    async def aclose(self) -> None:
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                await sub.aclose()


class MemoryPresenceRegistry(_Memory, PresenceRegistry):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._members: dict[str, tuple[dict[str, Any], float]] = {}

    async def register(self, member_id: str, info: dict[str, Any], ttl_s: float) -> None:
        check_key(member_id, "member_id")
        check_positive(ttl_s, "ttl_s")
        self._members[member_id] = (_copy(check_data(info)), time.monotonic() + ttl_s)

    async def unregister(self, member_id: str) -> None:
        self._members.pop(check_key(member_id, "member_id"), None)

    async def list(self) -> list[Member]:
        now = time.monotonic()
        for mid in [m for m, (_, exp) in self._members.items() if exp <= now]:
            del self._members[mid]
        return [
            Member(mid, _copy(info), exp - now)
            for mid, (info, exp) in sorted(self._members.items())
        ]


class MemoryBlobStore(_Memory, BlobStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._blobs: dict[str, tuple[bytes, str]] = {}

    async def put(
        self, name: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        self._blobs[check_blob_name(name)] = (check_bytes(data), content_type)

    async def get(self, name: str) -> bytes:
        try:
            return self._blobs[check_blob_name(name)][0]
        except KeyError:
            raise NotFound(f"blob {name!r} does not exist") from None

    async def delete(self, name: str) -> None:
        self._blobs.pop(check_blob_name(name), None)

    async def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        return sorted(n for n in self._blobs if n.startswith(prefix))


class MemoryLockManager(_Memory, LockManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._locks: dict[str, tuple[str, float]] = {}  # name -> (token, expires_at)

    def _held(self, lease: Lease) -> bool:
        token, expires_at = self._locks.get(lease.name, ("", 0.0))
        return token == lease.token and time.monotonic() < expires_at

    async def acquire(self, name: str, *, ttl_s: float, owner: str) -> Lease | None:
        check_key(name, "lock name")
        check_key(owner, "owner")
        check_positive(ttl_s, "ttl_s")
        now = time.monotonic()
        if name in self._locks and now < self._locks[name][1]:
            return None
        lease = Lease(name, owner, uuid.uuid4().hex, ttl_s)
        self._locks[name] = (lease.token, now + ttl_s)
        return lease

    async def renew(self, lease: Lease, *, ttl_s: float | None = None) -> Lease:
        ttl = check_positive(lease.ttl_s if ttl_s is None else ttl_s, "ttl_s")
        if not self._held(lease):
            raise LockNotHeld(f"lock {lease.name!r} is no longer held by {lease.owner!r}")
        self._locks[lease.name] = (lease.token, time.monotonic() + ttl)
        return Lease(lease.name, lease.owner, lease.token, ttl)

    async def release(self, lease: Lease) -> None:
        if not self._held(lease):
            raise LockNotHeld(f"lock {lease.name!r} is no longer held by {lease.owner!r}")
        del self._locks[lease.name]
