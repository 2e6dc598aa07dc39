"""The services built on the shared document and blob routers: each keeps its items per tenant
under its own prefix, and says which of its items is missing.

Covers, for every document service (maybes, memory, analytics events, firearms, page content,
SEO, video timeline, nexus backends): a document round-trips, the list is ordered by id and
pages with ``next``, a deleted document is a 404 naming the service's noun, another tenant sees
nothing. For every blob service (media v2, raw storage): bytes round-trip under '/'-separated
names, the list filters by prefix, another tenant sees nothing, a deleted blob is a 404. On
the kinds' test backends (``memory`` documents, ``local`` blobs in a temporary directory), except
nexus backends, whose only test backend is ``noop``: it runs on the Firestore emulator.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devstack.testing import record, service_client
from engines import (
    agent_memory,
    analytics_events,
    firearms,
    maybes,
    media_v2,
    page_content,
    seo,
    video_timeline,
)
from engines.nexus import backends as nexus_backends
from engines.nexus import raw_storage
from engines.runtime.http import ServiceRouter

DOCUMENT_SERVICES = {
    "maybes": (maybes.router, "maybe"),
    "memory": (agent_memory.router, "memory"),
    "analytics-events": (analytics_events.router, "event"),
    "firearms": (firearms.router, "firearm record"),
    "page-content": (page_content.router, "page"),
    "seo": (seo.router, "SEO page metadata"),
    "video-timeline": (video_timeline.router, "timeline"),
    "nexus-backends": (nexus_backends.router, "backend descriptor"),
}
BLOB_SERVICES = {"media-v2": media_v2.router, "raw-storage": raw_storage.router}


@pytest.mark.parametrize("service", DOCUMENT_SERVICES)
async def test_documents_round_trip_page_and_stay_with_their_tenant(
    service: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    router, noun = DOCUMENT_SERVICES[service]
    base = router.prefix
    records = None
    if service == "nexus-backends":
        request.getfixturevalue("firestore_emulator")
        collection = f"docs-{uuid.uuid4().hex[:8]}"
        records = [record(kind, "firestore", {"collection": collection}) for kind in router.kinds]
    async with service_client(router, tmp_path, records=records) as client:
        for doc_id in ("c", "a", "b"):
            put = await client.put(f"{base}/{doc_id}", json={"id": doc_id, "n": 1})
            assert put.status_code == 200, put.text
        assert (await client.get(f"{base}/a")).json() == {"id": "a", "data": {"id": "a", "n": 1}}

        page = (await client.get(base, params={"limit": 2})).json()
        assert [i["id"] for i in page["items"]] == ["a", "b"] and page["next"] == "b"
        rest = (await client.get(base, params={"limit": 2, "start_after": "b"})).json()
        assert [i["id"] for i in rest["items"]] == ["c"] and rest["next"] is None

        assert (await client.delete(f"{base}/a")).status_code == 204
        gone = await client.get(f"{base}/a")
        assert gone.status_code == 404 and gone.json()["detail"] == f"{noun} 'a' does not exist"
        other = await client.get(base, headers={"X-Tenant": "globex"})
        assert other.json() == {"items": [], "next": None}


@pytest.mark.parametrize("service", BLOB_SERVICES)
async def test_blobs_round_trip_by_name_and_stay_with_their_tenant(
    service: str, tmp_path: Path
) -> None:
    router: ServiceRouter = BLOB_SERVICES[service]
    base = router.prefix
    async with service_client(router, tmp_path) as client:
        assert (await client.put(f"{base}/clips/1.mp4", content=b"\x00\x01")).status_code == 200
        assert (await client.put(f"{base}/thumbs/1.png", content=b"png")).status_code == 200
        assert (await client.get(f"{base}/clips/1.mp4")).content == b"\x00\x01"
        listed = await client.get(base, params={"prefix": "clips/"})
        assert listed.json() == {"names": ["clips/1.mp4"]}
        other = await client.get(base, headers={"X-Tenant": "globex"})
        assert other.json() == {"names": []}
        assert (await client.delete(f"{base}/clips/1.mp4")).status_code == 204
        assert (await client.get(f"{base}/clips/1.mp4")).status_code == 404
