"""Raw storage over GCS (the emulator): blobs round-trip per tenant; a missing bucket fails fast.

Covers: an entry without ``bucket`` is refused by the model and by the adapter (naming
``gcs.bucket``); an entry naming a bucket that does not exist never goes live (the slot is
``unavailable``, requests get 503 ``BackendUnavailable``, nothing falls back); with a real bucket
blobs are stored under the tenant's prefix and read back.
"""

from __future__ import annotations

import uuid

import pytest

from devstack.handles import GcsEmulator
from devstack.testing import app_client, record
from engines.adapters import build_backend
from engines.app import create_app
from engines.config.runtime_config import RuntimeConfig
from engines.nexus.raw_storage import router
from engines.routing import InMemoryRoutingRegistry, InvalidRouting, ResourceKind, RoutingRecord

KIND = ResourceKind.RAW_STORAGE
BUCKET = "engines-raw-storage-test"


def _app(registry: InMemoryRoutingRegistry) -> object:
    config = RuntimeConfig(env="prod", tenants=("acme", "globex"))
    return create_app(config, registry, routers=[router])


async def test_missing_bucket_raises(gcs_emulator: GcsEmulator) -> None:
    with pytest.raises(InvalidRouting, match="bucket"):
        record(KIND, "gcs", {"prefix": "raw/"}, env="prod")
    unchecked = RoutingRecord.model_construct(
        tenant="*",
        env="prod",
        project="*",
        resource_kind=KIND,
        backend="gcs",
        config={"prefix": "raw/"},
        revision="x",
        secret_ref=None,
    )
    with pytest.raises(InvalidRouting) as info:
        build_backend(unchecked, tenant="acme", allow_test_backends=False)
    assert info.value.field == "gcs.bucket"

    registry = InMemoryRoutingRegistry()
    registry.create(record(KIND, "gcs", {"bucket": f"absent-{uuid.uuid4().hex[:8]}"}, env="prod"))
    async with app_client(_app(registry), tenant="acme") as client:  # type: ignore[arg-type]
        body = (await client.get("/readyz")).json()
        assert body["status"] == "not_ready"
        assert {(u["tenant"], u["resource_kind"]) for u in body["unavailable"]} == {
            ("acme", KIND.value),
            ("globex", KIND.value),
        }
        assert all("not found" in u["message"] for u in body["unavailable"])
        resp = await client.put("/nexus/raw-storage/blobs/a", content=b"x")
        assert resp.status_code == 503 and resp.json()["error"] == "BackendUnavailable"


async def test_blobs_round_trip_per_tenant(gcs_emulator: GcsEmulator) -> None:
    client = gcs_emulator.client()
    if client.lookup_bucket(BUCKET) is None:
        client.create_bucket(BUCKET)
    prefix = f"raw-{uuid.uuid4().hex[:8]}/"
    registry = InMemoryRoutingRegistry()
    registry.create(record(KIND, "gcs", {"bucket": BUCKET, "prefix": prefix}, env="prod"))
    async with app_client(_app(registry), tenant="acme") as http:  # type: ignore[arg-type]
        assert (await http.get("/readyz")).status_code == 200
        put = await http.put("/nexus/raw-storage/blobs/req/1.json", content=b'{"a":1}')
        assert put.status_code == 200
        assert (await http.get("/nexus/raw-storage/blobs/req/1.json")).content == b'{"a":1}'
        assert (await http.get("/nexus/raw-storage/blobs")).json() == {"names": ["req/1.json"]}
        other = await http.get("/nexus/raw-storage/blobs", headers={"X-Tenant": "globex"})
        assert other.json() == {"names": []}
        assert (await http.delete("/nexus/raw-storage/blobs/req/1.json")).status_code == 204
        missing = await http.get("/nexus/raw-storage/blobs/req/1.json")
        assert missing.status_code == 404
    names = [b.name for b in client.list_blobs(BUCKET, prefix=prefix)]
    assert names == []
