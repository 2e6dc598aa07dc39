"""BlobStore conformance: one suite, run against every registered BlobStore adapter.

Covers: put/get of arbitrary bytes (all byte values, empty, 2 MiB), replace, ``NotFound`` for a
missing blob, idempotent delete, prefix listing (sorted, nested names), names refused the same
way everywhere (no traversal), tenants kept apart, visibility across two instances.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from engines.ports import BlobStore, InvalidArgument, NotFound

PORT = BlobStore


async def test_round_trip_bytes(make: Any) -> None:
    blobs: BlobStore = make()
    every_byte = bytes(range(256)) * 4
    large = os.urandom(2 * 1024 * 1024)
    await blobs.put("bin/every-byte", every_byte)
    await blobs.put("bin/empty", b"")
    await blobs.put("media/video.mp4", large, content_type="video/mp4")
    assert await blobs.get("bin/every-byte") == every_byte
    assert await blobs.get("bin/empty") == b""
    assert await blobs.get("media/video.mp4") == large
    assert await make().get("bin/every-byte") == every_byte


async def test_put_replaces(make: Any) -> None:
    blobs: BlobStore = make()
    await blobs.put("a.txt", b"one", content_type="text/plain")
    await blobs.put("a.txt", b"two")
    assert await blobs.get("a.txt") == b"two"


async def test_missing_blob_is_not_found(make: Any) -> None:
    blobs: BlobStore = make()
    with pytest.raises(NotFound):
        await blobs.get("nope")
    with pytest.raises(NotFound):
        await blobs.get("no/such/dir/file")


async def test_delete_is_idempotent(make: Any) -> None:
    blobs: BlobStore = make()
    await blobs.put("x/y", b"1")
    await blobs.delete("x/y")
    await blobs.delete("x/y")
    await blobs.delete("never/there")
    with pytest.raises(NotFound):
        await blobs.get("x/y")
    assert await blobs.list() == []


async def test_list_by_prefix(make: Any) -> None:
    blobs: BlobStore = make()
    names = ["media/2024/b.jpg", "media/2024/a.jpg", "media/2025/c.jpg", "raw/r.bin", "mediaX"]
    for name in names:
        await blobs.put(name, name.encode())
    assert await blobs.list() == sorted(names)
    assert await blobs.list("media/") == [
        "media/2024/a.jpg",
        "media/2024/b.jpg",
        "media/2025/c.jpg",
    ]
    assert await blobs.list("media/2024/a") == ["media/2024/a.jpg"]
    assert await blobs.list("media") == sorted(n for n in names if n.startswith("media"))
    assert await blobs.list("zzz") == []


async def test_tenants_are_apart(make: Any) -> None:
    acme, beta = make("acme"), make("beta")
    await acme.put("same/name", b"acme")
    with pytest.raises(NotFound):
        await beta.get("same/name")
    assert await beta.list() == []
    await beta.put("same/name", b"beta")
    assert await acme.get("same/name") == b"acme"
    await beta.delete("same/name")
    assert await acme.get("same/name") == b"acme"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/abs",
        "trailing/",
        "a//b",
        "../escape",
        "a/../../b",
        "./a",
        "a/./b",
        "back\\slash",
        "nul\x00",
        "x" * 1025,
    ],
)
async def test_bad_names_are_refused(make: Any, name: str) -> None:
    blobs: BlobStore = make()
    with pytest.raises(InvalidArgument):
        await blobs.put(name, b"data")
    with pytest.raises(InvalidArgument):
        await blobs.get(name)
    with pytest.raises(InvalidArgument):
        await blobs.delete(name)


async def test_non_bytes_are_refused(make: Any) -> None:
    with pytest.raises(InvalidArgument):
        await make().put("a", "text, not bytes")  # type: ignore[arg-type]
