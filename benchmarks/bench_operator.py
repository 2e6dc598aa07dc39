"""Operator throughput and memory on the local stack (DESIGN §10: 1,000 new entries → all
Ready=True within 2x the create-only floor measured in the same run; operator RSS ≤ 200 MB with
10,000 entries, steady and at peak through their creation burst).

Starts its own local stack (kube-apiserver + etcd + Firestore emulator) in a temporary state dir,
runs ``routing-operator`` as a subprocess on one namespace, creates N entries with distinct
identities from a small thread pool, and measures the time from the first create until the last
entry reports ``Ready=True`` (seen through a watch). Then it grows the namespace to
M entries, waits for them all, and reads the operator's VmRSS from /proc. Last, it restarts the
operator on those M entries and measures the same after it has reconciled them all (kopf resumes
every existing entry at start). Prints the figures.

Three floors are measured first, with no operator running, each on N entries of its own:
the creates alone (DESIGN's floor); the writes floor (each created entry then given its
finalizer and its status by a raw client, the API writes an operator must make); and the writes
+ documents floor (the same, with the entry's Firestore document created by a raw client between
the two: every write the contract requires, no operator logic in between).

    python benchmarks/bench_operator.py [--entries 1000] [--rss-entries 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from google.cloud import firestore
from kubernetes import client, config

from devstack import LocalStack, apiserver_requests, free_port, stop_group
from devstack.testing import metric_sum
from engines.routing.contract import API_GROUP as GROUP
from engines.routing.contract import API_VERSION as VERSION
from engines.routing.contract import PLURAL, UPDATED_AT, expected_record

NS = "bench"
KINDS = [
    "kpi",
    "seo",
    "budget",
    "maybes",
    "firearms",
    "page_content",
    "video_timeline",
    "analytics_events",
    "feature_flags",
    "nexus_backend",
]


def body(i: int) -> dict[str, Any]:
    kind = KINDS[i % len(KINDS)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RoutingEntry",
        "metadata": {"name": f"e{i:05d}", "labels": {"bench": "1"}},
        "spec": {
            "tenant": f"t{i // len(KINDS):05d}",
            "env": "prod",
            "resourceKind": kind,
            "backend": "firestore",
            "firestore": {"collection": kind},
        },
    }


def is_ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def create(api: client.CustomObjectsApi, start: int, stop: int, ns: str = NS) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda i: api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body(i)),
                range(start, stop),
            )
        )


FINALIZER = "routing.engines.io/finalizer"


def status_of(i: int, generation: int) -> dict[str, Any]:
    """A status like the one the operator writes for entry ``i`` once it is synced (three
    conditions, the revision, where each projection is)."""
    from routing_operator.conditions import READY, Reason, Wanted, merge_conditions, now_rfc3339

    kind, tenant = KINDS[i % len(KINDS)], f"t{i // len(KINDS):05d}"
    document = f"routing_entries/prod:{tenant}:*:{kind}"
    cm, key = f"routing.prod.{tenant}", f"{tenant}._.{kind}.json"
    wanted = [
        Wanted(READY, "True", Reason.SYNCED, "backend firestore (revision 0123456789ab) is in "
               "Firestore and the ConfigMap"),
        Wanted("FirestoreSynced", "True", Reason.SYNCED, f"written to Firestore {document}"),
        Wanted("ConfigMapSynced", "True", Reason.SYNCED,
               f"written to ConfigMap {NS}/{cm} key {key}"),
    ]  # fmt: skip
    return {
        "conditions": merge_conditions(None, wanted, generation),
        "observedGeneration": generation,
        "revision": "0123456789abcdef" * 4,
        "firestore": {"document": document, "syncedAt": now_rfc3339()},
        "configMap": {"name": cm, "key": key},
    }


def finalize_and_sync(
    api: client.CustomObjectsApi, created: dict[str, Any], i: int, documents: Any = None
) -> None:
    """The writes the operator makes for a new entry: its finalizer (a JSON patch tested
    against the resourceVersion, as the operator's), with ``documents`` (a Firestore collection)
    its document (the record the operator writes, one ``create()``), and its status."""
    meta = created["metadata"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
    ]
    ns, name = meta["namespace"], meta["name"]
    api.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, ops, _content_type="application/json-patch+json"
    )
    if documents is not None:
        record = expected_record(created["spec"], meta, "floor")
        documents.document(record.key.document_id).create(
            {**record.to_document(), UPDATED_AT: firestore.SERVER_TIMESTAMP}
        )
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, name, {"status": status_of(i, meta["generation"])}
    )


def writes_floor(api: client.CustomObjectsApi, n: int, ns: str, documents: Any = None) -> float:
    """Seconds for the API writes ``n`` new entries need with no operator logic in between: the
    same creates from the same 8 threads as the create-only floor, and as each entry is
    created, its finalizer and status PATCHes from 16 more threads (the operator's writes
    overlap the creates the same way); with ``documents``, each entry's Firestore document
    too, between the two."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as patches:

        def create_one(i: int) -> Any:
            created = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body(i))
            created = cast(dict[str, Any], created)
            return patches.submit(finalize_and_sync, api, created, i, documents)

        with ThreadPoolExecutor(max_workers=8) as creates:
            followups = list(creates.map(create_one, range(n)))
        for f in followups:
            f.result()
    return time.monotonic() - t0


