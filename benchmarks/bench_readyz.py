"""/readyz with 100 tenants x 17 kinds (1,700 backend slots): target p99 <= 5 ms.

Builds the full engines app in process (every service router) over an in-memory registry with
one env=test entry per kind (test-only backends, so no network is timed), then times GET /readyz
through the ASGI stack (httpx in process, one request at a time) in the ready state and in a
not-ready state where one kind is missing for every tenant. Prints p50/p99/max in ms.

    python benchmarks/bench_readyz.py [--tenants 100] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time

from devstack.testing import app_client, test_records
from engines.app import create_app
from engines.config.runtime_config import RuntimeConfig
from engines.routing import InMemoryRoutingRegistry, ResourceKind


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _time(client: object, n: int, expect: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        resp = await client.get("/readyz")  # type: ignore[attr-defined]
        samples.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == expect, resp.status_code
    return samples


def _print(label: str, samples: list[float]) -> None:
    print(
        f"{label:<34} n={len(samples)}  p50={statistics.median(samples):.3f} ms  "
        f"p99={_pct(samples, 0.99):.3f} ms  max={max(samples):.3f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    logging.getLogger("engines").setLevel(logging.CRITICAL)

    tenants = tuple(f"tenant-{i:03d}" for i in range(args.tenants))
    registry = InMemoryRoutingRegistry()
    records = test_records(tempfile.mkdtemp())
    for rec in records:
        registry.create(rec)
    config = RuntimeConfig(env="test", tenants=tenants, allow_test_backends=True)
    app = create_app(config, registry)
    logging.getLogger("engines").setLevel(logging.CRITICAL)
    async with app_client(app) as client:
        slots = app.state.slots
        print(f"slots: {len(slots)} ({len(tenants)} tenants x {len(slots.kinds)} kinds)")
        await _time(client, 200, 200)  # warm-up
        ready = await _time(client, args.requests, 200)
        _print("/readyz ready (200)", ready)
        seo = next(r for r in records if r.resource_kind is ResourceKind.SEO)
        registry.delete(seo.key)
        await slots.settle()
        missing = await _time(client, args.requests, 503)
        _print(f"/readyz not ready ({len(tenants)} missing)", missing)
        p99 = _pct(ready, 0.99)
        print(f"target p99 <= 5 ms: {'met' if p99 <= 5 else 'NOT met'} ({p99:.3f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
