"""The ``RoutingRegistry`` interface shared by the Firestore, file and in-memory registries.

Every registry keeps a :class:`~engines.routing.table.RoutingTable` in process, fed by its store
(snapshot listener, directory watch, or direct writes), so ``resolve`` never does I/O. Writes go
to the store; the table follows from the store's change feed, so a subscriber sees exactly what
other processes see.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from ..contract import RoutingKey
from ..model import RoutingRecord
from ..table import RoutingChange, RoutingTable

__all__ = ["ReadOnlyRegistry", "RoutingRegistry"]


class RoutingRegistry(abc.ABC):
    """Create / get / update / delete / list routing records, resolve, and subscribe."""

    def __init__(self) -> None:
        self.table = RoutingTable()

    # -- writes (store) ----------------------------------------------------------------------

    @abc.abstractmethod
    def create(self, record: RoutingRecord) -> None:
        """Store a new record; raises ``EntryExists`` when the key is taken."""

    @abc.abstractmethod
    def update(self, record: RoutingRecord) -> None:
        """Replace an existing record; raises ``ConfigMissing`` when there is none."""

    @abc.abstractmethod
    def delete(self, key: RoutingKey) -> bool:
        """Remove a record; returns whether it existed."""

    # -- reads (cache) -----------------------------------------------------------------------

    def get(self, key: RoutingKey) -> RoutingRecord | None:
        return self.table.get(key)

    def list(self, *, env: str | None = None, tenant: str | None = None) -> list[RoutingRecord]:
        return self.table.list(env=env, tenant=tenant)

    def resolve(self, kind: str, tenant: str, env: str, project: str = "*") -> RoutingRecord:
        """The winning record (§3) from the in-process cache; raises ``ConfigMissing``."""
        return self.table.resolve(kind, tenant, env, project)

    def subscribe(self, listener: Callable[[RoutingChange], None]) -> Callable[[], None]:
        """``listener`` gets every later change (possibly on another thread)."""
        return self.table.subscribe(listener)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the current state and start following changes (idempotent)."""

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until the first full load has happened (or the registry knows it cannot load
        now); returns whether it loaded in time."""
        return True

    @property
    def healthy(self) -> bool:
        """False while the change feed is broken (the cache may be stale).

        Must not do I/O (``/readyz`` reads it on every probe); while it is False the pod is not
        ready and ``/readyz`` lists the registry under ``unavailable``."""
        return True

    def close(self) -> None:
        """Stop following changes."""

    def __enter__(self) -> RoutingRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadOnlyRegistry(RoutingRegistry):
    """A registry fed from projections it does not own (mounted ConfigMaps)."""

    def create(self, record: RoutingRecord) -> None:
        raise PermissionError(f"{type(self).__name__} is read-only: change the RoutingEntry")

    def update(self, record: RoutingRecord) -> None:
        raise PermissionError(f"{type(self).__name__} is read-only: change the RoutingEntry")

    def delete(self, key: RoutingKey) -> bool:
        raise PermissionError(f"{type(self).__name__} is read-only: change the RoutingEntry")
