"""A writer that lands in the middle of ``RoutingTable.resolve`` never leaves a stale answer behind.

``resolve`` is lock-free: it reads the entries, finds the winner and memoizes it. If a writer
publishes a new generation between the read and the memo write, the answer computed from the old
generation must not end up in the new generation's memo (where every later ``resolve`` would
return the stale record until the next change).

The interleaving is made deterministic with a real ``str`` subclass for the tenant whose
``__hash__`` runs the writer the N-th time the query is hashed (every dict lookup in ``resolve``
hashes its key). Each hash point in ``resolve`` is tried in turn, so whatever the implementation
looks up in which order, a writer at any of those points must be visible to the next ``resolve``
(a writer at the entries lookup must not leave the old record in the new memo for good).
No mock: the table, records and writers are the real ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from devstack.testing import record as kind_record
from engines.routing import ConfigMissing, RoutingRecord, RoutingTable

Writer = Callable[[RoutingTable], None]


def record(collection: str, tenant: str = "acme") -> RoutingRecord:
    return kind_record("kpi", "firestore", {"collection": collection}, tenant=tenant, env="prod")


class InterleavingTenant(str):
    """A tenant name that runs ``writer`` (once) when it is hashed for the ``at``-th time."""

    writer: Writer | None
    table: RoutingTable
    at: int
    hashes: int

    def __hash__(self) -> int:
        self.hashes += 1
        if self.hashes == self.at and self.writer is not None:
            writer, self.writer = self.writer, None
            writer(self.table)
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


def tenant(table: RoutingTable, writer: Writer, at: int) -> InterleavingTenant:
    t = InterleavingTenant("acme")
    t.writer, t.table, t.at, t.hashes = writer, table, at, 0
    return t


def upsert_new(table: RoutingTable) -> None:
    table.upsert(record("new"))


def replace_all_new(table: RoutingTable) -> None:
    table.replace_all([record("new")])


WRITERS = {"upsert": upsert_new, "replace_all": replace_all_new}


def interleavings(setup: Callable[[], RoutingTable], writer: Writer) -> list[RoutingTable]:
    """Run one ``resolve`` per hash point of its query, with ``writer`` run at that point.

    Returns the tables (each after its interleaved resolve), one per point that ``resolve``
    actually reached; the points are enumerated until ``resolve`` hashes its query fewer times.
    """
    tables = []
    for at in range(1, 20):
        table = setup()
        hooked = tenant(table, writer, at)
        with contextlib.suppress(ConfigMissing):
            table.resolve("kpi", hooked, "prod")
        if hooked.writer is not None:  # resolve finished before reaching point ``at``
            break
        tables.append(table)
    assert len(tables) >= 2, "resolve should look its query up at least twice"
    return tables


@pytest.mark.parametrize("writer", list(WRITERS), ids=list(WRITERS))
def test_writer_between_read_and_memo_write_does_not_stick(writer: str) -> None:
    def setup() -> RoutingTable:
        table = RoutingTable()
        table.upsert(record("old"))
        return table

    for table in interleavings(setup, WRITERS[writer]):
        # The interleaved resolve itself may answer either side of the write; once the write
        # has happened, every later resolve (memo miss, then memo hit) must see it.
        assert table.resolve("kpi", "acme", "prod").config["collection"] == "new"
        assert table.resolve("kpi", "acme", "prod").config["collection"] == "new"


def test_removal_between_read_and_memo_write_does_not_stick() -> None:
    def setup() -> RoutingTable:
        table = RoutingTable()
        table.upsert(record("old"))
        table.upsert(record("default", tenant="*"))
        return table

    for table in interleavings(setup, lambda t: t.remove(record("old").key)):
        assert table.resolve("kpi", "acme", "prod").config["collection"] == "default"
        table.remove(record("default", tenant="*").key)
        with pytest.raises(ConfigMissing):
            table.resolve("kpi", "acme", "prod")


def test_memo_still_answers_repeated_queries_from_the_current_generation() -> None:
    table = RoutingTable()
    table.upsert(record("v1"))
    first = table.resolve("kpi", "acme", "prod", "shop")
    assert table.resolve("kpi", "acme", "prod", "shop") is first
    table.upsert(record("v2"))
    assert table.resolve("kpi", "acme", "prod", "shop").config["collection"] == "v2"
