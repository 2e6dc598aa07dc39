"""The Redis DocumentStore: one JSON string per document and a lexicographic index per collection.

Keys ``P:doc:{collection}:{id}`` and ``P:docidx:{collection}`` (see :mod:`._client`). Listing is
one Lua script (ids and values read together); updates are WATCH/MULTI transactions.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from redis.exceptions import WatchError

from engines.ports.base import check_collection, check_key
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
from engines.ports.errors import Conflict
from engines.ports.features import Feature

from .._keylocks import key_lock
from .._settings import from_json, to_json
from ._client import RedisAdapter, translate

__all__ = ["RedisDocumentStore"]

MAX_TXN_ATTEMPTS = 200


_LIST = """
local ids = redis.call('ZRANGE', KEYS[1], ARGV[2], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then out[#out + 1] = id; out[#out + 1] = v end
end
return out
"""


class RedisDocumentStore(RedisAdapter, DocumentStore):
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
        with translate("get"):
            raw = await self._client.get(self._doc(collection, id))
        return None if raw is None else from_json(raw)

    async def put(self, collection: str, id: str, data: dict[str, Any]) -> None:
        check_ref(collection, id)
        payload = to_json(check_data(data))
        with translate("put"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._doc(collection, id), payload)
                pipe.zadd(self._idx(collection), {id: 0})
                await pipe.execute()

    async def delete(self, collection: str, id: str) -> None:
        check_ref(collection, id)
        with translate("delete"):
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
        with translate("list"):
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
        with translate("update"):
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
