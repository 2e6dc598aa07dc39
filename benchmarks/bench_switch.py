"""Registry change -> engines serving the new backend, in process (target: p50 <= 1.5x floor).

Against the Firestore emulator (reused from FIRESTORE_EMULATOR_HOST, else started in a temporary
state dir and stopped afterwards), with DESIGN §10's floor measured in the same run, one sample
of each part per iteration, interleaved with the switches:

* floor = raw Firestore write -> this process's snapshot listener sees it, plus one read of the
  new backend (a ping through an adapter freshly built by the app's factory): the two things
  any Firestore-fed switch must pay;
* switch: ``FirestoreRoutingRegistry.update`` of the ``feature_flags`` entry (alternating two
  collections) -> the engines app's slot serves a backend built from the new revision (built and
  pinged, i.e. ready for the next request). Detected when the old backend is superseded, no
  polling.

Prints p50/p99 of the switch, of the floor and of each part, and the ratio; then the switch
per hop, on the wall clock: the registry's write (``update`` returning), the change reaching the
app's registry listener (from the write's start: the floor's write -> snapshot), and the app's
own part through its backend factory (``_app_hops``): the hand-off to the event loop, the build,
the ping (the floor's read) and the swap after it. Beside the floor, not in it: the same raw
write -> snapshot with the entry's own document (its fields, not the floor's one field) seen by a
raw query listener like the registry's, which says what the document itself costs that hop;
with it in place of the floor's write -> snapshot, a second floor and its ratio (``_floor.py``).

    python benchmarks/bench_switch.py [--iterations 100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections import defaultdict

from _app_hops import TimedFactory
from _entry_hop import EntryHop
from _floor import SnapshotHop, line, pct, ratio_line, read_new_backend, sums

from devstack.testing import app_client, record
from engines import feature_flags
from engines.app import create_app
from engines.config.runtime_config import RuntimeConfig
from engines.routing import FirestoreRoutingRegistry, ResourceKind
from engines.routing.table import RoutingChange
from engines.runtime.slots import Slot

SWITCH_TIMEOUT_S = 10.0


async def served(slot: Slot, revision: str, start: float) -> float:
    """When ``slot`` serves ``revision``: woken by the old backend's ``superseded`` event."""
    while (held := slot.current) is None or held.record.revision != revision:
        left = start + SWITCH_TIMEOUT_S - time.perf_counter()
        if left <= 0:
            raise TimeoutError(f"revision {revision[:12]} not served within {SWITCH_TIMEOUT_S} s")
        if held is None:
            await asyncio.sleep(0.001)
        else:
            await asyncio.wait_for(held.superseded.wait(), left)
    return time.perf_counter()


