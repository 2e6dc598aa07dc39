"""MessageBus: publish JSON messages to a topic; every live subscriber gets them in order.

``subscribe(topic)`` returns once the subscription is live: any message published after it
returns is delivered to it. Messages published one after another (each ``publish`` awaited) to a
topic arrive at every subscriber in that order. Messages published before a subscription exists
are not replayed to it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator
from typing import Any, Self

from .base import Port, check_collection

__all__ = ["MessageBus", "Subscription", "check_topic"]


class Subscription:
    """An async iterator of messages (dicts); ``aclose()`` (or ``async with``) ends it."""

    topic: str

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class MessageBus(Port):
    @abstractmethod
    async def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Send ``message`` (a JSON object) to every current subscriber of ``topic``."""

    @abstractmethod
    async def subscribe(self, topic: str) -> Subscription:
        """Start receiving ``topic``; live when this returns."""


def check_topic(topic: str) -> str:
    """Topic names follow the collection rule: ``[A-Za-z0-9][A-Za-z0-9_.-]*``."""
    return check_collection(topic)
