"""The Firestore adapters; see the package docstring for layout and guarantees.

Layout under ``{collection}/{tenant}`` (a document that need not exist)::

    {user collection}/{id}      DocumentStore documents, as given
    _rate_limits/{key}          {count, closes_at, expires_at}
    _presence/{member}          {info, expires_at}
    _locks/{name}               {owner, token, expires_at}

User collection names never start with ``_`` (a port rule), so these cannot collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import firestore
from google.cloud.firestore_v1 import AsyncTransaction, async_transactional
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

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
)
from engines.ports.errors import (
    BackendUnavailable,
    Conflict,
    InvalidArgument,
    LockNotHeld,
    PortError,
)
from engines.ports.features import Feature
from engines.ports.lock_manager import Lease, LockManager
from engines.ports.presence import Member, PresenceRegistry
from engines.ports.rate_limiter import Decision, RateLimiter, check_hit
from engines.routing.catalog import Backend, FirestoreSettings
from engines.routing.errors import RoutingError

from .._google import service_account_credentials
from .._keylocks import key_lock
from .._settings import parse_settings

__all__ = [
    "FirestoreDocumentStore",
    "FirestoreLockManager",
    "FirestorePresenceRegistry",
    "FirestoreRateLimiter",
]

T = TypeVar("T")
TXN_DEADLINE_S = 30.0
PING_TIMEOUT_S = 5.0


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except RoutingError:
        raise
    except gexc.InvalidArgument as exc:
        raise InvalidArgument(f"firestore {what}: {exc.message}") from exc
    except (gexc.GoogleAPIError, auth_exc.GoogleAuthError, OSError) as exc:
        raise BackendUnavailable(f"firestore {what} failed: {type(exc).__name__}: {exc}") from exc


def _aborted(exc: BaseException) -> bool:
    if isinstance(exc, gexc.Aborted):
        return True
    # async_transactional wraps "too many attempts" in a ValueError chained to Aborted.
    return (
        isinstance(exc, ValueError)
        and not isinstance(exc, PortError)
        and isinstance(exc.__cause__, gexc.Aborted)
    )


class _Firestore:
    backend = Backend.FIRESTORE

    def __init__(
        self,
        config: Mapping[str, Any] | FirestoreSettings,
        *,
        tenant: str,
        secret: str | None = None,
    ) -> None:
        self.settings = parse_settings(Backend.FIRESTORE, FirestoreSettings, config)
        self.tenant = check_tenant(tenant)
        credentials = service_account_credentials(secret)[0] if secret is not None else None
        try:
            self._client = firestore.AsyncClient(
                project=self.settings.project_id,
                database=self.settings.database,
                credentials=credentials,
            )
        except auth_exc.GoogleAuthError as exc:
            raise BackendUnavailable(f"firestore credentials unavailable: {exc}") from exc
        self._root = self._client.collection(self.settings.collection).document(self.tenant)

    async def ping(self) -> None:
        with _translate("ping"):
            await (
                self._root.collection("_ping")
                .document("ping")
                .get(retry=None, timeout=PING_TIMEOUT_S)
            )

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()  # type: ignore[no-untyped-call]

    async def _transaction(
        self, ref: Any, body: Callable[[AsyncTransaction], Awaitable[T]], what: str
    ) -> T:
        """Run ``body`` in a transaction on ``ref``; lost races are retried with backoff."""
        async with key_lock(f"{self._client.project}/{self.settings.database}/{ref.path}"):
            return await self._transaction_unlocked(body, what)

    async def _transaction_unlocked(
        self, body: Callable[[AsyncTransaction], Awaitable[T]], what: str
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TXN_DEADLINE_S
        delay = 0.005
        wrapped = async_transactional(body)
        while True:
            try:
                return await wrapped(self._client.transaction(max_attempts=3))
            except RoutingError:
                raise
            except Exception as exc:
                if not _aborted(exc):
                    with _translate(what):
                        raise
                if loop.time() > deadline:
                    raise Conflict(
                        f"firestore {what}: kept losing races for {TXN_DEADLINE_S:.0f}s"
                    ) from exc
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.5)


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- DocumentStore


class FirestoreDocumentStore(_Firestore, DocumentStore):
    features = frozenset(
        {Feature.READ_YOUR_WRITES, Feature.QUERY, Feature.TRANSACTION, Feature.INCREMENT}
    )

    def _coll(self, collection: str) -> Any:
        return self._root.collection(check_collection(collection))

    async def get(self, collection: str, id: str) -> dict[str, Any] | None:
        check_ref(collection, id)
        with _translate("get"):
            snap = await self._coll(collection).document(id).get()
        return snap.to_dict() if snap.exists else None

    async def put(self, collection: str, id: str, data: dict[str, Any]) -> None:
        check_ref(collection, id)
        check_data(data)
        with _translate("put"):
            await self._coll(collection).document(id).set(data)

    async def delete(self, collection: str, id: str) -> None:
        check_ref(collection, id)
        with _translate("delete"):
            await self._coll(collection).document(id).delete()

    async def _run(self, query: Any) -> Documents:
        with _translate("list"):
            return [Document(s.id, s.to_dict()) async for s in query.stream()]

    async def list(
        self, collection: str, *, limit: int = 100, start_after: str | None = None
    ) -> Documents:
        coll = self._coll(collection)
        query = coll.order_by(FieldPath.document_id()).limit(check_limit(limit))
        if start_after is not None:
            after = coll.document(check_key(start_after))
            query = query.start_after({FieldPath.document_id(): after})
        return await self._run(query)

    async def query(
        self, collection: str, field: str, value: Any, *, limit: int = 100
    ) -> Documents:
        coll = self._coll(collection)
        query = (
            coll.where(filter=FieldFilter(check_field(field), "==", value))
            .order_by(FieldPath.document_id())
            .limit(check_limit(limit))
        )
        return await self._run(query)

    async def update(self, collection: str, id: str, fn: Updater) -> dict[str, Any] | None:
        check_ref(collection, id)
        ref = self._coll(collection).document(id)

        async def body(txn: AsyncTransaction) -> dict[str, Any] | None:
            snap = await ref.get(transaction=txn)
            new = fn(snap.to_dict() if snap.exists else None)
            if new is None:
                if snap.exists:
                    txn.delete(ref)
            else:
                txn.set(ref, check_data(new))
            return new

        return await self._transaction(ref, body, f"update {collection}/{id}")


# --------------------------------------------------------------------------- RateLimiter


class FirestoreRateLimiter(_Firestore, RateLimiter):
    async def hit(self, key: str, *, limit: int, window_s: float) -> Decision:
        check_hit(key, limit, window_s)
        ref = self._root.collection("_rate_limits").document(key)

        async def body(txn: AsyncTransaction) -> Decision:
            snap = await ref.get(transaction=txn)
            now = _now().timestamp()
            data = snap.to_dict() if snap.exists else None
            if data is None or now >= data["closes_at"]:
                count, closes_at = 0, now + window_s
            else:
                count, closes_at = int(data["count"]), float(data["closes_at"])
            count += 1
            if count <= limit:  # refused hits change nothing: no write, less contention
                txn.set(
                    ref,
                    {
                        "count": count,
                        "closes_at": closes_at,
                        "expires_at": datetime.fromtimestamp(closes_at, UTC),
                    },
                )
            reset_after = min(window_s, max(0.0, closes_at - now))  # other pods' clocks drift
            return Decision(count <= limit, limit, max(0, limit - count), reset_after)

        return await self._transaction(ref, body, "rate-limit hit")


# --------------------------------------------------------------------------- PresenceRegistry


class FirestorePresenceRegistry(_Firestore, PresenceRegistry):
    SWEEP_EVERY_S = 30.0
    """Lapsed documents are deleted at most this often per instance (``list`` filters them
    anyway; in production a TTL policy on ``expires_at`` does the sweeping)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_sweep = 0.0

    def _coll(self) -> Any:
        return self._root.collection("_presence")

    async def register(self, member_id: str, info: dict[str, Any], ttl_s: float) -> None:
        check_key(member_id, "member_id")
        check_positive(ttl_s, "ttl_s")
        check_data(info)
        with _translate("presence register"):
            await (
                self._coll()
                .document(member_id)
                .set({"info": info, "expires_at": _now() + timedelta(seconds=ttl_s)})
            )

    async def unregister(self, member_id: str) -> None:
        check_key(member_id, "member_id")
        with _translate("presence unregister"):
            await self._coll().document(member_id).delete()

    async def list(self) -> list[Member]:
        now = _now()
        with _translate("presence list"):
            live = [
                s
                async for s in self._coll()
                .where(filter=FieldFilter("expires_at", ">", now))
                .stream()
            ]
            if time.monotonic() >= self._next_sweep:
                await self._sweep(now)
        members = []
        for snap in live:
            data = snap.to_dict()
            members.append(
                Member(snap.id, data["info"], (data["expires_at"] - now).total_seconds())
            )
        return sorted(members, key=lambda m: m.member_id)

    async def _sweep(self, now: datetime) -> None:
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
        dead = [
            s.reference
            async for s in self._coll()
            .where(filter=FieldFilter("expires_at", "<=", now))
            .limit(200)
            .stream()
        ]
        if dead:
            batch = self._client.batch()
            for ref in dead:
                batch.delete(ref)
            await batch.commit()


