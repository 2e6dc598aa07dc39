"""Drift repaired by listening: how fast, and what it costs in Firestore document reads.

Starts its own local stack (kube-apiserver + etcd, Firestore emulator), runs the real
``routing-operator`` as a subprocess on ``--entries`` synced entries (default 10,000) with the
full sweep far away (``--drift-period``, default the operator's own), and then:

1. Idle reads. Firestore bills a listener one read per document of its first result set, then
   one per added or changed document; the operator counts exactly those deliveries in
   ``routing_operator_drift_listener_documents_total``. The benchmark reads that counter after
   the listener's first load, then again after ``--idle`` seconds with nothing changing, and
   prints the model per hour: listener (idle changes, measured) + sweeps (each reads the whole
   collection, ``3600 / period`` of them an hour), against the former 60 s sweep.
2. Repair latency, ``--repairs`` times each: an out-of-band edit of a Firestore document
   (``backend`` changed) and of a ConfigMap key (value replaced), each timed from the edit until
   a watcher in this process sees the projection restored. The floor is measured in the same
   iteration: the same watcher seeing the out-of-band edit itself (raw write → snapshot for
   Firestore, raw PATCH → watch event for the ConfigMap). The repair needs at least two such
   hops (edit seen by the operator, its rewrite seen here) plus, for a ConfigMap, the
   operator's settle delay (0.2 s: its own writes land in both projections meanwhile; a
   Firestore document edited under the same making is judged at once), the read of the entry,
   the confirming read, the requeue PATCH, kopf's watch event and the reconcile. The Firestore
   repair is broken down: edit → the requeue PATCH seen by a watch on the entry here, requeue →
   repaired, and the operator's own timing of each step (from its requeue log line).

``--listener-memory`` measures only what a listener like the operator's costs in RSS
(``bench_drift_memory.py``).

Prints the figures and the ratios; nothing is asserted. Times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_drift_memory import listener_memory
from bench_operator import KINDS, NS, body, rss_mb
from kubernetes import client, config, watch
from routing_operator.handover import REQUEUE_ANNOTATION as REQUEUE

from devstack import LocalStack, free_port, stop_group
from devstack.testing import metric_sum, wait_for
from engines.routing.contract import API_GROUP as GROUP
from engines.routing.contract import API_VERSION as VERSION
from engines.routing.contract import DEFAULT_COLLECTION as COLLECTION
from engines.routing.contract import PLURAL

DELIVERED = "routing_operator_drift_listener_documents_total"
FORMER_PERIOD_S = 60.0
STEPS = re.compile(
    r"drift: the firestore projection .*? requeued (?P<total>[\d.]+) ms after the change reached "
    r"the listener \(settle (?P<settle>[\d.]+) ms, judging (?P<judging>[\d.]+) ms of which "
    r"confirming read (?P<confirm>[\d.]+) ms, requeue (?P<requeue>[\d.]+) ms\)"
)


def identity(i: int) -> tuple[str, str, str]:
    """(document id, ConfigMap name, key) of entry ``i``."""
    kind, tenant = KINDS[i % len(KINDS)], f"t{i // len(KINDS):05d}"
    return f"prod:{tenant}:*:{kind}", f"routing.prod.{tenant}", f"{tenant}._.{kind}.json"


def metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return metric_sum(resp.read().decode(), name)
    except OSError:
        return 0.0


def ready_count(api: client.CustomObjectsApi) -> int:
    """Entries reporting Ready=True (one paged list)."""
    count, token = 0, None
    while True:
        page: dict[str, Any] = api.list_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, NS, PLURAL, limit=500, **({"_continue": token} if token else {})
        )
        for obj in page["items"]:
            conditions = (obj.get("status") or {}).get("conditions") or []
            count += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        token = page["metadata"].get("continue")
        if not token:
            return count


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(label: str, samples: list[float]) -> str:
    return (
        f"  {label:<44} n={len(samples):<3} p50={statistics.median(samples):8.1f} ms  "
        f"p99={pct(samples, 0.99):8.1f} ms  max={max(samples):8.1f} ms"
    )


def firestore_repairs(
    fs: Any, api: client.CustomObjectsApi, n: int, entries: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """(edit seen, requeue seen, requeue → repaired, edit repaired) in ms, for ``n`` out-of-band
    edits of distinct documents. The requeue is the operator's PATCH of the entry's requeue
    annotation, seen by a watch on the entry here: it splits the repair into the operator's
    noticing and judging, and kopf's reconcile with its write."""
    seen: list[float] = []
    requeued: list[float] = []
    after: list[float] = []
    repaired: list[float] = []
    for r in range(n):
        i = (r * 7919) % entries
        doc_id = identity(i)[0]
        ref = fs.collection(COLLECTION).document(doc_id)
        events: queue.Queue[tuple[float, str]] = queue.Queue()

        def on_snapshot(docs: list[Any], _c: Any, _t: Any, events: Any = events) -> None:
            now = time.perf_counter()
            for d in docs:
                events.put((now, (d.to_dict() or {}).get("backend", "")))

        listener = ref.on_snapshot(on_snapshot)
        obj: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, NS, PLURAL, f"e{i:05d}"
        )
        marks: queue.Queue[float] = queue.Queue()
        w = watch.Watch()  # type: ignore[no-untyped-call]
        thread = threading.Thread(
            target=_follow_requeue,
            args=(w, api, obj, marks),
            daemon=True,
        )
        thread.start()
        try:
            assert events.get(timeout=30)[1] == "firestore"  # the listener's first view
            time.sleep(0.2)  # the entry's watch request is open before the edit
            t0 = time.perf_counter()
            ref.update({"backend": "memory"})
            t_seen = t_back = None
            while t_back is None:
                when, backend = events.get(timeout=60)
                if backend == "memory" and t_seen is None:
                    t_seen = when
                elif backend == "firestore" and t_seen is not None:
                    t_back = when
            assert t_seen is not None
            seen.append((t_seen - t0) * 1000)
            repaired.append((t_back - t0) * 1000)
            try:
                mark = marks.get(timeout=5)
                requeued.append((mark - t0) * 1000)
                after.append((t_back - mark) * 1000)
            except queue.Empty:
                pass
        finally:
            listener.unsubscribe()
            w.stop()  # type: ignore[no-untyped-call]
    return seen, requeued, after, repaired


