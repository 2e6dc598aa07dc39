"""resolve() on a warm cache with 10,000 entries loaded (target: p50 <= 2 us).

Loads 10,000 entries (500 tenants x 20 projects, mixed with env-wide and tenant-wide defaults)
into the in-process table every registry uses, warms it, then times single resolve() calls with
perf_counter_ns over a mix of exact hits and fall-through queries. Prints p50/p99/max in us.

    python benchmarks/bench_resolve.py [--entries 10000] [--calls 200000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from engines.routing import RoutingRecord, RoutingTable, parse_spec
from engines.routing.catalog import ResourceKind

KINDS = [
    k.value for k in ResourceKind if k.value not in ("media_v2_storage", "raw_storage", "chat_bus")
]


def make(tenant: str, project: str, kind: str) -> RoutingRecord:
    backend = "redis" if kind in ("rate_limit", "realtime_registry") else "firestore"
    settings = {"url": "redis://redis:6379/0"} if backend == "redis" else {"collection": kind}
    return RoutingRecord.from_spec(
        parse_spec(
            {
                "tenant": tenant,
                "env": "prod",
                "project": project,
                "resourceKind": kind,
                "backend": backend,
                backend: settings,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()

    table = RoutingTable()
    records = [make("*", "*", k) for k in KINDS]
    i = 0
    while len(records) < args.entries:
        tenant, project = f"t{i // 20:04d}", f"p{i % 20:02d}"
        records.append(make(tenant, project, KINDS[i % len(KINDS)]))
        i += 1
    table.replace_all(records)
    assert len(table) == args.entries

    rng = random.Random(7)
    queries = [
        (rng.choice(KINDS), f"t{rng.randrange(600):04d}", "prod", f"p{rng.randrange(25):02d}")
        for _ in range(5_000)
    ]
    for q in queries:  # warm: every query answered once
        table.resolve(*q)

    resolve = table.resolve
    timer = time.perf_counter_ns
    samples = []
    for n in range(args.calls):
        q = queries[n % len(queries)]
        t0 = timer()
        resolve(*q)
        samples.append(timer() - t0)
    samples.sort()
    p50 = samples[len(samples) // 2] / 1000
    p99 = samples[int(len(samples) * 0.99)] / 1000
    print(f"resolve() warm cache, {args.entries} entries, {args.calls} calls")
    print(
        f"  p50 = {p50:.3f} us   p99 = {p99:.3f} us   max = {samples[-1] / 1000:.1f} us   "
        f"mean = {statistics.fmean(samples) / 1000:.3f} us"
    )
    print(f"  target p50 <= 2 us: {'met' if p50 <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
