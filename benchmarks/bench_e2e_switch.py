"""RoutingEntry PATCH -> the engines app serving the new backend, end to end through the operator.

DESIGN §10's targets: p50 <= 1.5x the floor's p50 and p99 <= 3x the floor's p99, where the floor
is what this machine cannot avoid on that path, measured in the same run: a raw watch hop (a
PATCH -> a plain watch on the API server sees it), a raw Firestore write -> snapshot, and one read
of the new backend (a ping through a freshly built adapter). See ``_floor.py``.

Starts its own local stack (kube-apiserver + etcd + Firestore emulator) in a temporary state
dir, runs the real ``routing-operator`` as a subprocess on one namespace, and the engines app
(Firestore source, ``create_app``) in this process. Each iteration PATCHes the entry's Firestore
collection (alternating two) through the API server and waits until the app's slot serves a
backend built from the new revision (woken by the old backend's ``superseded`` event, no
polling); then it takes one sample of each floor part.

The breakdown per hop comes from what the components already expose, on one wall clock:

* watch event reaching the operator: the operator's first log line about the entry after the
  PATCH (kopf's debug line as it invokes the first handler; needs the operator's ``-v``, which
  this benchmark passes unless ``--quiet-operator``; without it this hop is merged into the
  next). With ``-v`` the operator hop is split once more at kopf's last "Handler ... is
  invoked." line before the commit: kopf's own path, then the handler up to the commit;
* Firestore write committed: the document's ``updated_at`` (the emulator's commit time);
* snapshot reaching the app: a listener subscribed to the app's registry, called on the
  listener thread right after the app's own;
* build + ping: from there to the slot's ``switched_at`` (set by the swap), split through the
  app's backend factory (``_app_hops``): the hand-off to the event loop (the listener's thread ->
  the slot's worker starting the build), the build, the ping (the floor's read, made by the
  switch) and the swap after it;
* beside the floor, not in it: a raw write of the entry's own document -> a raw query listener
  like the app's (``_entry_hop``), to set the commit -> snapshot hop against; with it in place
  of the floor's write -> snapshot, a second floor and its ratio (see ``_floor.py``);
* swap -> seen serving: from ``switched_at`` until the waiting benchmark runs.

The operator's own work between the event and the commit (status, Event and ConfigMap run beside
or after the Firestore write) is not split further without instrumenting it; the time from the
commit until kopf reports the handler done is printed beside the breakdown, as it is off the
switch's path.

``--no-drift-listen`` runs the operator without its Firestore drift listener: the emulator then
serves one query listener fewer on every commit, and the difference in the commit -> snapshot hop
is what that listener costs a switch here.

    python benchmarks/bench_e2e_switch.py [--iterations 30] [--quiet-operator] [--operator-log F]
        [--no-drift-listen]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from _app_hops import TimedFactory
from _entry_hop import EntryHop
from _floor import SnapshotHop, WatchHop, line, ratio_line, read_new_backend, sums
from kubernetes import client, config

from devstack import LocalStack, stop_group
from devstack.testing import app_client
from engines import feature_flags
from engines.app import create_app
from engines.config.runtime_config import RuntimeConfig
from engines.routing import FirestoreRoutingRegistry, ResourceKind
from engines.routing.contract import API_GROUP as GROUP
from engines.routing.contract import API_VERSION as VERSION
from engines.routing.contract import PLURAL, UPDATED_AT
from engines.routing.table import RoutingChange
from engines.runtime.slots import Slot

NS, FLOOR_NS, NAME, TENANT = "bench", "floor", "switch", "acme"
KIND = ResourceKind.FEATURE_FLAGS
TIMEOUT_S = 30.0


def entry(name: str, collection: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RoutingEntry",
        "metadata": {"name": name},
        "spec": {
            "tenant": TENANT,
            "env": "prod",
            "resourceKind": KIND.value,
            "backend": "firestore",
            "firestore": {"collection": collection},
        },
    }


class OperatorLog:
    """The operator's JSON log, read forward: when it first mentioned the entry after a moment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def lines(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._offset += end
        parsed = []
        for raw in data[:end].splitlines():
            try:
                parsed.append(json.loads(raw))
            except ValueError:
                continue  # not a log record (a library printing to stderr)
        return parsed

    def quiet(self, name: str, for_s: float = 0.1, at_most_s: float = 2.0) -> None:
        """Until the operator has logged nothing about ``name`` for ``for_s`` (the previous
        switch's status update and the watch event it causes are handled by then), so the next
        PATCH's first line is its own."""
        deadline = time.monotonic() + at_most_s
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < for_s:
            if self.mentions(name):
                last = time.monotonic()
            time.sleep(0.01)

    def mentions(self, name: str) -> list[tuple[float, str]]:
        """(wall-clock time, message) of the new lines about the entry ``name``."""
        found = []
        for rec in self.lines():
            ref = rec.get("object") or {}
            if ref.get("name") == name and "timestamp" in rec:
                found.append((datetime.fromisoformat(rec["timestamp"]).timestamp(), rec["message"]))
        return found


