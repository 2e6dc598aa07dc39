"""DocumentStore conformance: one suite, run against every registered DocumentStore adapter.

Covers: get/put/delete/list semantics (replace, idempotent delete, id order, paging), JSON value
round-trips, name and value validation (same ``InvalidArgument`` everywhere), tenant isolation,
and the optional features both ways — claimed ones work (query, atomic update, increment, also
under parallel callers), unclaimed ones raise ``NotSupported``. ``noop`` claims nothing, not even
``READ_YOUR_WRITES``, and is held to that.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engines.ports import Document, DocumentStore, Feature, InvalidArgument, NotSupported

PORT = DocumentStore

SAMPLE: dict[str, Any] = {
    "s": "héllo ✓",
    "i": 42,
    "big": 2**53 + 1,
    "f": 1.5,
    "t": True,
    "n": None,
    "l": [1, "two", {"three": 3}],
    "d": {"nested": {"deep": [False]}},
    "empty_l": [],
    "empty_d": {},
}

DOC_FEATURES = {Feature.READ_YOUR_WRITES, Feature.QUERY, Feature.TRANSACTION, Feature.INCREMENT}


def stores(store: DocumentStore) -> bool:
    return Feature.READ_YOUR_WRITES in store.features


async def test_features_are_document_features(make: Any) -> None:
    store: DocumentStore = make()
    assert store.features <= DOC_FEATURES


async def test_unclaimed_features_are_absent(make: Any) -> None:
    store: DocumentStore = make()
    calls = {
        Feature.QUERY: lambda: store.query("c", "f", 1),
        Feature.TRANSACTION: lambda: store.update("c", "x", lambda d: d),
        Feature.INCREMENT: lambda: store.increment("c", "x", "n"),
    }
    for feature, call in calls.items():
        if feature not in store.features:
            with pytest.raises(NotSupported):
                await call()


async def test_ping(make: Any) -> None:
    await make().ping()


async def test_get_missing_is_none(make: Any) -> None:
    assert await make().get("things", "nope") is None


async def test_put_then_get_round_trips_json(make: Any) -> None:
    store: DocumentStore = make()
    await store.put("things", "a", SAMPLE)
    got = await store.get("things", "a")
    if not stores(store):
        assert got is None
        return
    assert got == SAMPLE
    assert type(got["i"]) is int and type(got["f"]) is float and got["t"] is True  # type: ignore[index]


async def test_returned_data_is_a_copy(make: Any) -> None:
    store: DocumentStore = make()
    data = {"a": [1]}
    await store.put("things", "a", data)
    data["a"].append(2)
    got = await store.get("things", "a")
    if stores(store):
        assert got == {"a": [1]}
        got["a"].append(3)  # type: ignore[index]
        assert await store.get("things", "a") == {"a": [1]}


async def test_put_replaces_whole_document(make: Any) -> None:
    store: DocumentStore = make()
    await store.put("things", "a", {"x": 1, "y": 2})
    await store.put("things", "a", {"z": 3})
    assert await store.get("things", "a") == ({"z": 3} if stores(store) else None)


async def test_delete_is_idempotent(make: Any) -> None:
    store: DocumentStore = make()
    await store.put("things", "a", {"x": 1})
    await store.delete("things", "a")
    await store.delete("things", "a")
    await store.delete("things", "never-there")
    assert await store.get("things", "a") is None
    assert await store.list("things") == []


async def test_list_orders_by_id_and_pages(make: Any) -> None:
    store: DocumentStore = make()
    ids = ["b", "a", "d", "c", "e", "a:1", "Z", "0"]
    for i in ids:
        await store.put("things", i, {"id": i})
    await store.put("others", "x", {"id": "x"})
    if not stores(store):
        assert await store.list("things") == []
        return
    expected = sorted(ids)
    assert [d.id for d in await store.list("things")] == expected
    assert (await store.list("things"))[0] == Document(expected[0], {"id": expected[0]})
    pages: list[str] = []
    after = None
    while True:
        page = await store.list("things", limit=3, start_after=after)
        assert len(page) <= 3
        pages += [d.id for d in page]
        if len(page) < 3:
            break
        after = page[-1].id
    assert pages == expected
    assert [d.id for d in await store.list("things", start_after="c")] == ["d", "e"]
    assert [d.id for d in await store.list("things", start_after="zz")] == []


async def test_collections_are_apart(make: Any) -> None:
    store: DocumentStore = make()
    await store.put("one", "k", {"v": 1})
    await store.put("two", "k", {"v": 2})
    if stores(store):
        assert await store.get("one", "k") == {"v": 1}
        assert await store.get("two", "k") == {"v": 2}
        await store.delete("one", "k")
        assert await store.get("two", "k") == {"v": 2}


async def test_tenants_are_apart(make: Any) -> None:
    acme, beta = make("acme"), make("beta")
    await acme.put("things", "same-id", {"tenant": "acme"})
    assert await beta.get("things", "same-id") is None
    assert await beta.list("things") == []
    await beta.put("things", "same-id", {"tenant": "beta"})
    if stores(acme):
        assert await acme.get("things", "same-id") == {"tenant": "acme"}
        assert await make("acme").get("things", "same-id") == {"tenant": "acme"}


@pytest.mark.parametrize(
    ("collection", "id"),
    [
        ("", "a"),
        ("a/b", "a"),
        ("_private", "a"),
        ("c", ""),
        ("c", "a/b"),
        ("c", "."),
        ("c", ".."),
        ("c", "__x__"),
        ("c", "x" * 501),
    ],
)
async def test_bad_names_are_refused(make: Any, collection: str, id: str) -> None:
    store: DocumentStore = make()
    with pytest.raises(InvalidArgument):
        await store.put(collection, id, {"a": 1})
    with pytest.raises(InvalidArgument):
        await store.get(collection, id)


@pytest.mark.parametrize("data", [["not", "a", "dict"], {"x": object()}, {"x": float("nan")}])
async def test_non_json_data_is_refused(make: Any, data: Any) -> None:
    with pytest.raises(InvalidArgument):
        await make().put("things", "a", data)


async def test_bad_limits_are_refused(make: Any) -> None:
    store: DocumentStore = make()
    for limit in (0, -1, 1001, True):
        with pytest.raises(InvalidArgument):
            await store.list("things", limit=limit)


# ----------------------------------------------------------------------------- QUERY


async def test_query_equality(make: Any) -> None:
    store: DocumentStore = make()
    if Feature.QUERY not in store.features:
        with pytest.raises(NotSupported):
            await store.query("items", "color", "red")
        return
    docs = {
        "a": {"color": "red", "n": 1},
        "b": {"color": "blue", "n": 1.0},
        "c": {"color": "red", "n": True},
        "d": {"n": None},
        "e": {"color": "red", "tags": ["x"]},
        "f": {"other": 1},
    }
    for i, d in docs.items():
        await store.put("items", i, d)
    await store.put("elsewhere", "z", {"color": "red"})

    async def ids(field: str, value: Any, **kw: Any) -> list[str]:
        return [d.id for d in await store.query("items", field, value, **kw)]

    assert await ids("color", "red") == ["a", "c", "e"]
    assert await ids("color", "red", limit=2) == ["a", "c"]
    assert await ids("n", 1) == ["a", "b"]  # 1 == 1.0, but True is not a number
    assert await ids("n", True) == ["c"]
    assert await ids("n", None) == ["d"]
    assert await ids("tags", ["x"]) == ["e"]
    assert await ids("color", "green") == []
    assert (await store.query("items", "color", "blue"))[0] == Document("b", docs["b"])
    with pytest.raises(InvalidArgument):
        await store.query("items", "a.b", 1)


# ----------------------------------------------------------------------------- TRANSACTION


async def test_update_creates_modifies_and_deletes(make: Any) -> None:
    store: DocumentStore = make()
    if Feature.TRANSACTION not in store.features:
        with pytest.raises(NotSupported):
            await store.update("acc", "x", lambda d: d)
        return
    seen: list[Any] = []

    def create(cur: dict[str, Any] | None) -> dict[str, Any]:
        seen.append(cur)
        return {"v": 1}

    assert await store.update("acc", "x", create) == {"v": 1}
    assert seen[-1] is None
    assert await store.update("acc", "x", lambda d: {**(d or {}), "v": d["v"] + 1}) == {"v": 2}
    assert await store.get("acc", "x") == {"v": 2}
    assert [d.id for d in await store.list("acc")] == ["x"]
    assert await store.update("acc", "x", lambda d: None) is None
    assert await store.get("acc", "x") is None
    assert await store.list("acc") == []


async def test_update_that_raises_writes_nothing(make: Any) -> None:
    store: DocumentStore = make()
    if Feature.TRANSACTION not in store.features:
        with pytest.raises(NotSupported):
            await store.update("acc", "x", lambda d: d)
        return
    await store.put("acc", "x", {"balance": 5})

    class Insufficient(Exception):
        pass

    def spend(cur: dict[str, Any] | None) -> dict[str, Any]:
        assert cur is not None
        if cur["balance"] < 10:
            raise Insufficient
        return {"balance": cur["balance"] - 10}

    with pytest.raises(Insufficient):
        await store.update("acc", "x", spend)
    assert await store.get("acc", "x") == {"balance": 5}
    with pytest.raises(InvalidArgument):
        await store.update("acc", "x", lambda d: {"bad": object()})
    assert await store.get("acc", "x") == {"balance": 5}


async def test_update_is_atomic_under_parallel_callers(make: Any) -> None:
    store: DocumentStore = make()
    if Feature.TRANSACTION not in store.features:
        with pytest.raises(NotSupported):
            await store.update("acc", "x", lambda d: d)
        return
    pods = [make(), make()]  # two instances = two pods sharing the backend
    await store.put("acc", "budget", {"left": 20, "spent_by": []})

    def spend(who: str) -> Any:
        def fn(cur: dict[str, Any] | None) -> dict[str, Any]:
            assert cur is not None
            if cur["left"] <= 0:
                raise LookupError("exhausted")
            return {"left": cur["left"] - 1, "spent_by": [*cur["spent_by"], who]}

        return fn

    async def one(i: int) -> bool:
        try:
            await pods[i % 2].update("acc", "budget", spend(f"w{i}"))
            return True
        except LookupError:
            return False

    results = await asyncio.gather(*(one(i) for i in range(30)))
    final = await store.get("acc", "budget")
    assert final is not None
    assert sum(results) == 20
    assert final["left"] == 0
    assert sorted(final["spent_by"]) == sorted(f"w{i}" for i, ok in enumerate(results) if ok)


# ----------------------------------------------------------------------------- INCREMENT


async def test_increment(make: Any) -> None:
    store: DocumentStore = make()
    if Feature.INCREMENT not in store.features:
        with pytest.raises(NotSupported):
            await store.increment("kpi", "day", "views")
        return
    assert await store.increment("kpi", "day", "views") == 1
    assert await store.increment("kpi", "day", "views", 41) == 42
    assert await store.increment("kpi", "day", "revenue", 2.5) == 2.5
    await store.put("kpi", "other", {"label": "keep", "views": 1})
    assert await store.increment("kpi", "other", "views", -3) == -2
    assert await store.get("kpi", "day") == {"views": 42, "revenue": 2.5}
    assert await store.get("kpi", "other") == {"label": "keep", "views": -2}
    with pytest.raises(InvalidArgument):
        await store.increment("kpi", "other", "label")
    with pytest.raises(InvalidArgument):
        await store.increment("kpi", "other", "views", "1")  # type: ignore[arg-type]


async def test_increment_is_atomic_under_parallel_callers(make: Any) -> None:
    store: DocumentStore = make()
    if Feature.INCREMENT not in store.features:
        with pytest.raises(NotSupported):
            await store.increment("kpi", "day", "views")
        return
    pods = [make(), make()]
    values = await asyncio.gather(*(pods[i % 2].increment("kpi", "hot", "n") for i in range(40)))
    assert sorted(values) == list(range(1, 41))  # every caller saw its own new value
    assert await store.get("kpi", "hot") == {"n": 40}
