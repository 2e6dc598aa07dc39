"""An in-memory registry for unit tests: the store *is* the table."""

from __future__ import annotations

from ..contract import RoutingKey
from ..errors import ConfigMissing, EntryExists
from ..model import RoutingRecord
from ..table import candidate_keys
from .base import RoutingRegistry

__all__ = ["InMemoryRoutingRegistry"]


class InMemoryRoutingRegistry(RoutingRegistry):
    """Writes apply to the table at once and fan out to subscribers synchronously."""

    def create(self, record: RoutingRecord) -> None:
        if self.table.get(record.key) is not None:
            raise EntryExists(record.key)
        self.table.upsert(record)

    def update(self, record: RoutingRecord) -> None:
        if self.table.get(record.key) is None:
            k = record.key
            raise ConfigMissing(k, candidate_keys(k.resource_kind, k.tenant, k.env, k.project)[:1])
        self.table.upsert(record)

    def delete(self, key: RoutingKey) -> bool:
        return self.table.remove(key) is not None