@dataclass
class Hops:
    """Per-iteration durations in ms, each list one sample per iteration (NaN: not observed)."""

    switch: list[float] = field(default_factory=list)
    to_operator: list[float] = field(default_factory=list)
    to_handler: list[float] = field(default_factory=list)
    """Within the operator hop: the event -> kopf invokes the handler that writes (-v only)."""
    to_commit: list[float] = field(default_factory=list)
    to_snapshot: list[float] = field(default_factory=list)
    build_ping: list[float] = field(default_factory=list)
    handoff: list[float] = field(default_factory=list)
    """Within build + ping: the registry's listener -> the slot's worker starts the build."""
    build_only: list[float] = field(default_factory=list)
    ping: list[float] = field(default_factory=list)
    after_ping: list[float] = field(default_factory=list)
    swap_seen: list[float] = field(default_factory=list)
    handler_done: list[float] = field(default_factory=list)
    watch: list[float] = field(default_factory=list)
    snapshot: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    build: list[float] = field(default_factory=list)
    entry: list[float] = field(default_factory=list)
    """Not in the floor: a raw write of the entry's own document -> a raw query listener."""
    first_line: str = ""
    """The operator's first log message about the entry after a PATCH (the event's arrival)."""


class SnapshotClock:
    """Wall-clock times at which revisions of the entry reached the app's registry."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, change: RoutingChange) -> None:
        now = time.time()
        if change.key.resource_kind != KIND.value or change.record is None:
            return
        with self._lock:
            self.arrivals.append((now, change.record.revision))

    def first(self, revision: str, since: float) -> float:
        """When ``revision`` first arrived at or after ``since`` (the two revisions alternate)."""
        with self._lock:
            return min(t for t, r in self.arrivals if r == revision and t >= since)


async def served(slot: Slot, collection: str, deadline: float) -> None:
    """Until ``slot`` serves a backend for ``collection``, woken by each swap."""
    while (held := slot.current) is None or held.record.config.get("collection") != collection:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the app did not serve collection {collection} in {TIMEOUT_S} s")
        if held is None:
            await asyncio.sleep(0.001)
        else:
            await asyncio.wait_for(held.superseded.wait(), left)


async def run(
    api: client.CustomObjectsApi,
    project: str,
    collection: str,
    oplog: OperatorLog,
    iterations: int,
    warmup: int,
    verbose: bool,
) -> Hops:
    registry = FirestoreRoutingRegistry(collection=collection, env="prod", project=project)
    clock = SnapshotClock()
    registry.subscribe(clock)
    factory = TimedFactory()
    app = create_app(
        RuntimeConfig(env="prod", tenants=(TENANT,), routing_collection=collection),
        registry,
        backend_factory=factory,
        routers=[feature_flags.router],
    )
    watch = await asyncio.to_thread(WatchHop, api, FLOOR_NS, NAME, GROUP, VERSION)
    snap = await asyncio.to_thread(SnapshotHop, project)
    entry_hop = await asyncio.to_thread(EntryHop, project)
    hops = Hops()
    nan = float("nan")
    try:
        async with app_client(app, tenant=TENANT) as http:
            deadline = time.monotonic() + TIMEOUT_S
            while (await http.get("/readyz")).status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the engines app did not become ready")
                await asyncio.sleep(0.05)
            slot = app.state.slots.slot(TENANT, KIND)
            for i in range(warmup + iterations):
                target = f"flags-{'ab'[(i + 1) % 2]}"
                oplog.quiet(NAME)
                t0 = time.time()
                await asyncio.to_thread(
                    api.patch_namespaced_custom_object,
                    GROUP, VERSION, NS, PLURAL, NAME,
                    {"spec": {"firestore": {"collection": target}}},
                )  # fmt: skip
                await served(slot, target, time.monotonic() + TIMEOUT_S)
                t_seen = time.time()
                held = slot.current
                assert held is not None and slot.switched_at is not None
                revision = held.record.revision
                doc = await asyncio.to_thread(
                    registry.collection.document(held.record.key.document_id).get
                )
                t_commit = cast(datetime, doc.get(UPDATED_AT)).timestamp()
                t_snapshot = clock.first(revision, t0)
                app_times = factory.last(revision)
                # Floor parts, one sample each, right after the switch they judge.
                watch_ms = await asyncio.to_thread(watch.sample)
                snap_ms = await asyncio.to_thread(snap.sample)
                build_ms, read_ms = await read_new_backend(held.record, TENANT)
                entry_ms = await asyncio.to_thread(entry_hop.sample, held.record)
                mentions = [(t, m) for t, m in oplog.mentions(NAME) if t >= t0]
                if i < warmup:
                    continue
                if verbose and mentions and not hops.first_line:
                    hops.first_line = mentions[0][1]
                t_op = mentions[0][0] if verbose and mentions else nan
                # kopf's last "Handler '...' is invoked." before the commit: the writing one.
                invoked = [t for t, m in mentions if m.endswith("is invoked.") and t <= t_commit]
                t_handler = max(invoked) if verbose and invoked else nan
                done = [t for t, m in mentions if "succeeded" in m or "processed" in m]
                hops.switch.append((t_seen - t0) * 1000)
                hops.to_operator.append((t_op - t0) * 1000)
                hops.to_handler.append((t_handler - t_op) * 1000)
                hops.to_commit.append((t_commit - (t0 if math.isnan(t_op) else t_op)) * 1000)
                hops.to_snapshot.append((t_snapshot - t_commit) * 1000)
                hops.build_ping.append((slot.switched_at - t_snapshot) * 1000)
                hops.handoff.append((app_times.build_start - t_snapshot) * 1000)
                hops.build_only.append((app_times.build_end - app_times.build_start) * 1000)
                hops.ping.append((app_times.ping_end - app_times.ping_start) * 1000)
                hops.after_ping.append((slot.switched_at - app_times.ping_end) * 1000)
                hops.swap_seen.append((t_seen - slot.switched_at) * 1000)
                hops.handler_done.append(((max(done) if done else nan) - t_commit) * 1000)
                hops.watch.append(watch_ms)
                hops.snapshot.append(snap_ms)
                hops.read.append(read_ms)
                hops.build.append(build_ms)
                hops.entry.append(entry_ms)
            response = await http.get("/routing")
            serving = response.json()["entries"][0]["serving"]
            assert serving["config"]["collection"] == target, serving
    finally:
        watch.close()
        snap.close()
        entry_hop.close()
        registry.close()
    return hops


def wait_ready(api: client.CustomObjectsApi, name: str, op: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        obj = cast(
            dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
        )
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return
        if op.poll() is not None:
            sys.exit(f"routing-operator exited with {op.returncode}")
        if time.monotonic() > deadline:
            sys.exit(f"entry {NS}/{name} not Ready=True within 120 s: {conditions}")
        time.sleep(0.1)


def report(hops: Hops, verbose: bool) -> None:
    floor = sums(hops.watch, hops.snapshot, hops.read)
    print(line("switch: PATCH -> app serves the new backend", hops.switch))
    print(line("floor: watch hop + write->snapshot + one read", floor))
    print(line("  raw watch hop (PATCH -> plain watch sees it)", hops.watch))
    print(line("  raw Firestore write -> snapshot", hops.snapshot))
    print(line("  one read of the new backend (ping)", hops.read))
    print(line("  (not in the floor) building that adapter", hops.build))
    print(line("  (not in the floor) raw write of the entry -> query", hops.entry))
    print(ratio_line(hops.switch, floor, p50_target=1.5, p99_target=3.0))
    entry_floor = sums(hops.watch, hops.entry, hops.read)
    print(line("floor with the entry's document -> a query", entry_floor))
    print(ratio_line(hops.switch, entry_floor, p50_target=1.5, p99_target=3.0, label="that floor"))
    print("breakdown of the switch, per hop (wall clock; p50 of each hop, not additive at p99):")
    parts = [
        ("PATCH -> watch event reaching the operator", hops.to_operator),
        ("operator: event -> Firestore write committed", hops.to_commit),
        ("Firestore commit -> snapshot reaching the app", hops.to_snapshot),
        ("app: build + ping of the new backend", hops.build_ping),
        ("swap -> seen serving", hops.swap_seen),
    ]
    if not verbose:
        parts = [
            ("PATCH -> Firestore write committed (operator not -v)", hops.to_commit),
            *parts[2:],
        ]
    total = statistics.median(hops.switch)
    for label, samples in parts:
        print(
            f"  {line(label, samples)}  ({100 * statistics.median(samples) / total:4.1f}% of p50)"
        )
    print("  within the app's build + ping:")
    print(line("    registry listener -> the slot's worker builds", hops.handoff))
    print(line("    build (client construction, no I/O)", hops.build_only))
    print(line("    ping of the new backend (floor: the read above)", hops.ping))
    print(line("    ping done -> swapped", hops.after_ping))
    split = [s for s in hops.to_handler if not math.isnan(s)]
    if split:
        print("  within the operator hop:")
        print(line("    event -> kopf invokes the handler that writes", split))
        rest = [
            c - h for c, h in zip(hops.to_commit, hops.to_handler, strict=True) if not math.isnan(h)
        ]
        print(line("    handler invoked -> Firestore write committed", rest))
    if hops.first_line:
        print(f"  (the operator's first line about the entry after a PATCH: {hops.first_line!r})")
    done = [s for s in hops.handler_done if not math.isnan(s)]
    if done:
        print(line("  off the path: commit -> kopf's handlers done", done))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=30, help="measured switches (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="switches not measured (default 3)")
    parser.add_argument(
        "--quiet-operator",
        dest="verbose",
        action="store_false",
        help="run the operator without -v: its debug logging no longer costs anything, and the "
        "moment the watch event reaches it is no longer observed",
    )
    parser.add_argument(
        "--no-drift-listen",
        dest="drift_listen",
        action="store_false",
        help="run the operator without its Firestore drift listener (what it costs a switch)",
    )
    parser.add_argument(
        "--operator-log",
        type=Path,
        default=None,
        help="copy the operator's JSON log here at the end (to read its steps in between)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # the app's per-switch info lines stay quiet

    with tempfile.TemporaryDirectory(prefix="bench-e2e-switch-") as tmp:
        stack = LocalStack(Path(tmp) / "stack")
        op: subprocess.Popen[bytes] | None = None
        try:
            stack.up(["kube-apiserver", "firestore"])
            env = {**os.environ, **stack.env(), "KUBECONFIG": str(stack.kubeconfig)}
            os.environ.update(
                FIRESTORE_EMULATOR_HOST=env["FIRESTORE_EMULATOR_HOST"],
                GOOGLE_CLOUD_PROJECT=stack.project,
            )
            config.load_kube_config(str(stack.kubeconfig))  # type: ignore[no-untyped-call]
            core, api = client.CoreV1Api(), client.CustomObjectsApi()
            for ns in (NS, FLOOR_NS):
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, entry(NAME, "flags-a"))
            api.create_namespaced_custom_object(GROUP, VERSION, FLOOR_NS, PLURAL, entry(NAME, "f"))
            collection = f"routing-{uuid.uuid4().hex[:8]}"
            log_path = Path(tmp) / "operator.log"
            with log_path.open("wb") as log:
                op = subprocess.Popen(
                    [
                        sys.executable, "-m", "routing_operator.cli",
                        "--namespace", NS, "--standalone", "--collection", collection,
                        "--metrics-port", "0", "--liveness-port", "0", "--log-format", "json",
                        *(["-v"] if args.verbose else []),
                        *([] if args.drift_listen else ["--no-drift-listen"]),
                    ],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            wait_ready(api, NAME, op)
            hops = asyncio.run(
                run(
                    api,
                    stack.project,
                    collection,
                    OperatorLog(log_path),
                    args.iterations,
                    args.warmup,
                    args.verbose,
                )
            )
        finally:
            if op is not None:
                stop_group(op.pid, what="routing-operator", grace=20)
                op.wait()
                if args.operator_log is not None:
                    shutil.copyfile(log_path, args.operator_log)
            stack.down()
    print(f"operator: {'-v (debug log)' if args.verbose else 'info log'}", end="")
    print(f"{'' if args.drift_listen else ', no drift listener'}; ", end="")
    print(f"{args.iterations} switches after {args.warmup} unmeasured")
    report(hops, args.verbose)


if __name__ == "__main__":
    main()
