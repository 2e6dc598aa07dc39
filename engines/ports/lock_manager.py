"""LockManager: named, expiring, exclusive leases.

``acquire`` never waits: it returns a :class:`Lease` or ``None`` when someone else holds a live
lease. A lease lapses after ``ttl_s`` unless renewed; once lapsed, anyone may acquire the name and
the old lease's ``renew``/``release`` raise :class:`~engines.ports.errors.LockNotHeld`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from .base import Port

__all__ = ["Lease", "LockManager"]


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    owner: str
    token: str
    """Unique per acquisition: only the holder of this token can renew or release."""
    ttl_s: float


class LockManager(Port):
    @abstractmethod
    async def acquire(self, name: str, *, ttl_s: float, owner: str) -> Lease | None:
        """Take the lock if it is free (or its lease lapsed); ``None`` if someone holds it."""

    @abstractmethod
    async def renew(self, lease: Lease, *, ttl_s: float | None = None) -> Lease:
        """Extend a held lease to ``ttl_s`` (default: its own) from now; ``LockNotHeld`` if lost."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give the lock up; ``LockNotHeld`` if the lease already lapsed or was taken over."""
