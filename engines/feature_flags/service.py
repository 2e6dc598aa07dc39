"""Flag rules over a ``DocumentStore``: deny list, allow list, on/off, percentage rollout."""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat

from engines.ports import DocumentStore

__all__ = ["COLLECTION", "Evaluation", "FeatureFlags", "Flag", "bucket"]

COLLECTION = "flags"


class Flag(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool = False
    rollout_percent: Annotated[StrictFloat, Field(ge=0, le=100)] = 100.0
    """Share of subjects (by stable hash) the flag is on for, when enabled."""
    allow: list[str] = Field(default_factory=list)
    """Subjects always on (even when disabled)."""
    deny: list[str] = Field(default_factory=list)
    """Subjects always off (wins over everything)."""
    description: str = ""


class Evaluation(BaseModel):
    flag: str
    subject: str
    enabled: bool
    reason: str


def bucket(flag: str, subject: str) -> float:
    """A stable number in [0, 100) for (flag, subject)."""
    digest = hashlib.sha256(f"{flag}\x00{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100


class FeatureFlags:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    async def get(self, name: str) -> Flag | None:
        data = await self.store.get(COLLECTION, name)
        return None if data is None else Flag.model_validate(data)

    async def set(self, name: str, flag: Flag) -> Flag:
        await self.store.put(COLLECTION, name, flag.model_dump(mode="json"))
        return flag

    async def list(self, limit: int = 100) -> dict[str, Flag]:
        docs = await self.store.list(COLLECTION, limit=limit)
        return {d.id: Flag.model_validate(d.data) for d in docs}

    async def evaluate(self, name: str, subject: str) -> Evaluation:
        flag = await self.get(name)
        enabled, reason = self._decide(name, subject, flag)
        return Evaluation(flag=name, subject=subject, enabled=enabled, reason=reason)

    @staticmethod
    def _decide(name: str, subject: str, flag: Flag | None) -> tuple[bool, str]:
        if flag is None:
            return False, "unknown_flag"
        if subject in flag.deny:
            return False, "denied"
        if subject in flag.allow:
            return True, "allowed"
        if not flag.enabled:
            return False, "disabled"
        if bucket(name, subject) < flag.rollout_percent:
            return True, "rollout"
        return False, "outside_rollout"
