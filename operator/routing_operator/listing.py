"""Back-pressure on kopf's first list of the entries.

When the operator starts, kopf lists every RoutingEntry a page at a time and hands each listed
entry to a worker queue at once: nothing waits for the workers. With 10,000 entries, all 10,000
bodies (and a queue per entry) are in memory before a few hundred are handled. Measured on the
local stack: 320 MB at the peak, and 200 MB still held after it (freed memory the allocator
cannot return), against 176 MB after the same entries were created one by one; memory grows with
the number of entries, so a large cluster would restart into its memory limit.

The gate holds the request for the next page until the entries of the pages before it have
reached their workers (counted by the operator's ``observe`` event handler, which kopf calls
first for every event it processes), so about two pages of bodies wait at any time. It never
blocks for long: after ``max_wait`` seconds the next page is fetched anyway (kopf may merge a
listed entry's event with a newer one, which is then never counted; the list's continue token
must not expire meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ListingGate"]

log = logging.getLogger(__name__)

ALL = "*"
"""The scope of a cluster-wide list."""


@dataclass(slots=True)
class _Scope:
    """One list (a namespace, or the whole cluster) in progress."""

    listed: int = 0
    """Entries in the pages requested so far (an upper bound: the last page may be short)."""
    reached: int = 0
    """Listed entries that reached their worker."""
    room: asyncio.Event = field(default_factory=asyncio.Event)


class ListingGate:
    def __init__(
        self, plural: str, page: int, *, clusterwide: bool, max_wait: float = 10.0
    ) -> None:
        self.plural = plural
        self.page = page
        self.clusterwide = clusterwide
        self.max_wait = max_wait
        self.waits = 0
        """How many page requests had to wait (for tests and logs)."""
        self._scopes: dict[str, _Scope] = {}

    def _key(self, namespace: str | None) -> str:
        return ALL if self.clusterwide or not namespace else namespace

    async def before_request(self, method: str, url: Any) -> None:
        """Called by the API session before each request (``url`` is a ``yarl.URL``)."""
        parts = url.path.rstrip("/").split("/")
        query = url.query
        if method != "GET" or parts[-1] != self.plural or "watch" in query or "limit" not in query:
            return
        namespace = parts[-2] if len(parts) >= 3 and parts[-3] == "namespaces" else None
        key = self._key(namespace)
        if "continue" not in query:  # a new list begins
            self._scopes[key] = _Scope(listed=self.page)
            return
        scope = self._scopes.setdefault(key, _Scope())
        if scope.listed - scope.reached > self.page:
            scope.room.clear()
            self.waits += 1
            try:
                await asyncio.wait_for(scope.room.wait(), self.max_wait)
            except TimeoutError:
                log.info(
                    "listing %s: %d listed entries not handled after %.0f s; fetching the "
                    "next page anyway",
                    key,
                    scope.listed - scope.reached,
                    self.max_wait,
                )
        scope.listed += self.page

    def reached(self, namespace: str | None) -> None:
        """A listed entry reached its worker."""
        scope = self._scopes.get(self._key(namespace))
        if scope is None:
            return
        scope.reached += 1
        if scope.listed - scope.reached <= self.page:
            scope.room.set()