# --------------------------------------------------------------------------- LockManager


class FirestoreLockManager(_Firestore, LockManager):
    def _ref(self, name: str) -> Any:
        return self._root.collection("_locks").document(check_key(name, "lock name"))

    async def acquire(self, name: str, *, ttl_s: float, owner: str) -> Lease | None:
        ref = self._ref(name)
        check_key(owner, "owner")
        check_positive(ttl_s, "ttl_s")
        lease = Lease(name, owner, f"{owner}/{uuid.uuid4().hex}", ttl_s)

        async def body(txn: AsyncTransaction) -> Lease | None:
            snap = await ref.get(transaction=txn)
            now = _now()
            if snap.exists and snap.get("expires_at") > now:
                return None
            txn.set(
                ref,
                {
                    "owner": owner,
                    "token": lease.token,
                    "expires_at": now + timedelta(seconds=ttl_s),
                },
            )
            return lease

        return await self._transaction(ref, body, f"lock acquire {name}")

    async def _if_held(self, lease: Lease, ttl_s: float | None, what: str) -> None:
        ref = self._ref(lease.name)

        async def body(txn: AsyncTransaction) -> bool:
            snap = await ref.get(transaction=txn)
            now = _now()
            if not snap.exists or snap.get("token") != lease.token or snap.get("expires_at") <= now:
                return False
            if ttl_s is None:
                txn.delete(ref)
            else:
                txn.update(ref, {"expires_at": now + timedelta(seconds=ttl_s)})
            return True

        if not await self._transaction(ref, body, f"lock {what} {lease.name}"):
            raise LockNotHeld(f"lock {lease.name!r} is no longer held by {lease.owner!r}")

    async def renew(self, lease: Lease, *, ttl_s: float | None = None) -> Lease:
        ttl = check_positive(lease.ttl_s if ttl_s is None else ttl_s, "ttl_s")
        await self._if_held(lease, ttl, "renew")
        return Lease(lease.name, lease.owner, lease.token, ttl)

    async def release(self, lease: Lease) -> None:
        await self._if_held(lease, None, "release")
