"""The parts of DESIGN §10's switch floors, each measured one sample at a time, and the figures.

A switch is judged against what this machine cannot avoid in the same run: the raw hops a
switch is made of, with none of the project's code in between. The benchmarks take one sample of
each part per iteration, interleaved with the switch they judge, so that a load spike on a
shared machine lands on both sides instead of on one.

* :class:`WatchHop`: a PATCH of a RoutingEntry → a plain watch on the API server sees it;
* :class:`SnapshotHop`: a raw Firestore write → a snapshot listener in this process sees it;
* :func:`read_new_backend`: one read of the new backend (the ping a switch makes before it
  swaps), through an adapter freshly built by the app's own factory, so its first RPC pays the
  connection a switch pays.

A floor sample is the sum of one sample of each of its parts; its p50/p99 are taken over those
sums.

The switch benchmarks also print a second floor, with ``_entry_hop.EntryHop`` as its write →
snapshot part: the entry's own document written raw and seen by a raw query listener, the write
(DESIGN §5 fixes its fields) and the kind of listener (the app follows every entry of its env)
a switch cannot avoid. On the Firestore emulator that hop costs about twice the one-field
document's seen by a document listener, so the first floor is below what any switch can reach
there; both ratios are printed.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

from engines.routing.contract import PLURAL
from engines.routing.model import RoutingRecord
from engines.runtime import adapter_factory

__all__ = [
    "SnapshotHop",
    "WatchHop",
    "line",
    "pct",
    "ratio_line",
    "read_new_backend",
    "sums",
]

TIMEOUT_S = 30.0


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sums(*parts: list[float]) -> list[float]:
    """Per-iteration sums of the parts (sample i of each)."""
    return [sum(p) for p in zip(*parts, strict=True)]


def line(label: str, samples: list[float]) -> str:
    return (
        f"{label:<52} n={len(samples):<4} p50={statistics.median(samples):8.2f} ms  "
        f"p99={pct(samples, 0.99):8.2f} ms  max={max(samples):8.2f} ms"
    )


def ratio_line(
    switch: list[float],
    floor: list[float],
    *,
    p50_target: float,
    p99_target: float | None,
    label: str = "the floor",
) -> str:
    r50 = statistics.median(switch) / statistics.median(floor)
    text = f"ratio to {label}: p50 {r50:.2f}x (target <= {p50_target:g}x: "
    text += f"{'met' if r50 <= p50_target else 'NOT met'})"
    r99 = pct(switch, 0.99) / pct(floor, 0.99)
    text += f"; p99 {r99:.2f}x"
    if p99_target is not None:
        text += f" (target <= {p99_target:g}x: {'met' if r99 <= p99_target else 'NOT met'})"
    return text


class SnapshotHop:
    """Raw Firestore write → this process's snapshot listener sees it, in ms."""

    def __init__(self, project: str) -> None:
        from google.cloud import firestore

        self._client = firestore.Client(project=project)
        self._doc = self._client.collection(f"floor-{uuid.uuid4().hex[:8]}").document("d")
        self._seen: dict[int, float] = {}
        self._cond = threading.Condition()
        self._n = 0
        self._doc.set({"n": 0})
        self._watch = self._doc.on_snapshot(self._on_snapshot)
        self._wait(0)

    def _on_snapshot(self, docs: Any, changes: Any, read_time: Any) -> None:
        now = time.perf_counter()
        with self._cond:
            for doc in docs:
                self._seen.setdefault(int((doc.to_dict() or {}).get("n", -1)), now)
            self._cond.notify_all()

    def _wait(self, n: int) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: n in self._seen, timeout=TIMEOUT_S):
                raise TimeoutError(f"the raw Firestore write {n} was not seen in {TIMEOUT_S} s")
            return self._seen.pop(n)

    def sample(self) -> float:
        self._n += 1
        start = time.perf_counter()
        self._doc.set({"n": self._n})
        return (self._wait(self._n) - start) * 1000

    def close(self) -> None:
        self._watch.unsubscribe()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


class WatchHop:
    """A PATCH of a RoutingEntry → a plain watch on the API server sees it, in ms.

    The entry lives in a namespace no operator watches; the PATCH flips its Firestore
    collection, so each PATCH is a real change that passes the same admission as a switch."""

    def __init__(self, api: Any, namespace: str, name: str, group: str, version: str) -> None:
        self._api = api
        self._where = (group, version, namespace, PLURAL)
        self._name = name
        self._seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._n = 0
        listed = api.list_namespaced_custom_object(*self._where)
        self._thread = threading.Thread(
            target=self._follow,
            args=(listed["metadata"]["resourceVersion"],),
            name="floor-watch",
            daemon=True,
        )
        self._thread.start()

    def _follow(self, version: str) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                self._api.list_namespaced_custom_object, *self._where,
                resource_version=version, timeout_seconds=60,
            )  # fmt: skip
            try:
                for event in stream:
                    now = time.perf_counter()
                    version = event["object"]["metadata"]["resourceVersion"]
                    with self._cond:
                        self._seen[version] = now
                        self._cond.notify_all()
                    if self._stop.is_set():
                        return
            except Exception:  # the stream broke: watch again from the last version seen
                if self._stop.is_set():
                    return  # the stack is being stopped under us

    def sample(self) -> float:
        self._n += 1
        patch = {"spec": {"firestore": {"collection": f"floor-{self._n % 2}"}}}
        start = time.perf_counter()
        done = self._api.patch_namespaced_custom_object(*self._where, self._name, patch)
        version = done["metadata"]["resourceVersion"]
        with self._cond:
            if not self._cond.wait_for(lambda: version in self._seen, timeout=TIMEOUT_S):
                raise TimeoutError(f"the watch did not see resourceVersion {version}")
            seen = self._seen.pop(version)
            self._seen.clear()
        return (seen - start) * 1000

    def close(self) -> None:
        self._stop.set()


async def read_new_backend(record: RoutingRecord, tenant: str) -> tuple[float, float]:
    """(build ms, read ms): an adapter built for ``record`` by the app's factory, then one ping.

    The read is the floor's part; the build (client construction, no I/O) is reported beside
    it, as the switch pays it too."""
    factory = adapter_factory(allow_test_backends=False)
    start = time.perf_counter()
    port = factory(record, tenant)
    built = time.perf_counter()
    try:
        await port.ping()
        read = time.perf_counter()
    finally:
        await port.aclose()
    return (built - start) * 1000, (read - built) * 1000