def _follow_requeue(
    w: Any, api: client.CustomObjectsApi, obj: dict[str, Any], marks: queue.Queue[float]
) -> None:
    """Put the time of each new requeue mark of the entry ``obj`` (watched from its version)."""
    meta = obj["metadata"]
    name, version = meta["name"], meta["resourceVersion"]
    last = (meta.get("annotations") or {}).get(REQUEUE)
    try:
        for event in w.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
            field_selector=f"metadata.name={name}", resource_version=version, timeout_seconds=120,
        ):  # fmt: skip
            mark = (event["object"]["metadata"].get("annotations") or {}).get(REQUEUE)
            if mark is not None and mark != last:
                marks.put(time.perf_counter())
                last = mark
    except Exception:  # the requeue split is then missing from the breakdown
        pass


def operator_steps(log: str) -> dict[str, list[float]]:
    """The operator's own timing of each Firestore repair it requeued (its log line)."""
    steps: dict[str, list[float]] = {}
    for m in STEPS.finditer(log):
        for name in ("total", "settle", "judging", "confirm", "requeue"):
            steps.setdefault(name, []).append(float(m[name]))
    return steps


def configmap_repairs(
    core: client.CoreV1Api, n: int, entries: int
) -> tuple[list[float], list[float]]:
    """(edit seen, edit repaired) in ms, for ``n`` out-of-band edits of distinct keys."""
    seen: list[float] = []
    repaired: list[float] = []
    for r in range(n):
        _, name, key = identity((r * 7919 + 1) % entries)
        cm = core.read_namespaced_config_map(name, NS)
        good = (cm.data or {})[key]
        events: queue.Queue[tuple[float, str | None]] = queue.Queue()
        w = watch.Watch()  # type: ignore[no-untyped-call]

        version = str(cm.metadata.resource_version)  # type: ignore[union-attr]

        def follow(
            w: Any = w,
            events: Any = events,
            name: str = name,
            key: str = key,
            version: str = version,
        ) -> None:
            try:
                for event in w.stream(
                    core.list_namespaced_config_map, NS, field_selector=f"metadata.name={name}",
                    resource_version=version, timeout_seconds=120,
                ):  # fmt: skip
                    events.put((time.perf_counter(), (event["object"].data or {}).get(key)))
            except Exception as exc:  # reported by the waiting side
                events.put((time.perf_counter(), f"<watch failed: {exc!r}>"))

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        time.sleep(0.2)  # the watch request is open before the edit
        t0 = time.perf_counter()
        core.patch_namespaced_config_map(name, NS, {"data": {key: "{}"}})
        t_seen = t_back = None
        while t_back is None:
            try:
                when, value = events.get(timeout=60)
            except queue.Empty:
                current = (core.read_namespaced_config_map(name, NS).data or {}).get(key)
                raise SystemExit(
                    f"{name} {key}: no watch event for 60 s (edit seen: {t_seen is not None}; "
                    f"the value now: {current!r}, repaired: {current == good})"
                ) from None
            if value is not None and value.startswith("<watch failed"):
                raise SystemExit(f"{name} {key}: {value}")
            if value == "{}" and t_seen is None:
                t_seen = when
            elif value == good and t_seen is not None:
                t_back = when
        w.stop()  # type: ignore[no-untyped-call]
        assert t_seen is not None
        seen.append((t_seen - t0) * 1000)
        repaired.append((t_back - t0) * 1000)
    return seen, repaired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument(
        "--model-entries",
        type=int,
        default=10_000,
        help="also print the reads per hour scaled to this many idle entries",
    )
    parser.add_argument("--repairs", type=int, default=20, help="out-of-band edits of each kind")
    parser.add_argument("--idle", type=float, default=120.0, help="idle window, seconds")
    parser.add_argument(
        "--drift-period",
        type=float,
        default=None,
        help="the operator's sweep period (default: the operator's own default)",
    )
    parser.add_argument(
        "--listener-memory",
        action="store_true",
        help="only measure what a Firestore listener on --entries documents costs in memory, "
        "holding every document and holding digests only (RSS of a process of its own before "
        "and after the listener's first load; Firestore emulator only)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="--listener-memory: measurements of each variant"
    )
    args = parser.parse_args()
    if args.listener_memory:
        listener_memory(args.entries, args.rounds)
        return
    period_args = [] if args.drift_period is None else [f"--drift-period={args.drift_period}"]
    from routing_operator.cli import parse_args

    period = parse_args(["-A", *period_args]).drift_period

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        stack = LocalStack(Path(tmp) / "stack")
        op: subprocess.Popen[bytes] | None = None
        log_path = Path(tmp) / "operator.log"
        try:
            stack.up(["kube-apiserver", "firestore"])
            env = {**os.environ, **stack.env(), "KUBECONFIG": str(stack.kubeconfig)}
            os.environ.update(stack.env())
            config.load_kube_config(str(stack.kubeconfig))  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
            api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 16
            core, api = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
            port = free_port()

            def start() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    [
                        sys.executable, "-m", "routing_operator.cli", "--namespace", NS,
                        "--standalone", "--collection", COLLECTION, "--metrics-port", str(port),
                        "--liveness-port", "0", *period_args,
                    ],
                    env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip

            op = start()
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(
                    pool.map(
                        lambda i: api.create_namespaced_custom_object(
                            GROUP, VERSION, NS, PLURAL, body(i)
                        ),
                        range(args.entries),
                    )
                )
            wait_for(
                lambda: ready_count(api) >= args.entries,
                timeout=max(600.0, args.entries / 10),
                what=f"{args.entries} entries Ready",
                interval=10,
            )
            print(f"{args.entries} entries Ready after {time.monotonic() - t0:.0f} s")
            requeued = log_path.read_text(errors="replace").count("drift: the ")
            print(f"entries the listeners requeued during that burst (should be 0): {requeued}")
            # A new operator process on the synced entries: its listener's first load is all it
            # reads (the restart writes nothing); settled once the count stops growing.
            stop_group(op.pid, what="routing-operator", grace=20)
            op.wait()
            op = start()
            wait_for(
                lambda: metric(port, DELIVERED) >= args.entries,
                timeout=600,
                interval=0.5,
                what="the listener's load",
            )
            last = -1.0
            while (now := metric(port, DELIVERED)) != last:
                last = now
                time.sleep(5)
            loaded = now
            print(
                f"listener: its first load delivered {loaded:.0f} documents (billed reads; "
                f"{args.entries} entries)"
            )

            time.sleep(args.idle)
            idle = metric(port, DELIVERED) - loaded
            listener_hour = idle * 3600 / args.idle
            sweeps_hour = 3600 / period
            sweep_reads = args.entries * sweeps_hour
            print(
                f"\nFirestore document reads per hour, {args.entries} idle entries "
                f"(sweep period {period:.0f} s):"
            )
            print(
                f"  listener, idle: {idle:.0f} delivered in {args.idle:.0f} s → "
                f"{listener_hour:,.0f}/h (measured)"
            )
            print(
                f"  sweeps: {sweeps_hour:g}/h x {args.entries} documents = {sweep_reads:,.0f}/h "
                "(each sweep reads the whole collection; model)"
            )
            print(
                f"  total: {listener_hour + sweep_reads:,.0f}/h; plus {args.entries} once per "
                "operator start or listener re-establishment (its first load)"
            )
            former = args.entries * 3600 / FORMER_PERIOD_S
            print(
                f"  former 60 s sweep: {former:,.0f}/h → "
                f"{former / max(1.0, listener_hour + sweep_reads):.0f}x fewer reads now"
            )
            m = args.model_entries
            if m != args.entries:
                scale = m / args.entries
                print(
                    f"  scaled to {m} idle entries (every term is per document): listener "
                    f"{listener_hour * scale:,.0f}/h + sweeps {m * sweeps_hour:,.0f}/h = "
                    f"{(listener_hour + sweep_reads) * scale:,.0f}/h; first load "
                    f"{loaded * scale:,.0f}; former 60 s sweep {m * 3600 / FORMER_PERIOD_S:,.0f}/h"
                )
            print(f"  operator RSS: {rss_mb(op.pid):.0f} MB with the listener on {args.entries}")

            fs_client = _firestore_client(stack)
            before = metric(port, DELIVERED)
            logged = len(log_path.read_text(errors="replace"))
            fs = firestore_repairs(fs_client, api, args.repairs, args.entries)
            fs_seen, fs_req, fs_after, fs_back = fs
            delivered = metric(port, DELIVERED) - before
            print(f"\nrepair latency ({args.repairs} out-of-band edits of each projection):")
            print(row("Firestore: edit → seen here (floor hop)", fs_seen))
            print(row("Firestore: edit → repaired, seen here", fs_back))
            if fs_req:
                print(row("  of which edit → requeue PATCH seen here", fs_req))
                print(row("  of which requeue → repaired (kopf + write)", fs_after))
            steps = operator_steps(log_path.read_text(errors="replace")[logged:])
            for name, label in (
                ("total", "operator: change reached listener → requeued"),
                ("settle", "  settle (incl. event-loop lag)"),
                ("judging", "  judging: entry read + confirming read"),
                ("confirm", "  confirming read of the projection"),
                ("requeue", "  requeue PATCH"),
            ):
                if steps.get(name):
                    print(row(label, steps[name]))
            sys.stdout.flush()
            cm_seen, cm_back = configmap_repairs(core, args.repairs, args.entries)
            print(row("ConfigMap: edit → seen here (floor hop)", cm_seen))
            print(row("ConfigMap: edit → repaired, seen here", cm_back))
            for label, hop, back in (
                ("Firestore", fs_seen, fs_back),
                ("ConfigMap", cm_seen, cm_back),
            ):
                print(
                    f"  {label}: repair p50 {statistics.median(back):.0f} ms = "
                    f"{statistics.median(back) / statistics.median(hop):.1f}x its raw hop; "
                    f"under 1 s: {sum(1 for b in back if b < 1000)}/{len(back)}"
                )
            print(
                f"  listener deliveries during the Firestore repairs: {delivered:.0f} "
                f"({args.repairs} edits + {args.repairs} repairs expected)"
            )
            print(
                f"  sweeps run meanwhile: {metric(port, 'routing_operator_drift_sweeps_total'):.0f}"
            )
        except BaseException:
            if log_path.exists():
                tail = log_path.read_text(errors="replace").splitlines()[-40:]
                print("--- the operator's log, last lines ---", *tail, sep="\n")
            raise
        finally:
            if op is not None and op.poll() is None:
                stop_group(op.pid, what="routing-operator", grace=20)
                op.wait()
            stack.down()


def _firestore_client(stack: LocalStack) -> Any:
    from google.cloud import firestore

    return firestore.Client(project=stack.env()["GOOGLE_CLOUD_PROJECT"])


if __name__ == "__main__":
    main()
