"""Who claims which identity: the operator's own map for the §3 tie-break.

Not a kopf index, on purpose. kopf fills its indexes inside the per-object workers and holds
every worker until all objects are indexed; with ``settings.queueing.worker_limit`` an operator
that starts on more entries than the limit then never handles any (the first workers wait for
the index, the rest wait for a free worker). Without a worker limit a burst of N new entries
holds N workers, N bodies and N API connections at once. This map needs neither: one paged list
fills it before kopf starts watching, and a watching handler (which kopf runs before the
changing handlers of the same event) keeps it current.

A missed deletion (entries deleted while a standby replica was paused) is caught twice: the
reconciler checks a winner it did not see itself before reporting ``Conflict``, and every drift
sweep prunes claimants its own list no longer contains.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from engines.routing.contract import API_GROUP as GROUP
from engines.routing.contract import API_VERSION as VERSION
from engines.routing.contract import PLURAL, RoutingKey

__all__ = ["Claims", "Contender", "identity_of", "iter_entries"]

PAGE = 500
"""RoutingEntries per list call."""


@dataclass(frozen=True, slots=True, order=True)
class Contender:
    """An entry claiming an identity; ordering is the §3 tie-break (oldest, then ns/name)."""

    created: str
    namespace: str
    name: str
    uid: str = field(compare=False)
    deleting: bool = field(compare=False, default=False)

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> Contender:
        """The claimant described by a RoutingEntry's metadata."""
        return cls(
            created=str(meta.get("creationTimestamp") or ""),
            namespace=sys.intern(str(meta["namespace"])),
            name=str(meta["name"]),
            uid=str(meta["uid"]),
            deleting=bool(meta.get("deletionTimestamp")),
        )


def identity_of(spec: Mapping[str, Any]) -> RoutingKey | None:
    """The identity of a (possibly invalid) spec, or None if it has none."""
    try:
        return RoutingKey(
            str(spec["env"]),
            str(spec["tenant"]),
            str(spec.get("project", "*")),
            str(spec["resourceKind"]),
        )
    except KeyError:
        return None


def winner(contenders: Iterable[Contender]) -> Contender | None:
    """The §3 winner among the claimants that are not being deleted."""
    live = [c for c in contenders if not c.deleting]
    return min(live) if live else None


def iter_entries(api: Any, namespaces: list[str] | None) -> Iterator[dict[str, Any]]:
    """Every RoutingEntry in the watched namespaces (None: all), a page at a time, so a caller
    never holds all the bodies at once."""
    for ns in namespaces if namespaces is not None else [None]:
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"limit": PAGE}
            if token:
                paging["_continue"] = token
            if ns is None:
                page = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **paging)
            else:
                page = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **paging)
            yield from page["items"]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break


class Claims:
    """document id → the entries claiming it. About 500 bytes per entry."""

    def __init__(self) -> None:
        self._claimants: dict[str, tuple[Contender, ...]] = {}
        """document id → its claimants (a tuple: nearly always exactly one)."""
        self._claimed: dict[str, str] = {}
        """uid → the document id it claims."""
        self._recent: set[str] = set()
        """uids observed since the last ``begin_list``."""

    def __len__(self) -> int:
        return len(self._claimed)

    def observe(self, meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Contender:
        """Record an entry as it is now (its identity may have changed since last time)."""
        me = Contender.of(meta)
        key = identity_of(spec)
        self.forget(me.uid)
        self._recent.add(me.uid)
        if key is not None:
            document_id = key.document_id
            self._claimants[document_id] = (*self._claimants.get(document_id, ()), me)
            self._claimed[me.uid] = document_id
        return me

    def forget(self, uid: str) -> None:
        document_id = self._claimed.pop(uid, None)
        if document_id is None:
            return
        others = tuple(c for c in self._claimants.get(document_id, ()) if c.uid != uid)
        if others:
            self._claimants[document_id] = others
        else:
            self._claimants.pop(document_id, None)

    def of(self, document_id: str) -> list[Contender]:
        return list(self._claimants.get(document_id, ()))

    def winner(self, document_id: str) -> Contender | None:
        return winner(self._claimants.get(document_id, ()))

    def load(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Observe every listed entry; returns how many."""
        count = 0
        for obj in entries:
            self.observe(obj["metadata"], obj.get("spec") or {})
            count += 1
        return count

    def begin_list(self) -> None:
        """Call right before a complete list of the entries begins (see ``prune``)."""
        self._recent = set()

    def prune(self, listed: set[str]) -> list[Contender]:
        """Forget the entries the complete list begun at the last ``begin_list`` did not
        contain, unless they were observed after it began. Returns the forgotten ones."""
        gone = [uid for uid in self._claimed if uid not in listed and uid not in self._recent]
        forgotten: list[Contender] = []
        for uid in gone:
            forgotten.extend(c for c in self._claimants[self._claimed[uid]] if c.uid == uid)
            self.forget(uid)
        return forgotten