class Arrivals:
    """Wall-clock time each revision first reached the app's registry (its first listener)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, change: RoutingChange) -> None:
        now = time.time()
        if change.record is not None:
            with self._lock:
                self.at.setdefault(change.record.revision, now)

    def clear(self) -> None:
        with self._lock:
            self.at.clear()

    def pop(self, revision: str) -> float:
        with self._lock:
            return self.at.pop(revision)


async def switch(
    project: str, iterations: int
) -> tuple[list[float], list[float], list[float], list[float], dict[str, list[float]]]:
    """(switch, write->snapshot, read, build) samples in ms, one of each per iteration, and
    the switch's hops (ms, one sample of each per iteration)."""
    collection = f"routing-{uuid.uuid4().hex[:8]}"
    registry = FirestoreRoutingRegistry(collection=collection, env="prod", project=project)
    arrivals = Arrivals()
    registry.subscribe(arrivals)  # before the app's slots: called first on each change
    kind = ResourceKind.FEATURE_FLAGS
    records = [
        record(kind, "firestore", {"collection": f"flags-{c}"}, env="prod") for c in ("a", "b")
    ]
    registry.create(records[0])
    config = RuntimeConfig(env="prod", tenants=("acme",), routing_collection=collection)
    factory = TimedFactory()
    app = create_app(config, registry, backend_factory=factory, routers=[feature_flags.router])
    hop = await asyncio.to_thread(SnapshotHop, project)
    entry_hop = await asyncio.to_thread(EntryHop, project)
    samples: list[float] = []
    snapshot: list[float] = []
    reads: list[float] = []
    builds: list[float] = []
    hops: dict[str, list[float]] = defaultdict(list)
    try:
        async with app_client(app, tenant="acme") as client:
            assert (await client.get("/readyz")).status_code == 200
            slot = app.state.slots.slot("acme", kind)
            for i in range(1, iterations + 1):
                target = records[i % 2]
                arrivals.clear()  # the first load's arrival of this revision is not this one's
                start, wall = time.perf_counter(), time.time()
                await asyncio.to_thread(registry.update, target)
                written = time.time()
                samples.append((await served(slot, target.revision, start) - start) * 1000)
                arrived, times = arrivals.pop(target.revision), factory.last(target.revision)
                assert slot.switched_at is not None
                hops["update"].append((written - wall) * 1000)
                hops["snapshot"].append((arrived - wall) * 1000)
                hops["handoff"].append((times.build_start - arrived) * 1000)
                hops["build"].append((times.build_end - times.build_start) * 1000)
                hops["ping"].append((times.ping_end - times.ping_start) * 1000)
                hops["swap"].append((slot.switched_at - times.ping_end) * 1000)
                snapshot.append(await asyncio.to_thread(hop.sample))
                hops["entry"].append(await asyncio.to_thread(entry_hop.sample, target))
                build, read = await read_new_backend(target, "acme")
                builds.append(build)
                reads.append(read)
            assert (await client.get(f"/feature-flags/x{i}/evaluate?subject=s")).status_code == 200
    finally:
        hop.close()
        entry_hop.close()
        registry.close()
    return samples, snapshot, reads, builds, hops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # the app's per-switch info lines stay quiet

    stack = None
    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        from devstack.stack import LocalStack

        stack = LocalStack(tempfile.mkdtemp(prefix="bench-switch-"))
        stack.up(["firestore"])
        env = stack.env()
        os.environ["FIRESTORE_EMULATOR_HOST"] = env["FIRESTORE_EMULATOR_HOST"]
        os.environ["GOOGLE_CLOUD_PROJECT"] = stack.project
    project = os.environ.get("GOOGLE_CLOUD_PROJECT", "routing-bench")
    try:
        app, snapshot, reads, builds, hops = asyncio.run(switch(project, args.iterations))
    finally:
        if stack is not None:
            stack.down()
    floor = sums(snapshot, reads)
    print(line("switch: registry update -> serving", app))
    print(line("floor: write -> snapshot + one read", floor))
    print(line("  raw Firestore write -> snapshot", snapshot))
    print(line("  one read of the new backend (ping)", reads))
    print(line("  (not in the floor) building that adapter", builds))
    print(line("  (not in the floor) raw write of the entry -> query", hops["entry"]))
    print(ratio_line(app, floor, p50_target=1.5, p99_target=None))
    entry_floor = sums(hops["entry"], reads)
    print(line("floor with the entry's document -> a query", entry_floor))
    print(ratio_line(app, entry_floor, p50_target=1.5, p99_target=None, label="that floor"))
    print("the switch per hop (wall clock; p50 of each, not additive at p99):")
    for label, name in (
        ("registry update: the write returns", "update"),
        ("registry update -> the change reaches the app", "snapshot"),
        ("app: registry listener -> the slot's worker builds", "handoff"),
        ("app: build (client construction, no I/O)", "build"),
        ("app: ping of the new backend", "ping"),
        ("app: ping done -> swapped", "swap"),
    ):
        print(f"  {line(label, hops[name])}")
    p50, p99 = statistics.median(app), pct(app, 0.99)
    print(f"switch p50 is {p50 - statistics.median(floor):.2f} ms above the floor's p50")
    print(
        f"absolute targets p50 <= 1000 ms: {'met' if p50 <= 1000 else 'NOT met'}; "
        f"p99 <= 2000 ms: {'met' if p99 <= 2000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
