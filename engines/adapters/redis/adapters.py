"""The Redis adapters; see the package docstring for the key layout and guarantees.

Key layout (``P`` = ``{key_prefix}{tenant}``)::

    P:doc:{collection}:{id}     document JSON (string)      P:docidx:{collection}  ids (zset, lex)
    P:rl:{key}                  rate-limit window counter (expires with the window)
    P:bus:{topic}               message stream (XADD/XREAD, trimmed to ~10,000, idle 24 h)
    P:presence:exp / :info      member -> expiry (zset, server ms) / member -> info JSON (hash)
    P:lock:{name}               lease token (SET NX PX)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from engines.ports.base import check_collection, check_key, check_positive, check_tenant
from engines.ports.document_store import (
    Document,
    Documents,
    DocumentStore,
    Updater,
    check_data,
    check_field,
    check_limit,
    check_ref,
    json_equal,
)
from engines.ports.errors import BackendUnavailable, Conflict, LockNotHeld
from engines.ports.features import Feature
from engines.ports.lock_manager import Lease, LockManager
from engines.ports.message_bus import MessageBus, Subscription, check_topic
from engines.ports.presence import Member, PresenceRegistry
from engines.ports.rate_limiter import Decision, RateLimiter, check_hit
from engines.routing.catalog import Backend, RedisSettings
from engines.routing.errors import InvalidRouting

from .._keylocks import key_lock
from .._settings import from_json, parse_settings, to_json

__all__ = [
    "RedisDocumentStore",
    "RedisLockManager",
    "RedisMessageBus",
    "RedisPresenceRegistry",
    "RedisRateLimiter",
]

STREAM_MAXLEN = 10_000
STREAM_IDLE_MS = 24 * 3600 * 1000
READ_BLOCK_MS = 5_000
MAX_TXN_ATTEMPTS = 200


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except WatchError:
        raise
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc


class _Redis:
    backend = Backend.REDIS

    def __init__(
        self,
        config: Mapping[str, Any] | RedisSettings,
        *,
        tenant: str,
        secret: str | None = None,
    ) -> None:
        self.settings = parse_settings(Backend.REDIS, RedisSettings, config)
        self.tenant = check_tenant(tenant)
        self._prefix = f"{self.settings.key_prefix}{self.tenant}:"
        kwargs: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 5,
            "socket_timeout": READ_BLOCK_MS / 1000 + 5,
            "health_check_interval": 30,
        }
        if secret is not None:
            kwargs["password"] = secret
        self._client_kwargs = kwargs
        try:
            self._client: aioredis.Redis = aioredis.Redis.from_url(self.settings.url, **kwargs)
        except ValueError as exc:
            raise InvalidRouting(str(exc), field="redis.url") from exc

    def _dedicated_client(self) -> aioredis.Redis:
        """One connection, no automatic retry: for long blocking reads that we close ourselves."""
        return aioredis.Redis.from_url(
            self.settings.url,
            **self._client_kwargs,
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),
        )

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def ping(self) -> None:
        with _translate("ping"):
            await self._client.ping()

    async def aclose(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()


# --------------------------------------------------------------------------- DocumentStore

_LIST = """
local ids = redis.call('ZRANGE', KEYS[1], ARGV[2], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then out[#out + 1] = id; out[#out + 1] = v end
end
return out
"""


class RedisDocumentStore(_Redis, DocumentStore):
    features = frozenset(
        {Feature.READ_YOUR_WRITES, Feature.QUERY, Feature.TRANSACTION, Feature.INCREMENT}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._list_script = self._client.register_script(_LIST)

    def _doc(self, collection: str, id: str) -> str:
        return self._key("doc", collection, id)

    def _idx(self, collection: str) -> str:
        return self._key("docidx", collection)

    async def get(self, collection: str, id: str) -> dict[str, Any] | None:
        check_ref(collection, id)
        with _translate("get"):
            raw = await self._client.get(self._doc(collection, id))
        return None if raw is None else from_json(raw)

    async def put(self, collection: str, id: str, data: dict[str, Any]) -> None:
        check_ref(collection, id)
        payload = to_json(check_data(data))
        with _translate("put"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._doc(collection, id), payload)
                pipe.zadd(self._idx(collection), {id: 0})
                await pipe.execute()

    async def delete(self, collection: str, id: str) -> None:
        check_ref(collection, id)
        with _translate("delete"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._doc(collection, id))
                pipe.zrem(self._idx(collection), id)
                await pipe.execute()

    async def list(
        self, collection: str, *, limit: int = 100, start_after: str | None = None
    ) -> Documents:
        check_collection(collection)
        check_limit(limit)
        start = "-" if start_after is None else "(" + check_key(start_after)
        with _translate("list"):
            flat = await self._list_script(
                keys=[self._idx(collection)],
                args=[self._doc(collection, ""), start, limit],
            )
        return [Document(flat[i], from_json(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def query(
        self, collection: str, field: str, value: Any, *, limit: int = 100
    ) -> Documents:
        # A scan of the collection in id order: correct, O(collection size).
        check_collection(collection)
        check_field(field)
        check_limit(limit)
        out: Documents = []
        after: str | None = None
        while True:
            page = await self.list(collection, limit=500, start_after=after)
            for doc in page:
                if field in doc.data and json_equal(doc.data[field], value):
                    out.append(doc)
                    if len(out) == limit:
                        return out
            if len(page) < 500:
                return out
            after = page[-1].id

    async def update(self, collection: str, id: str, fn: Updater) -> dict[str, Any] | None:
        check_ref(collection, id)
        key, idx = self._doc(collection, id), self._idx(collection)
        async with key_lock(f"redis:{self.settings.url}:{key}"):
            return await self._update(key, idx, id, fn)

    async def _update(self, key: str, idx: str, id: str, fn: Updater) -> dict[str, Any] | None:
        with _translate("update"):
            async with self._client.pipeline(transaction=True) as pipe:
                for _ in range(MAX_TXN_ATTEMPTS):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        new = fn(None if raw is None else from_json(raw))
                        payload = None if new is None else to_json(check_data(new))
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if payload is None:
                            pipe.delete(key)
                            pipe.zrem(idx, id)
                        else:
                            pipe.set(key, payload)
                            pipe.zadd(idx, {id: 0})
                        await pipe.execute()
                        return None if payload is None else from_json(payload)
                    except WatchError:  # another pod wrote it first: re-read and retry
                        await asyncio.sleep(random.uniform(0, 0.005))
                        continue
                    finally:
                        await pipe.reset()  # type: ignore[no-untyped-call]
        raise Conflict(f"update of {key} lost {MAX_TXN_ATTEMPTS} races in a row")


# --------------------------------------------------------------------------- RateLimiter

_HIT = """
local c = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if c == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {c, ttl}
"""


class RedisRateLimiter(_Redis, RateLimiter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hit = self._client.register_script(_HIT)

    async def hit(self, key: str, *, limit: int, window_s: float) -> Decision:
        check_hit(key, limit, window_s)
        with _translate("rate-limit hit"):
            count, ttl_ms = await self._hit(
                keys=[self._key("rl", key)], args=[max(1, round(window_s * 1000))]
            )
        return Decision(count <= limit, limit, max(0, limit - count), ttl_ms / 1000)


# --------------------------------------------------------------------------- MessageBus


class _RedisSubscription(Subscription):
    """Reads the topic's stream on its own connection, from the id current at subscribe time.

    Closing disconnects that connection rather than cancelling the blocked XREAD: redis-py can
    swallow a cancellation that lands mid-read and then block again, so a cancel alone may never
    finish. A reader failure is handed to the consumer as the next item, never lost in a task.
    """

    def __init__(self, bus: RedisMessageBus, topic: str, key: str, last_id: str) -> None:
        self.topic = topic
        self._bus, self._key, self._last = bus, key, last_id
        self._conn = bus._dedicated_client()
        self._queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue(1000)
        self._closed = False
        self._task = asyncio.create_task(self._read(), name=f"redis-bus-{topic}")

    async def _read(self) -> None:
        try:
            while not self._closed:
                with _translate("subscribe"):
                    batches: Any = await self._conn.xread(
                        {self._key: self._last}, count=200, block=READ_BLOCK_MS
                    )
                for _stream, entries in batches or ():
                    for entry_id, fields in entries:
                        self._last = entry_id
                        await self._queue.put(from_json(fields["m"]))
        except BaseException as exc:  # delivered to the consumer, not lost in a task
            if not self._closed:
                await self._queue.put(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def __anext__(self) -> dict[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None or self._closed:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._closed = True
            raise item
        return item

    async def aclose(self) -> None:
        if self._closed and self._task.done():
            return
        self._closed = True
        self._bus._subscriptions.discard(self)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wakes a consumer blocked in __anext__
        with contextlib.suppress(RedisError, OSError):
            await self._conn.connection_pool.disconnect(inuse_connections=True)
        done, _ = await asyncio.wait({self._task}, timeout=READ_BLOCK_MS / 1000 + 1)
        if not done:  # last resort; should not happen once the socket is closed
            self._task.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self._conn.aclose()


class RedisMessageBus(_Redis, MessageBus):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions: set[_RedisSubscription] = set()

    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        check_topic(topic)
        payload = to_json(check_data(message))
        key = self._key("bus", topic)
        with _translate("publish"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(key, {"m": payload}, maxlen=STREAM_MAXLEN, approximate=True)
                pipe.pexpire(key, STREAM_IDLE_MS)
                await pipe.execute()

    async def subscribe(self, topic: str) -> Subscription:
        check_topic(topic)
        key = self._key("bus", topic)
        with _translate("subscribe"):
            last: Any = await self._client.xrevrange(key, count=1)
        sub = _RedisSubscription(self, topic, key, str(last[0][0]) if last else "0-0")
        self._subscriptions.add(sub)
        return sub

    async def aclose(self) -> None:
        for sub in list(self._subscriptions):
            await sub.aclose()
        await super().aclose()


# --------------------------------------------------------------------------- PresenceRegistry

_NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
_REGISTER = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return now
"""
)
_LIST_LIVE = (
    _NOW_MS
    + """
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 1, #dead, 500 do
  redis.call('HDEL', KEYS[2], unpack(dead, i, math.min(i + 499, #dead)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = tostring(tonumber(live[i + 1]) - now)
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or '{}'
end
return out
"""
)


class RedisPresenceRegistry(_Redis, PresenceRegistry):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._register = self._client.register_script(_REGISTER)
        self._list = self._client.register_script(_LIST_LIVE)
        self._keys = [self._key("presence", "exp"), self._key("presence", "info")]

    async def register(self, member_id: str, info: dict[str, Any], ttl_s: float) -> None:
        check_key(member_id, "member_id")
        check_positive(ttl_s, "ttl_s")
        payload = to_json(check_data(info))
        with _translate("presence register"):
            await self._register(
                keys=self._keys, args=[member_id, max(1, round(ttl_s * 1000)), payload]
            )

    async def unregister(self, member_id: str) -> None:
        check_key(member_id, "member_id")
        with _translate("presence unregister"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zrem(self._keys[0], member_id)
                pipe.hdel(self._keys[1], member_id)
                await pipe.execute()

    async def list(self) -> list[Member]:
        with _translate("presence list"):
            flat = await self._list(keys=self._keys)
        members = [
            Member(flat[i], from_json(flat[i + 2]), float(flat[i + 1]) / 1000)
            for i in range(0, len(flat), 3)
        ]
        return sorted(members, key=lambda m: m.member_id)


# --------------------------------------------------------------------------- LockManager

_IF_HELD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
"""
_RENEW = _IF_HELD + "return redis.call('PEXPIRE', KEYS[1], ARGV[2])"
_RELEASE = _IF_HELD + "return redis.call('DEL', KEYS[1])"


class RedisLockManager(_Redis, LockManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)

    async def acquire(self, name: str, *, ttl_s: float, owner: str) -> Lease | None:
        check_key(name, "lock name")
        check_key(owner, "owner")
        check_positive(ttl_s, "ttl_s")
        token = f"{owner}/{uuid.uuid4().hex}"
        with _translate("lock acquire"):
            ok = await self._client.set(
                self._key("lock", name), token, nx=True, px=max(1, round(ttl_s * 1000))
            )
        return Lease(name, owner, token, ttl_s) if ok else None

    async def renew(self, lease: Lease, *, ttl_s: float | None = None) -> Lease:
        ttl = check_positive(lease.ttl_s if ttl_s is None else ttl_s, "ttl_s")
        with _translate("lock renew"):
            ok = await self._renew(
                keys=[self._key("lock", lease.name)],
                args=[lease.token, max(1, round(ttl * 1000))],
            )
        if not ok:
            raise LockNotHeld(f"lock {lease.name!r} is no longer held by {lease.owner!r}")
        return Lease(lease.name, lease.owner, lease.token, ttl)

    async def release(self, lease: Lease) -> None:
        with _translate("lock release"):
            ok = await self._release(keys=[self._key("lock", lease.name)], args=[lease.token])
        if not ok:
            raise LockNotHeld(f"lock {lease.name!r} is no longer held by {lease.owner!r}")
