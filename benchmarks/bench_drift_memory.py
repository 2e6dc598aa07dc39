"""What the drift listener's Firestore listener costs in memory, holding every document or only
the digests drift judging needs.

Starts its own Firestore emulator, writes ``--entries`` documents shaped like the operator's (one
cluster's), and measures, in a process of its own for each (so one never reuses the other's
freed memory), the RSS before a listener like the operator's (the gateway's, on
``source.cluster``) and once it has handled its first load, keeping the two 16-byte digests the
operator keeps per document:

- ``documents``: Google's client holds a snapshot of every document (its fields decoded);
- ``digests``: the gateway's ``listen(keep=...)`` holds only the digests (what the operator runs).

The variants are alternated ``--rounds`` times; prints each figure, the medians and their
ratio; nothing is asserted. Also ``bench_drift.py --listener-memory``.

    python benchmarks/bench_drift_memory.py [--entries 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_operator import NS, rss_mb

from devstack import LocalStack
from engines.routing.contract import DEFAULT_COLLECTION as COLLECTION
from engines.routing.contract import RoutingKey, strip_server_fields

VARIANTS = ("documents", "digests")
CLUSTER = "bench-cluster"


def key(i: int) -> RoutingKey:
    return RoutingKey("prod", f"t{i:05d}", "*", "kpi")


@contextlib.contextmanager
def seeded_emulator(prefix: str) -> Iterator[tuple[LocalStack, dict[str, str]]]:
    """A Firestore emulator of its own, stopped at the end; this process's environment points at
    it (this process seeds it with :func:`seed`), and the environment for measuring children."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        stack = LocalStack(Path(tmp) / "stack")
        try:
            stack.up(["firestore"])
            env = {**os.environ, **stack.env()}
            os.environ.update(stack.env())
            yield stack, env
        finally:
            stack.down()


def listener_memory(entries: int, rounds: int) -> None:
    with seeded_emulator("bench-drift-mem-") as (stack, env):
        seed(stack, entries)
        grown: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for _ in range(rounds):
            for variant in VARIANTS:
                out = subprocess.run(
                    [sys.executable, __file__, "--variant", variant],
                    env=env, capture_output=True, text=True, check=True,
                ).stdout.split()  # fmt: skip
                count, before, listening = int(out[0]), float(out[1]), float(out[2])
                grown[variant].append(listening - before)
                print(
                    f"  {variant:9} listener on {count} documents: RSS {before:.0f} MB "
                    f"before, {listening:.0f} MB listening (+{listening - before:.1f} MB)"
                )
        median = {variant: statistics.median(grown[variant]) for variant in VARIANTS}
        print(
            f"listener memory at {entries} documents, median of {rounds}: holding every "
            f"document +{median['documents']:.1f} MB, holding digests only "
            f"+{median['digests']:.1f} MB (ratio "
            f"{median['documents'] / max(median['digests'], 0.1):.1f}x)"
        )


def seed(stack: LocalStack, entries: int, first: int = 0) -> None:
    """Documents ``first`` to ``entries - 1``, shaped like the operator's, of :data:`CLUSTER`."""
    from google.cloud import firestore

    fs = firestore.Client(project=stack.env()["GOOGLE_CLOUD_PROJECT"])
    col = fs.collection(COLLECTION)
    for start in range(first, entries, 500):
        batch = fs.batch()
        for i in range(start, min(entries, start + 500)):
            k = key(i)
            batch.set(col.document(k.document_id), {
                **k.as_dict(), "backend": "firestore",
                "config": {"collection": k.resource_kind, "database": "(default)"},
                "secret_ref": None, "revision": f"r{i:08x}", "generation": 1, "schema_version": 1,
                "source": {"cluster": CLUSTER, "namespace": NS,
                           "name": f"e{i:05d}", "uid": f"{i:08d}-uid-0000-0000"},
                "updated_at": time.time(),
            })  # fmt: skip
        batch.commit()


def _variant(variant: str) -> None:
    """In a process of its own: prints the documents delivered, the RSS (MB) before the
    listener and once its first load is handled."""
    import gc

    from google.cloud import firestore
    from routing_operator.drift_firestore import document_digests

    from engines.routing.collection import RoutingCollection

    gateway = RoutingCollection(firestore.Client(), name=COLLECTION)
    gateway.get(key(0))  # the client and its channel are up before the baseline
    gc.collect()
    before = rss_mb(os.getpid())
    loaded = threading.Event()
    kept: dict[str, Any] = {}

    def on_snapshot(docs: list[Any], _c: Any, _t: Any) -> None:
        if loaded.is_set():
            return
        for d in docs:
            if variant == "digests":
                kept[d.id] = d.kept
            else:
                kept[d.id] = document_digests(strip_server_fields(d.to_dict()))
        loaded.set()

    keep = document_digests if variant == "digests" else None
    listener = gateway.listen(on_snapshot, cluster=CLUSTER, keep=keep)
    loaded.wait(600)
    time.sleep(2)  # the client's thread finishes handling the first snapshot
    gc.collect()
    listening = rss_mb(os.getpid())
    listener.close()
    print(len(kept), f"{before:.2f}", f"{listening:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each variant")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        _variant(args.variant)
    else:
        listener_memory(args.entries, args.rounds)


if __name__ == "__main__":
    main()