def cpu_seconds(pgids: list[int]) -> float:
    """User + system CPU seconds used so far by every process of these process groups."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) in pgids:  # fields after the command: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])
    return total / tick


class Cpu:
    """CPU seconds the control plane (kube-apiserver + etcd), the Firestore emulator, the
    operator and this benchmark's own clients used between ``start`` and ``line``."""

    def __init__(self, stack: LocalStack) -> None:
        pids = stack.pids()
        self.groups = {
            "API server + etcd": [pids[n] for n in ("kube-apiserver", "etcd") if n in pids],
            "Firestore emulator": [pids[n] for n in ("firestore",) if n in pids],
        }
        self.before: dict[str, float] = {}
        self.own = 0.0

    def start(self, operator: int | None = None) -> Cpu:
        if operator is not None:
            self.groups["operator"] = [operator]
        self.before = {k: cpu_seconds(v) for k, v in self.groups.items()}
        self.own = time.process_time()
        return self

    def line(self) -> str:
        parts = [
            f"{k} {cpu_seconds(v) - self.before.get(k, 0.0):.1f} s" for k, v in self.groups.items()
        ]
        return ", ".join(
            [*parts, f"the benchmark's clients {time.process_time() - self.own:.1f} s"]
        )


def wait_all(api: client.CustomObjectsApi, n: int, timeout: float) -> float:
    """The moment at least ``n`` entries report Ready=True, from a watch (one list, then
    events): a full list every few hundred ms of 10,000 entries would compete with the
    operator for the same 2 cores."""
    from kubernetes import watch

    deadline = time.monotonic() + timeout
    while True:  # a list, then a watch from its resourceVersion; again if the watch ends
        listed = cast(dict[str, Any], api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL))
        ready = {o["metadata"]["uid"] for o in listed["items"] if is_ready(o)}
        version = listed["metadata"]["resourceVersion"]
        del listed
        if len(ready) >= n:
            return time.monotonic()
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
            resource_version=version, timeout_seconds=30,
        )  # fmt: skip
        try:
            for event in stream:
                obj = event["object"]
                if event["type"] != "DELETED" and is_ready(obj):
                    ready.add(obj["metadata"]["uid"])
                else:
                    ready.discard(obj["metadata"]["uid"])
                if len(ready) >= n:
                    return time.monotonic()
                if time.monotonic() > deadline:
                    break
        except client.exceptions.ApiException as exc:
            if exc.status != 410:  # 410: the version expired; list again
                raise
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(ready)}/{n} Ready after {timeout:.0f}s")


