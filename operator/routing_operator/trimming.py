"""Dropping what nobody reads from every object kopf receives, as it arrives.

Every write to an entry adds to its ``metadata.managedFields`` (the API server's record of which
client set which field): after the operator's finalizer and status writes it is the largest part
of the body. Neither kopf nor the operator reads it, yet kopf keeps every event of every entry
waiting for a worker with its whole body, and copies bodies while it patches them. So it is
removed from each listed object and watch event before kopf queues it (kopf_internals.py), and
from the API server's answers on kopf's session (list pages, the answers to its PATCHes).

Nothing is written back: the field stays as it is on the API server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

__all__ = ["UNREAD", "TrimmedResponse", "strip", "strip_answer", "stripped"]

UNREAD = ("managedFields",)
"""Fields of ``metadata`` that nobody in this process reads."""


def strip(obj: dict[str, Any]) -> None:
    """Remove the unread fields from one object, in place."""
    meta = obj.get("metadata")
    if type(meta) is dict:
        for name in UNREAD:
            meta.pop(name, None)


def strip_answer(data: Any) -> Any:
    """Remove the unread fields from an API answer: an object, or a list of them."""
    if type(data) is dict:
        strip(data)
        items = data.get("items")
        if type(items) is list:
            for item in items:
                if type(item) is dict:
                    strip(item)
    return data


class TrimmedResponse(aiohttp.ClientResponse):
    """An aiohttp response whose parsed JSON has lost the unread fields."""

    async def json(self, **kwargs: Any) -> Any:
        return strip_answer(await super().json(**kwargs))


async def stripped(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``source``'s watch events (and kopf's markers), the objects stripped."""
    async for event in source:
        if type(event) is dict:
            obj = event.get("object")
            if type(obj) is dict:
                strip(obj)
        yield event
