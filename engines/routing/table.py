"""The in-process routing table every registry feeds, and the §3 resolution order.

``resolve`` is on the hot path of every request, so it does no I/O and no allocation beyond a
tuple: the table keeps one dict from the identity tuple to the record, plus a memo of answered
queries that is dropped whenever the table changes. Entries and memo live together in one
immutable pair, ``_state = (entries, memo)``: writers (a Firestore snapshot thread, a file
watcher) build a new entries dict under a lock and publish it with a fresh memo in one attribute
store; readers never lock. A reader loads ``_state`` once and both looks up and memoizes within
that pair only, so an answer computed from an old generation can land only in that generation's
memo (which nobody reads any more), never in the new one.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from .catalog import ResourceKind
from .contract import RoutingKey
from .errors import ConfigMissing, InvalidRouting
from .model import RoutingRecord

__all__ = ["ChangeType", "RoutingChange", "RoutingTable", "candidate_keys"]

log = logging.getLogger(__name__)
_KINDS = frozenset(k.value for k in ResourceKind)


class ChangeType(StrEnum):
    ADDED = "added"
    MODIFIED = "modified"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class RoutingChange:
    """One change of the table: ``record`` is the new value (``None`` when removed)."""

    type: ChangeType
    key: RoutingKey
    record: RoutingRecord | None


def candidate_keys(kind: str, tenant: str, env: str, project: str = "*") -> tuple[RoutingKey, ...]:
    """The §3 precedence: exact, (tenant, *), (*, project), (*, *); never another env."""
    keys = [
        RoutingKey(env, tenant, project, kind),
        RoutingKey(env, tenant, "*", kind),
        RoutingKey(env, "*", project, kind),
        RoutingKey(env, "*", "*", kind),
    ]
    seen: dict[RoutingKey, None] = {}
    for k in keys:
        seen.setdefault(k, None)
    return tuple(seen)


Listener = Callable[[RoutingChange], None]
_Entries = dict[tuple[str, str, str, str], RoutingRecord]


class RoutingTable:
    """Thread-safe map of routing entries with precedence resolution and change fan-out."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state: tuple[_Entries, _Entries] = ({}, {})
        """``(entries, memo)`` of one generation; replaced whole, never the halves separately."""
        self._listeners: list[Listener] = []

    # -- reads (lock-free) -------------------------------------------------------------------

    def resolve(self, kind: str, tenant: str, env: str, project: str = "*") -> RoutingRecord:
        """Return the winning record or raise ``ConfigMissing`` (``InvalidRouting`` if unknown)."""
        query = (kind, tenant, env, project)
        entries, memo = self._state  # one generation: never mix entries and memo of two
        hit = memo.get(query)
        if hit is not None:
            return hit
        for key in ((tenant, project), (tenant, "*"), ("*", project), ("*", "*")):
            record = entries.get((env, key[0], key[1], kind))
            if record is not None:
                memo[query] = record
                return record
        if kind not in _KINDS:
            raise InvalidRouting(
                f"unknown resource_kind {kind!r}; expected one of {', '.join(sorted(_KINDS))}",
                field="resource_kind",
            )
        requested = RoutingKey(env, tenant, project, kind)
        raise ConfigMissing(requested, candidate_keys(kind, tenant, env, project))

    @property
    def _entries(self) -> _Entries:
        return self._state[0]

    def get(self, key: RoutingKey) -> RoutingRecord | None:
        return self._entries.get((key.env, key.tenant, key.project, key.resource_kind))

    def list(self, *, env: str | None = None, tenant: str | None = None) -> list[RoutingRecord]:
        return sorted(
            (
                r
                for r in self._entries.values()
                if (env is None or r.env == env) and (tenant is None or r.tenant == tenant)
            ),
            key=lambda r: r.key,
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[RoutingRecord]:
        return iter(list(self._entries.values()))

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, record: RoutingRecord) -> RoutingChange | None:
        """Insert or replace; returns the change, or ``None`` when nothing changed."""
        k = record.key
        ident = (k.env, k.tenant, k.project, k.resource_kind)
        with self._lock:
            old = self._entries.get(ident)
            if old == record:
                return None
            entries = dict(self._entries)
            entries[ident] = record
            self._state = (entries, {})
            change = RoutingChange(
                ChangeType.ADDED if old is None else ChangeType.MODIFIED, k, record
            )
        self._emit(change)
        return change

    def remove(self, key: RoutingKey) -> RoutingChange | None:
        ident = (key.env, key.tenant, key.project, key.resource_kind)
        with self._lock:
            if ident not in self._entries:
                return None
            entries = dict(self._entries)
            del entries[ident]
            self._state = (entries, {})
            change = RoutingChange(ChangeType.REMOVED, key, None)
        self._emit(change)
        return change

    def replace_all(self, records: Iterable[RoutingRecord]) -> builtins.list[RoutingChange]:
        """Make the table equal to ``records`` (a full reload); emits one change per difference."""
        new = {(r.env, r.tenant, r.project, r.resource_kind.value): r for r in records}
        with self._lock:
            old = self._entries
            changes = [
                RoutingChange(ChangeType.REMOVED, RoutingKey(*ident), None)
                for ident in old
                if ident not in new
            ]
            for ident, rec in new.items():
                if ident not in old:
                    changes.append(RoutingChange(ChangeType.ADDED, rec.key, rec))
                elif old[ident] != rec:
                    changes.append(RoutingChange(ChangeType.MODIFIED, rec.key, rec))
            if changes:
                self._state = (new, {})
        for change in changes:
            self._emit(change)
        return changes

    # -- subscription ------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every later change; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, change: RoutingChange) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("routing change listener %r failed on %s", listener, change.key)
