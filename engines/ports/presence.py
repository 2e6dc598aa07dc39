"""PresenceRegistry: who is live right now, each registration expiring after its TTL.

``register`` is an upsert that also renews the TTL (a heartbeat); ``list`` never returns an
expired member, whatever the backend's own clean-up schedule.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from .base import Port

__all__ = ["Member", "PresenceRegistry"]


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    info: dict[str, Any]
    expires_in: float
    """Seconds left before the registration lapses (as seen when listed)."""


class PresenceRegistry(Port):
    @abstractmethod
    async def register(self, member_id: str, info: dict[str, Any], ttl_s: float) -> None:
        """Add or refresh ``member_id`` with ``info`` for ``ttl_s`` seconds."""

    @abstractmethod
    async def unregister(self, member_id: str) -> None:
        """Remove ``member_id``; absent is fine."""

    @abstractmethod
    async def list(self) -> list[Member]:
        """Live members ordered by id; expired ones are never included."""