SETTLE_S = 20.0
JEMALLOC_ENV = {  # the Docker image's allocator settings (see the Dockerfile)
    "LD_PRELOAD": "/usr/local/lib/libjemalloc.so.2",
    "PYTHONMALLOC": "malloc",
    "MALLOC_CONF": (
        "background_thread:true,narenas:1,tcache:false,dirty_decay_ms:500,muzzy_decay_ms:0"
    ),
}


class PeakRss:
    """Samples a process's RSS every 0.25 s in a thread while the ``with`` block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.max_mb = max(self.max_mb, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def stop(op: subprocess.Popen[bytes]) -> None:
    stop_group(op.pid, what="routing-operator", grace=20)
    op.wait()


def writes_since(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """Write requests the API server served between two ``apiserver_requests`` readings."""
    return {
        k: v - before.get(k, 0.0)
        for k, v in after.items()
        if k[0] in ("POST", "PATCH", "PUT", "DELETE", "APPLY") and v > before.get(k, 0.0)
    }


def wait_started(log: Path, op: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the operator logs that its startup handlers have run (``claims loaded``)."""
    deadline = time.monotonic() + timeout
    while b"claims loaded" not in log.read_bytes():
        if op.poll() is not None:
            sys.exit(f"routing-operator exited with {op.returncode}; see {log}")
        if time.monotonic() > deadline:
            sys.exit(f"routing-operator did not start within {timeout:.0f} s; see {log}")
        time.sleep(0.1)


def wait_reconciles(port: int, n: int, timeout: float) -> float:
    """When the operator's ``routing_operator_reconciles_total`` (all results) reaches n."""
    deadline = time.monotonic() + timeout
    total = 0.0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            text = ""  # not serving yet
        total = metric_sum(text, "routing_operator_reconciles_total")
        if total >= n:
            return time.monotonic()
        time.sleep(0.5)
    raise SystemExit(f"only {total:.0f}/{n} reconciles after {timeout:.0f}s")


