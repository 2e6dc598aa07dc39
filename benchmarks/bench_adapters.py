"""Operations per second of every port adapter on this machine, printed as a table.

Each adapter is built through ``build_backend`` (the production path) against local services
only: Redis, the Firestore emulator and the GCS emulator. Services already named in the
environment (``REDIS_URL``, ``FIRESTORE_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``, e.g. after
``. .routing-dev/env.sh``) are reused; missing ones are started in a temporary ``LocalStack`` and
stopped at the end. Every loop is bounded (``--ops`` operations or ``--seconds``, whichever ends
first); "seq" runs one caller, "par" runs ``--concurrency`` callers on one adapter.

    python benchmarks/bench_adapters.py [--ops 2000] [--seconds 2] [--concurrency 16]
                                        [--only redis,memory]

Emulator figures measure the emulators, not Cloud Firestore/GCS; they are here to catch
regressions in the adapters and to compare adapters against each other on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.testing import record
from engines.adapters import build_backend
from engines.routing.catalog import Backend, ResourceKind

BUCKET = "routing-bench"
Op = Callable[[int], Awaitable[Any]]


@dataclass
class Result:
    port: str
    backend: str
    op: str
    seq_ops: float
    par_ops: float
    p50_ms: float
    p99_ms: float


@contextlib.contextmanager
def services(needed: set[str]) -> Iterator[dict[str, str]]:
    env = {
        k: os.environ[k]
        for k in ("REDIS_URL", "FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")
        if k in os.environ
    }
    wanted = {
        "redis": "REDIS_URL",
        "firestore": "FIRESTORE_EMULATOR_HOST",
        "gcs": "STORAGE_EMULATOR_HOST",
    }
    missing = [name for name, var in wanted.items() if name in needed and var not in env]
    stack = None
    tmp = None
    if missing:
        from devstack.stack import LocalStack

        tmp = tempfile.TemporaryDirectory(prefix="bench-adapters-")
        stack = LocalStack(tmp.name, project="routing-bench")
        print(f"starting {', '.join(missing)} in {tmp.name} ...", file=sys.stderr)
        stack.up(missing)
        started = stack.env()
        env.update({wanted[n]: started[wanted[n]] for n in missing})
    os.environ.update(env)
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "routing-bench")
    try:
        yield env
    finally:
        if stack is not None:
            stack.down()
        if tmp is not None:
            tmp.cleanup()


def config_for(backend: Backend, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:8]
    return {
        Backend.MEMORY: {},
        Backend.NOOP: {},
        Backend.LOCAL: {"path": str(tmp)},
        Backend.REDIS: {"url": env.get("REDIS_URL", ""), "key_prefix": f"bench-{uid}:"},
        Backend.FIRESTORE: {"collection": f"bench-{uid}"},
        Backend.GCS: {"bucket": BUCKET, "prefix": f"bench-{uid}/"},
    }[backend]


def build(kind: ResourceKind, backend: Backend, env: dict[str, str], tmp: Path) -> Any:
    rec = record(kind, backend, config_for(backend, env, tmp))
    return build_backend(rec, tenant="bench", allow_test_backends=True)


async def measure(
    op: Op, *, ops: int, seconds: float, concurrency: int
) -> tuple[float, float, float, float]:
    """(sequential ops/s, parallel ops/s, p50 ms, p99 ms of the sequential run)."""
    for i in range(min(20, ops)):  # warm-up: connections, scripts, caches
        await op(i)
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    for i in range(ops):
        t0 = time.perf_counter()
        await op(i)
        latencies.append(time.perf_counter() - t0)
        if t0 > deadline:
            break
    seq = len(latencies) / (time.perf_counter() - start)

    counter = itertools.count()
    done = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal done
        while (i := next(counter)) < ops and time.perf_counter() < deadline:
            await op(i)
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    par = done / (time.perf_counter() - start)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return seq, par, statistics.median(latencies) * 1000, p99 * 1000


def scenarios(port: Any) -> dict[str, Op]:
    """The operations benchmarked for the adapter's port."""
    from engines.ports import (
        BlobStore,
        DocumentStore,
        Feature,
        LockManager,
        MessageBus,
        PresenceRegistry,
        RateLimiter,
    )

    doc = {"title": "hello", "n": 1, "tags": ["a", "b"], "nested": {"x": 1.5}}
    if isinstance(port, DocumentStore):
        out: dict[str, Op] = {
            "put": lambda i: port.put("bench", f"d{i % 500}", doc),
            "get": lambda i: port.get("bench", f"d{i % 500}"),
            "list(20)": lambda i: port.list("bench", limit=20),
        }
        if Feature.INCREMENT in port.features:
            out["increment (1 doc)"] = lambda i: port.increment("bench", "counter", "n")
        return out
    if isinstance(port, RateLimiter):
        return {
            "hit (1 key)": lambda i: port.hit("hot", limit=10**9, window_s=60),
            "hit (1000 keys)": lambda i: port.hit(f"k{i % 1000}", limit=10**9, window_s=60),
        }
    if isinstance(port, LockManager):

        async def cycle(i: int) -> None:
            lease = await port.acquire(f"lock{i}", ttl_s=30, owner="bench")
            assert lease is not None
            await port.release(lease)

        return {"acquire+release": cycle}
    if isinstance(port, PresenceRegistry):
        return {
            "register": lambda i: port.register(f"m{i % 50}", {"i": i}, ttl_s=60),
            "list(50)": lambda i: port.list(),
        }
    if isinstance(port, BlobStore):
        blob = os.urandom(4096)
        return {
            "put 4 KiB": lambda i: port.put(f"b/{i % 200}", blob),
            "get 4 KiB": lambda i: port.get(f"b/{i % 200}"),
        }
    if isinstance(port, MessageBus):
        return {"publish": lambda i: port.publish("bench", {"i": i, "text": "hello"})}
    raise TypeError(port)


