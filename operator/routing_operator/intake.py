"""Back-pressure on new entries arriving by the watch: a burst of creations waits here, one
compact line per entry, instead of inside kopf.

kopf hands every watch event to a queue of its entry at once, and starts a worker for the entry
when one of its ``concurrent_entries`` slots is free. A burst of thousands of new entries thus
waits inside kopf, each with its own asyncio queue and event, a worker coroutine, and its event
as a parsed body: several kilobytes per entry, which a burst multiplies by thousands (figures in
the README's performance section). The stream cannot simply be held back: the same stream
carries the events the running workers wait for (kopf holds a worker until the watch returns the
version its own PATCH wrote).

So the stream is split by entry. Events of an entry kopf already has (listed, or given to it
before) pass at once. The first event of an entry kopf has never had passes while fewer than
``limit`` such entries wait in kopf for their first processing (counted by the operator's
``observe`` handler, which kopf calls first for every event it processes); otherwise the entry is
held here: its latest event only (an entry never handled needs only its latest state), as JSON,
in arrival order. Held entries go to kopf, oldest first, as room is made.

When kopf lists the entries again (its watch expired, or a paused replica resumes), everything
held is dropped: the list carries every current entry at a newer version. An entry given to kopf
that is not processed within ``expiry`` seconds stops counting against the limit, so a lost
count can never close the gate for good.

The listed entries at start are not held here: the list is paged and its pages are held back
instead (listing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from . import metrics

__all__ = ["Intake"]

log = logging.getLogger(__name__)


class _Room:
    """The marker that tells a stream to release held entries."""


class _End:
    """The marker of the end of the source stream."""


@dataclass(slots=True)
class _Failure:
    error: BaseException


ROOM, END = _Room(), _End()


@dataclass(eq=False, slots=True)
class _Stream:
    """One watch stream's held entries and its inbox (source events and ROOM markers)."""

    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    held: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    woken: bool = False

    def wake(self) -> None:
        if self.held and not self.woken:
            self.woken = True
            self.inbox.put_nowait(ROOM)


def _uid(event: dict[str, Any]) -> str | None:
    obj = event.get("object")
    meta = obj.get("metadata") if type(obj) is dict else None
    return meta.get("uid") if type(meta) is dict else None


class Intake:
    """Shared by the RoutingEntry watch streams of one operator."""

    def __init__(
        self,
        limit: int,
        *,
        strip: Callable[[dict[str, Any]], None] | None = None,
        expiry: float = 30.0,
    ) -> None:
        self.limit = limit
        self.strip = strip
        self.expiry = expiry
        self.given: set[str] = set()
        """Entries kopf has had an event of (and not processed as deleted)."""
        self.waiting: dict[str, float] = {}
        """Entries given to kopf as new, not processed yet: uid → when given."""
        self._streams: set[_Stream] = set()

    def has_room(self) -> bool:
        if len(self.waiting) < self.limit:
            return True
        now = time.monotonic()
        while self.waiting:
            uid, since = next(iter(self.waiting.items()))
            if now - since < self.expiry:
                break
            del self.waiting[uid]
        return len(self.waiting) < self.limit

    def reached(self, uid: str, *, gone: bool) -> None:
        """kopf processes an event of entry ``uid`` (from the ``observe`` handler)."""
        if self.waiting.pop(uid, None) is not None and self.has_room():
            for stream in self._streams:
                stream.wake()
        if gone:
            self.given.discard(uid)

    def _give(self, uid: str) -> None:
        self.given.add(uid)
        self.waiting[uid] = time.monotonic()

    def _admit(self, stream: _Stream, event: Any) -> bool:
        """Whether ``event`` goes to kopf now; if not, it is held."""
        if type(event) is not dict:  # kopf's marker: a list has just ended
            metrics.ENTRIES_HELD.dec(len(stream.held))
            stream.held.clear()  # the list carried every current entry, newer
            return True
        uid = _uid(event)
        if uid is None:
            return True
        if event.get("type") is None:  # listed
            if stream.held.pop(uid, None) is not None:
                metrics.ENTRIES_HELD.dec()
            self.given.add(uid)
            return True
        if uid in self.given:
            return True
        if not stream.held and self.has_room():
            self._give(uid)
            return True
        if not stream.held:
            log.info(
                "new entries wait here: %d given to kopf are not processed yet", len(self.waiting)
            )
        if uid not in stream.held:
            metrics.ENTRIES_HELD.inc()
        stream.held[uid] = json.dumps(event, separators=(",", ":")).encode()
        return False

    async def _read(self, source: AsyncIterator[Any], inbox: asyncio.Queue[Any]) -> None:
        try:
            async for event in source:
                if self.strip is not None and type(event) is dict:
                    obj = event.get("object")
                    if type(obj) is dict:
                        self.strip(obj)
                inbox.put_nowait(event)
        except Exception as exc:
            inbox.put_nowait(_Failure(exc))
        else:
            inbox.put_nowait(END)

    async def stream(self, source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """``source``'s events, in order per entry, with new entries held while kopf has
        ``limit`` waiting. The source is read by a task of its own, so that room made while it
        is quiet still releases held entries."""
        stream = _Stream()
        self._streams.add(stream)
        reader = asyncio.create_task(self._read(source, stream.inbox), name="watch intake")
        try:
            while True:
                item = await stream.inbox.get()
                if item is ROOM:
                    stream.woken = False
                elif item is END:
                    return
                elif type(item) is _Failure:
                    raise item.error
                elif self._admit(stream, item):
                    yield item
                while stream.held and self.has_room():
                    uid, data = stream.held.popitem(last=False)
                    metrics.ENTRIES_HELD.dec()
                    self._give(uid)
                    yield json.loads(data)
        finally:
            metrics.ENTRIES_HELD.dec(len(stream.held))
            self._streams.discard(stream)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