class Profiler:
    """py-spy sampling a running process (every thread, idle ones excluded) until ``stop``:
    keeps the sampled stacks (collapsed format: one stack and its count a line, for any
    flame-graph tool) and prints the functions most samples were in, by own time (the innermost
    frame) and by total time (anywhere on the stack)."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy)")
        self.out = out
        self._proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
             "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        os.killpg(self._proc.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
        self._proc.wait(timeout=60)
        own: Counter[str] = Counter()
        total: Counter[str] = Counter()
        samples = 0
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            # "function (path/to/module.py:line)" -> "function (module.py)"
            frames = [f"{f.split(' (')[0]} ({f.rsplit('/', 1)[-1].split(':')[0]})"
                      for f in stack.split(";") if f]  # fmt: skip
            samples += int(count)
            if frames:
                own[frames[-1]] += int(count)
            for frame in set(frames):
                total[frame] += int(count)
        print(f"  py-spy: {samples} samples of the operator's busy threads (stacks in {self.out})")
        for title, counter in (("own time", own), ("total time", total)):
            print(f"  top functions by {title}:")
            for frame, n in counter.most_common(20):
                print(f"    {100 * n / max(samples, 1):5.1f}%  {frame}")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_parts(pid: int) -> str:
    """RSS split into the process's own memory and mapped files (its libraries: page cache
    shared with other processes, and larger right after the files were written)."""
    return f"{rss_mb(pid, 'RssAnon'):.0f} MB anonymous + {rss_mb(pid, 'RssFile'):.0f} MB files"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rss-entries", type=int, default=10_000)
    parser.add_argument(
        "--operator-arg",
        action="append",
        default=[],
        help="extra routing-operator flag, e.g. --operator-arg=--drift-period=3600",
    )
    parser.add_argument(
        "--allocator",
        choices=["jemalloc", "pymalloc"],
        default="jemalloc",
        help="run the operator on jemalloc, as the Docker image does (default), or on "
        "CPython's own allocator",
    )
    parser.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="skip the last phase: a new operator process on the --rss-entries existing entries",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="FILE",
        help="profile the operator with py-spy (pip install py-spy) while the --entries burst "
        "is handled, write its flame graph to FILE (SVG) and print the functions the samples "
        "spent most time in",
    )
    args = parser.parse_args()
    allocator_env: dict[str, str] = {}
    if args.allocator == "jemalloc":
        found = [
            p
            for p in (
                JEMALLOC_ENV["LD_PRELOAD"],
                f"/usr/lib/{os.uname().machine}-linux-gnu/libjemalloc.so.2",
            )
            if Path(p).exists()
        ]
        if not found:
            raise SystemExit(
                "--allocator=jemalloc: libjemalloc.so.2 not found; apt-get install libjemalloc2, "
                "or pass --allocator=pymalloc"
            )
        allocator_env = {**JEMALLOC_ENV, "LD_PRELOAD": found[0]}

    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        stack = LocalStack(Path(tmp) / "stack")
        op: subprocess.Popen[bytes] | None = None
        try:
            stack.up(["kube-apiserver", "firestore"])
            env = {**os.environ, **stack.env(), "KUBECONFIG": str(stack.kubeconfig)}
            config.load_kube_config(str(stack.kubeconfig))  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
            api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 16
            core, api = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
            # floor: the same creates into a namespace nobody watches; floor-writes: the writes
            # each entry needs (create, finalizer, status), by a raw client, nobody watching;
            # floor-documents: the same with each entry's Firestore document.
            for name in (NS, "floor", "floor-writes", "floor-documents"):
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            cpu = Cpu(stack).start()
            f0 = time.monotonic()
            create(api, 0, args.entries, ns="floor")
            floor = time.monotonic() - f0
            print(
                f"floor: creating {args.entries} entries with no operator running takes "
                f"{floor:.1f} s on this machine (API server + etcd + CEL admission)"
            )
            print(f"  CPU: {cpu.line()}")
            cpu.start()
            floor_writes = writes_floor(api, args.entries, "floor-writes")
            print(
                f"floor (writes): {args.entries} entries created the same way, each then given "
                f"its finalizer and its status by a raw client as soon as it exists, no "
                f"operator: {floor_writes:.1f} s ({floor_writes / floor:.1f}x the create-only "
                f"floor); CPU: {cpu.line()}"
            )
            os.environ["FIRESTORE_EMULATOR_HOST"] = env["FIRESTORE_EMULATOR_HOST"]
            documents = firestore.Client(project=stack.project).collection(
                f"floor-{uuid.uuid4().hex[:8]}"
            )
            cpu.start()
            floor_documents = writes_floor(api, args.entries, "floor-documents", documents)
            print(
                f"floor (writes + documents): the same, with each entry's Firestore document "
                f"created by a raw client between its finalizer and its status: "
                f"{floor_documents:.1f} s ({floor_documents / floor:.1f}x the create-only "
                f"floor); CPU: {cpu.line()}"
            )
            log = open(Path(tmp) / "operator.log", "wb")  # noqa: SIM115

            def start_operator(metrics_port: int = 0) -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "routing_operator.cli",
                        "--namespace",
                        NS,
                        "--standalone",
                        "--metrics-port",
                        str(metrics_port),
                        "--liveness-port",
                        "0",
                        *args.operator_arg,
                    ],
                    env={**env, **allocator_env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

            op = start_operator()
            # Started: its startup handlers are done and kopf begins to watch. The burst must not
            # time the operator's own start (imports and login take seconds).
            wait_started(Path(tmp) / "operator.log", op)
            rss_idle, idle_parts = rss_mb(op.pid), rss_parts(op.pid)
            print(f"allocator: {args.allocator}")

            before = apiserver_requests(stack.kubeconfig)
            profiler = None if args.py_spy is None else Profiler(op.pid, args.py_spy)
            cpu.start(op.pid)
            t0 = time.monotonic()
            create(api, 0, args.entries)
            created = time.monotonic()
            done = wait_all(api, args.entries, timeout=300)
            burst_cpu = cpu.line()
            if profiler is not None:
                profiler.stop()
            print(
                f"operator: {args.entries} new entries → all Ready=True in {done - t0:.1f} s "
                f"(creating them took {created - t0:.1f} s); target ≤ 2x the floor: "
                f"{'met' if done - t0 <= 2 * floor else 'NOT met'}"
            )
            after = apiserver_requests(stack.kubeconfig)
            writes = writes_since(before, after)
            per = ", ".join(
                f"{verb} {res} {n / args.entries:.2f}" for (verb, res), n in sorted(writes.items())
            )
            print(f"  API writes per entry: {per}")
            print(
                f"  {(done - t0) / floor:.1f}x the create-only floor; "
                f"throughput ≈ {args.entries / (done - t0):.0f} entries/s; "
                f"RSS idle {rss_idle:.0f} MB ({idle_parts}), "
                f"after {args.entries}: {rss_mb(op.pid):.0f} MB"
            )
            print(
                f"  {(done - t0) / floor_writes:.1f}x the writes floor, "
                f"{(done - t0) / floor_documents:.1f}x the writes + documents floor; "
                "CPU over the burst: "
                f"{burst_cpu}"
            )

            if args.rss_entries > args.entries:
                peak = PeakRss(op.pid)
                t1 = time.monotonic()
                with peak:
                    create(api, args.entries, args.rss_entries)
                    wait_all(api, args.rss_entries, timeout=1800)
                took = time.monotonic() - t1
                busy = rss_mb(op.pid)
                # Steady state: past the operator's next malloc_trim (every 10 s) and the
                # kopf workers' idle exit, with no entry changing.
                time.sleep(SETTLE_S)
                rss, parts = rss_mb(op.pid), rss_parts(op.pid)
                print(
                    f"operator RSS with {args.rss_entries} entries: {rss:.0f} MB steady ({parts}; "
                    f"{SETTLE_S:.0f} s after the last became Ready; {busy:.0f} MB at that moment, "
                    f"peak {peak.max_mb:.0f} MB while they were created; all Ready after "
                    f"{took:.0f} s more); target ≤ 200 MB steady and peak: "
                    f"{'met' if max(rss, peak.max_mb) <= 200 else 'NOT met'}"
                )

                if args.restart:
                    # A new operator process on the same (synced) entries: kopf lists them a page
                    # at a time, queues and resumes each; counted through its reconcile metric.
                    stop(op)
                    port = free_port()
                    before = apiserver_requests(stack.kubeconfig)
                    t2 = time.monotonic()
                    op = start_operator(port)
                    with PeakRss(op.pid) as peak:
                        resumed = wait_reconciles(port, args.rss_entries, timeout=1800)
                    took = resumed - t2
                    restart_writes = sum(
                        n
                        for (_, resource), n in writes_since(
                            before, apiserver_requests(stack.kubeconfig)
                        ).items()
                        if resource.startswith((PLURAL, "configmaps", "events"))
                    )
                    time.sleep(SETTLE_S)
                    rss, parts = rss_mb(op.pid), rss_parts(op.pid)
                    print(
                        f"operator restarted on {args.rss_entries} existing entries: all "
                        f"reconciled {took:.0f} s after its start with {restart_writes:.0f} "
                        f"writes of entries, ConfigMaps or Events; RSS {rss:.0f} MB steady "
                        f"({parts}; {SETTLE_S:.0f} s later; "
                        f"peak {peak.max_mb:.0f} MB while resuming); "
                        f"target ≤ 200 MB steady and peak: "
                        f"{'met' if max(rss, peak.max_mb) <= 200 else 'NOT met'}"
                    )
        finally:
            if op is not None:
                stop(op)
            stack.down()


if __name__ == "__main__":
    main()