async def bus_round_trip(port: Any, n: int) -> float:
    """Messages/s from publish to delivery for one subscriber (publish n, receive n)."""
    sub = await port.subscribe("rt")
    start = time.perf_counter()

    async def receive() -> None:
        got = 0
        async for _ in sub:
            got += 1
            if got == n:
                return

    receiver = asyncio.create_task(receive())
    for i in range(n):
        await port.publish("rt", {"i": i})
    await asyncio.wait_for(receiver, 60)
    rate = n / (time.perf_counter() - start)
    await sub.aclose()
    return rate


KINDS: list[tuple[str, ResourceKind, list[Backend]]] = [
    ("DocumentStore", ResourceKind.MEMORY, [Backend.MEMORY, Backend.REDIS, Backend.FIRESTORE]),
    ("DocumentStore", ResourceKind.NEXUS_BACKEND, [Backend.NOOP]),
    ("RateLimiter", ResourceKind.RATE_LIMIT, [Backend.MEMORY, Backend.REDIS, Backend.FIRESTORE]),
    ("LockManager", ResourceKind.STRATEGY_LOCK, [Backend.MEMORY, Backend.REDIS, Backend.FIRESTORE]),
    (
        "PresenceRegistry",
        ResourceKind.REALTIME_REGISTRY,
        [Backend.MEMORY, Backend.REDIS, Backend.FIRESTORE],
    ),
    ("MessageBus", ResourceKind.CHAT_BUS, [Backend.MEMORY, Backend.REDIS]),
    ("BlobStore", ResourceKind.RAW_STORAGE, [Backend.LOCAL, Backend.GCS]),
]


async def run(args: argparse.Namespace, env: dict[str, str], tmp: Path) -> list[Result]:
    results: list[Result] = []
    for port_name, kind, backends in KINDS:
        for backend in backends:
            if args.only and backend.value not in args.only:
                continue
            port = build(kind, backend, env, tmp)
            try:
                for op_name, op in scenarios(port).items():
                    seq, par, p50, p99 = await measure(
                        op, ops=args.ops, seconds=args.seconds, concurrency=args.concurrency
                    )
                    results.append(Result(port_name, backend.value, op_name, seq, par, p50, p99))
                    print(
                        f"  {port_name:<16} {backend.value:<9} {op_name:<18} done", file=sys.stderr
                    )
                if port_name == "MessageBus":
                    rate = await bus_round_trip(port, min(args.ops, 5000))
                    results.append(
                        Result(
                            port_name,
                            backend.value,
                            "publish→receive",
                            rate,
                            float("nan"),
                            float("nan"),
                            float("nan"),
                        )
                    )
            finally:
                await port.aclose()
    return results


def table(results: list[Result], args: argparse.Namespace) -> str:
    head = (
        "port",
        "adapter",
        "operation",
        "ops/s seq",
        f"ops/s x{args.concurrency}",
        "p50 ms",
        "p99 ms",
    )
    rows = [head] + [
        (
            r.port,
            r.backend,
            r.op,
            f"{r.seq_ops:,.0f}",
            "-" if r.par_ops != r.par_ops else f"{r.par_ops:,.0f}",
            "-" if r.p50_ms != r.p50_ms else f"{r.p50_ms:.3f}",
            "-" if r.p99_ms != r.p99_ms else f"{r.p99_ms:.3f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    right = {3, 4, 5, 6}

    def fmt(row: tuple[str, ...]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([fmt(rows[0]), sep, *(fmt(r) for r in rows[1:])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="max operations per measurement")
    parser.add_argument("--seconds", type=float, default=2.0, help="max seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--only",
        type=lambda s: set(s.split(",")),
        default=set(),
        help="comma list of backends (memory,redis,firestore,gcs,local,noop)",
    )
    args = parser.parse_args(argv)
    needed = {"redis", "firestore", "gcs"} - (
        ({"redis", "firestore", "gcs"} - args.only) if args.only else set()
    )
    with services(needed) as env, tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        if "gcs" in needed:
            from google.api_core.exceptions import Conflict
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage  # type: ignore[attr-defined]

            client = storage.Client(
                project="routing-bench",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": env["STORAGE_EMULATOR_HOST"]},
            )
            with contextlib.suppress(Conflict):
                client.create_bucket(BUCKET)
        results = asyncio.run(run(args, env, Path(tmp)))
    print(
        f"\nops/s per adapter — {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
        f"≤{args.ops} ops or ≤{args.seconds:g}s per cell, local services\n"
    )
    print(table(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
