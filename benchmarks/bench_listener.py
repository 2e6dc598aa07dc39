"""What a Firestore query listener costs its process per snapshot: Google's ``Watch`` as the
client library runs it, against the gateway's listener (``RoutingCollection.listen``).

Starts its own Firestore emulator, writes ``--entries`` documents shaped like the operator's (one
cluster's), then, in a process of its own for each variant (alternated ``--rounds`` times):

- ``google``: ``query.on_snapshot`` (Google's ``Watch``: it sorts every held document with a
  Python comparator on each snapshot and copies its document dict for each changed document);
- ``gateway``: ``RoutingCollection.listen`` on the same query (what the registry and the
  operator's drift listener run).

Each starts the listener, waits for its first snapshot (every document), then makes
``--changes`` single-document writes one after another, each waiting for its delivery. Prints
the CPU seconds of the listener's thread (the one that runs the callbacks) for the first
load and per change, of which the ``Watch``'s ``push`` (building each snapshot), and the
write-to-callback latency p50/p99, with the ratios; nothing is asserted.

The emulator sends a listener every document of its query again on each write (Firestore
sends the changed one): the thread's CPU per change here includes decoding all of them, which
a production listener does not pay; ``push`` is what the listener itself costs per snapshot.

    python benchmarks/bench_listener.py [--entries 1000 10000] [--changes 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _floor import pct
from bench_drift_memory import CLUSTER, key, seed, seeded_emulator

from devstack.testing import wait_for
from engines.routing.contract import DEFAULT_COLLECTION as COLLECTION

VARIANTS = ("google", "gateway")


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _variant(variant: str, entries: int, changes: int) -> None:
    """In a process of its own: prints the first load's CPU seconds, the CPU seconds per
    change, and each change's write-to-callback latency (ms)."""
    from google.cloud import firestore
    from google.cloud.firestore_v1.watch import Watch

    from engines.routing._watch import UnorderedWatch
    from engines.routing.collection import RoutingCollection

    # CPU seconds spent building snapshots (the Watch's push, callbacks included), pushes done.
    pushing = [0.0, 0]
    for cls in (Watch, UnorderedWatch):
        setattr(cls, "push", _timed(cls.push, pushing))  # noqa: B010 (mypy: assigns a method)

    gateway = RoutingCollection(firestore.Client(), name=COLLECTION)
    gateway.get(key(0))  # the client and its channel are up before measuring
    lock = threading.Lock()
    state: dict[str, Any] = {"thread": None, "loaded": threading.Event(), "want": None}
    arrived = threading.Event()

    def on_snapshot(docs: list[Any], changed: list[Any], _t: Any) -> None:
        with lock:
            state["thread"] = threading.get_native_id()
            state["pushes_before"] = pushing[1]  # this push ends after the callback returns
            if not state["loaded"].is_set():
                if len(docs) >= entries:
                    state["cpu_loaded"] = thread_cpu_s(state["thread"])
                    state["loaded"].set()
                return
            want = state["want"]
            for change in changed:
                doc = change.document
                if want and doc.id == want[0] and (doc.to_dict() or {}).get("revision") == want[1]:
                    state["arrived_at"] = time.perf_counter()
                    arrived.set()

    query: Any = gateway._query(None, CLUSTER)
    listener: Any = (
        query.on_snapshot(on_snapshot)
        if variant == "google"
        else gateway.listen(on_snapshot, cluster=CLUSTER)
    )
    if not state["loaded"].wait(1800):
        raise SystemExit(f"{variant}: the first snapshot never held {entries} documents")
    col = gateway.client.collection(COLLECTION)
    latencies: list[float] = []
    _pushed(state, pushing)
    cpu_start, push_start = thread_cpu_s(state["thread"]), pushing[0]
    for n in range(changes):
        k = key(n % entries)
        revision = f"bench-{variant}-{n}-{time.time_ns()}"
        with lock:
            state["want"] = (k.document_id, revision)
            arrived.clear()
        sent = time.perf_counter()
        col.document(k.document_id).update({"revision": revision})
        if not arrived.wait(600):
            raise SystemExit(f"{variant}: change {n} was never delivered")
        latencies.append((state["arrived_at"] - sent) * 1000)
    _pushed(state, pushing)
    cpu_changes = thread_cpu_s(state["thread"]) - cpu_start
    push_changes = pushing[0] - push_start
    listener.close() if variant == "gateway" else listener.unsubscribe()
    print(
        f"{state['cpu_loaded']:.3f}", f"{cpu_changes / changes:.5f}",
        f"{push_start:.4f}", f"{push_changes / changes:.6f}", *latencies,
    )  # fmt: skip


