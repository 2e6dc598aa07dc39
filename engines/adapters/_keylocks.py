"""Per-key asyncio locks shared by the adapters of one process.

Concurrent read-modify-writes of one document from the same pod queue on a local lock instead
of racing each other through the backend (WATCH retries on Redis, aborted transactions on
Firestore, whose pessimistic locks make same-document contention costly). Atomicity across pods
still comes from the backend; this only removes the self-inflicted contention.
"""

from __future__ import annotations

import asyncio
import weakref

__all__ = ["key_lock"]

_LOCKS: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def key_lock(key: str) -> asyncio.Lock:
    """The process-wide lock for ``key`` (kept only while someone holds a reference)."""
    lock = _LOCKS.get(key)
    if lock is None:
        lock = _LOCKS[key] = asyncio.Lock()
    return lock
