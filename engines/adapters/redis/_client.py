"""What every Redis adapter shares: the client, its key prefix, and one error translation.

Key layout (``P`` = ``{key_prefix}{tenant}``)::

    P:doc:{collection}:{id}     document JSON (string)      P:docidx:{collection}  ids (zset, lex)
    P:rl:{key}                  rate-limit window counter (expires with the window)
    P:bus:{topic}               message stream (XADD/XREAD, trimmed to ~10,000, idle 24 h)
    P:presence:exp / :info      member -> expiry (zset, server ms) / member -> info JSON (hash)
    P:lock:{name}               lease token (SET NX PX)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from engines.ports.base import check_tenant
from engines.ports.errors import BackendUnavailable
from engines.routing.catalog import Backend, RedisSettings
from engines.routing.errors import InvalidRouting

from .._settings import parse_settings

__all__ = [
    "READ_BLOCK_MS",
    "RedisAdapter",
    "translate",
]

READ_BLOCK_MS = 5_000


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    try:
        yield
    except WatchError:
        raise
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"redis {what} failed: {type(exc).__name__}: {exc}") from exc


class RedisAdapter:
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
        with translate("ping"):
            await self._client.ping()

    async def aclose(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