def _timed(push: Any, total: list[float]) -> Any:
    def timed(self: Any, *args: Any) -> None:
        start = time.thread_time()
        try:
            push(self, *args)
        finally:
            total[0] += time.thread_time() - start
            total[1] += 1

    return timed


def _pushed(state: dict[str, Any], pushing: list[Any]) -> None:
    """Wait for the push that delivered the last callback to end (its time counted)."""
    wait_for(lambda: pushing[1] > state["pushes_before"], what="the push's end")


def measure(entries: list[int], changes: int, rounds: int) -> None:
    with seeded_emulator("bench-listener-") as (stack, env):
        seeded = 0
        for count in sorted(entries):
            seed(stack, count, first=seeded)  # the documents of the smaller counts are there
            seeded = count
            _measure_one(env, count, changes, rounds)


def _measure_one(env: dict[str, str], entries: int, changes: int, rounds: int) -> None:
    load: dict[str, list[float]] = {v: [] for v in VARIANTS}
    per_change: dict[str, list[float]] = {v: [] for v in VARIANTS}
    latency: dict[str, list[float]] = {v: [] for v in VARIANTS}
    push_load: dict[str, list[float]] = {v: [] for v in VARIANTS}
    push_change: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant,
                 "--entries", str(entries), "--changes", str(changes)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
            load[variant].append(float(out[0]))
            per_change[variant].append(float(out[1]))
            push_load[variant].append(float(out[2]))
            push_change[variant].append(float(out[3]))
            latency[variant].extend(float(x) for x in out[4:])
            print(
                f"  {variant:8} {entries} documents: first load {float(out[0]):.2f} s CPU "
                f"(push {float(out[2]):.3f} s), {float(out[1]) * 1000:.1f} ms CPU per change "
                f"(push {float(out[3]) * 1000:.2f} ms)  (load {os.getloadavg()[0]:.2f})"
            )
    med = {
        v: [statistics.median(m[v]) for m in (load, per_change, push_load, push_change)]
        for v in VARIANTS
    }
    for v in VARIANTS:
        print(
            f"{v:8} {entries} documents, median of {rounds}: first load {med[v][0]:.2f} s CPU "
            f"(push {med[v][2]:.3f} s), {med[v][1] * 1000:.1f} ms CPU per change (push "
            f"{med[v][3] * 1000:.2f} ms), write->callback p50 {pct(latency[v], 0.5):.1f} ms "
            f"p99 {pct(latency[v], 0.99):.1f} ms"
        )
    g, w = med["google"], med["gateway"]
    print(
        f"ratio google/gateway at {entries}: first load {g[0] / max(w[0], 0.01):.1f}x "
        f"(push {g[2] / max(w[2], 1e-4):.0f}x), CPU per change {g[1] / max(w[1], 1e-4):.1f}x "
        f"(push {g[3] / max(w[3], 1e-5):.0f}x), latency p50 "
        f"{pct(latency['google'], 0.5) / max(pct(latency['gateway'], 0.5), 0.01):.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        _variant(args.variant, args.entries[0], args.changes)
    else:
        measure(args.entries, args.changes, args.rounds)


if __name__ == "__main__":
    main()
