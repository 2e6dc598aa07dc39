"""Back-pressure on kopf's list of the entries.

When the operator starts (and whenever kopf lists again: its watch expired, or a standby replica
resumes), kopf lists every RoutingEntry a page at a time and hands each listed entry to a worker
queue at once: nothing waits for the workers. With 10,000 entries, all 10,000 bodies (and a
queue per entry) are in memory before a few hundred are handled. The peak grows with the number
of entries, and much of it stays held afterwards (freed memory the allocator cannot return), so
a large cluster would restart into its memory limit (figures in the README's performance
section).

The gate holds the request for a further page while more than one page of listed entries has
not reached its worker (counted by the operator's ``observe`` event handler, which kopf calls
first for every event it processes), so about two pages of bodies wait at any time. It holds a
page only while the workers keep taking listed entries: kopf starts watching only after the
list, so a worker waiting for the watch event of its own PATCH (an entry that needs its
finalizer, or any write) cannot go on until the list is done; when no listed entry reached a
worker for ``stall`` seconds, or after ``max_wait`` in all, the page goes. The wait counts
against kopf's request timeout (aiohttp starts that clock before this hook runs): keep
``max_wait`` well under it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import metrics

__all__ = ["ALL", "ListingGate", "scope_key"]

log = logging.getLogger(__name__)

ALL = "*"
"""The scope of a cluster-wide list."""


def scope_key(namespace: str | None, *, clusterwide: bool) -> str:
    """What kopf lists and watches as one: the namespace, or every namespace (``ALL``)."""
    return ALL if clusterwide or not namespace else namespace


@dataclass(slots=True)
class _Scope:
    """One list (a namespace, or the whole cluster) in progress."""

    listed: int = 0
    """Entries in the pages requested so far (an upper bound: the last page may be short)."""
    reached: int = 0
    """Listed entries that reached their worker."""
    token: str = ""
    """The continue token of the last page counted (kopf retries a failed request as is)."""
    room: asyncio.Event = field(default_factory=asyncio.Event)


class ListingGate:
    def __init__(
        self,
        plural: str,
        page: int,
        *,
        clusterwide: bool,
        max_wait: float = 10.0,
        stall: float = 1.0,
        on_list: Callable[[str | None], None] | None = None,
    ) -> None:
        self.plural = plural
        self.page = page
        self.clusterwide = clusterwide
        self.max_wait = max_wait
        self.stall = stall
        """Seconds without any listed entry reaching a worker after which a held page goes."""
        self.on_list = on_list
        """Called with the namespace (None: the whole cluster) when a new list begins."""
        self.waits = 0
        """How many page requests were held."""
        self._scopes: dict[str, _Scope] = {}

    async def before_request(self, method: str, url: Any) -> None:
        """Called by the API session before each request (``url`` is a ``yarl.URL``)."""
        if method != "GET":  # every request of kopf's passes here: the cheap test first
            return
        parts = url.path.rstrip("/").split("/")
        query = url.query
        if parts[-1] != self.plural or "watch" in query:
            return
        namespace = parts[-2] if len(parts) >= 3 and parts[-3] == "namespaces" else None
        key = scope_key(namespace, clusterwide=self.clusterwide)
        token = query.get("continue", "")
        if not token:  # a new list begins (paged or not)
            self._scopes[key] = _Scope(listed=self.page)
            if self.on_list is not None:
                self.on_list(namespace)
            return
        scope = self._scopes.setdefault(key, _Scope())
        if token == scope.token:  # kopf retrying the same page
            return
        if scope.listed - scope.reached > self.page:
            self.waits += 1
            metrics.LIST_PAGES_HELD.inc()
            await self._hold(key, scope)
        scope.listed += self.page
        scope.token = token

    async def _hold(self, key: str, scope: _Scope) -> None:
        """Until at most a page of listed entries waits, while the workers take them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while scope.listed - scope.reached > self.page:
            before = scope.reached
            scope.room.clear()
            try:
                await asyncio.wait_for(scope.room.wait(), self.stall)
                continue
            except TimeoutError:
                pass
            waiting = scope.listed - scope.reached
            if scope.reached == before:
                log.info(
                    "listing %s: no listed entry reached a worker for %.0f s (%d waiting); "
                    "fetching the next page",
                    key,
                    self.stall,
                    waiting,
                )
                return
            if loop.time() > deadline:
                log.info(
                    "listing %s: %d listed entries still waiting after %.0f s; fetching the "
                    "next page",
                    key,
                    waiting,
                    self.max_wait,
                )
                return

    def reached(self, namespace: str | None) -> None:
        """A listed entry reached its worker."""
        scope = self._scopes.get(scope_key(namespace, clusterwide=self.clusterwide))
        if scope is None:
            return
        scope.reached += 1
        if scope.listed - scope.reached <= self.page:
            scope.room.set()
