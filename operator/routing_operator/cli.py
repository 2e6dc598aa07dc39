"""``routing-operator``: run the operator (kopf inside) with explicit, documented flags."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import sys
from typing import Any

from engines.routing.contract import DEFAULT_COLLECTION

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="routing-operator",
        description="Reconcile RoutingEntry objects into Firestore and ConfigMaps.",
    )
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--collection",
        default=DEFAULT_COLLECTION,
        help="Firestore collection of routing documents (default: routing_entries)",
    )
    p.add_argument(
        "--firestore-project",
        default=None,
        help="Google Cloud project of Firestore (default: GOOGLE_CLOUD_PROJECT)",
    )
    p.add_argument("--firestore-database", default=None, help="Firestore database id")
    p.add_argument(
        "--cluster-id",
        default=None,
        help="this cluster's identity, recorded as source.cluster in every document; the "
        "operator writes, repairs and deletes only its own cluster's documents (default: the "
        "uid of namespace kube-system)",
    )
    p.add_argument(
        "--drift-period",
        type=float,
        default=1800.0,
        help="seconds between full drift sweeps (default: 1800); drift is repaired as it "
        "happens by listening to this cluster's Firestore documents and the managed ConfigMaps, "
        "the sweep is the safety net behind them (and reports orphans)",
    )
    p.add_argument(
        "--drift-listen",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="repair drift as it happens by listening (default); --no-drift-listen leaves it to "
        "the sweep alone (no Firestore listener, no ConfigMap watch: less memory and no "
        "listener stream, repairs wait for the next sweep: shorten --drift-period with it)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="Prometheus metrics port, 0 to disable (default: 8080)",
    )
    p.add_argument(
        "--liveness-port",
        type=int,
        default=8081,
        help="health port, 0 to disable (default: 8081): /healthz (liveness) and /readyz "
        "(503 with the reason and its fix while the operator cannot work)",
    )
    peering = p.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone", action="store_true", help="no peering: use with exactly one replica"
    )
    peering.add_argument(
        "--peering",
        default="routing-operator",
        help="kopf peering object name shared by the replicas",
    )
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest live replica works, the others pause "
        "(default: random, so two replicas never tie)",
    )
    p.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        help="seconds before a silent replica is considered gone (default: 60)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=8,
        help="threads for blocking Firestore/Kubernetes calls (default: 8)",
    )
    p.add_argument(
        "--concurrent-entries",
        type=int,
        default=64,
        help="entries handled at once (default: 64); events of the others wait in the watch "
        "stream, so a burst of thousands of entries does not hold thousands of bodies in memory",
    )
    p.add_argument(
        "--api-connections",
        type=int,
        default=64,
        help="kopf's connections to the API server for requests, on top of one per watch "
        "stream (default: 64; keep it at least --concurrent-entries)",
    )
    p.add_argument(
        "--list-page-size",
        type=int,
        default=500,
        help="entries per page of kopf's list of the RoutingEntries (default: 500); the next "
        "page is requested once at most one page of listed entries waits for a worker",
    )
    p.add_argument("--log-format", choices=["plain", "json"], default="plain")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.concurrent_entries < 1:
        p.error(f"--concurrent-entries must be at least 1 (got {args.concurrent_entries})")
    if args.list_page_size < 1:
        p.error(f"--list-page-size must be at least 1 (got {args.list_page_size})")
    if args.api_connections < args.concurrent_entries:
        p.error(
            f"--api-connections ({args.api_connections}) must be at least --concurrent-entries "
            f"({args.concurrent_entries}): time spent waiting for a pooled connection counts "
            "against kopf's request timeout"
        )
    return args


def _identity() -> Any:
    """This replica's peering identity: the pod name when Kubernetes gives it (``POD_ID``, as kopf
    expects), else host/pid/random. Never derived from the ``random`` module: a library that
    seeds it would give two replicas on one host the same identity, and then neither sees the
    other."""
    import socket
    import uuid

    from .kopf_internals import Identity

    pod = os.environ.get("POD_ID")
    return Identity(pod or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from . import heap

    heap.limit_arenas()
    heap.small_tls_buffers()
    import kopf
    import kubernetes
    from google.cloud import firestore

    from engines.routing.collection import RoutingCollection

    from .diagnostics import Checks, Diagnostics, alongside, firestore_target
    from .handlers import OperatorConfig, build_registry, quiet_event_handler
    from .peering import Peering
    from .projections import ConfigMapProjection
    from .reconciler import Reconciler

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    if not args.verbose:
        quiet_event_handler()
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    api = kubernetes.client.ApiClient()
    project = args.firestore_project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        sys.exit("routing-operator: set GOOGLE_CLOUD_PROJECT or pass --firestore-project")
    client = firestore.Client(project=project, database=args.firestore_database)
    from engines.routing.cluster import ClusterIdentityError, cluster_identity

    from .identity import ClusterIdentity

    cluster = ""  # the uid of kube-system, read at start (identity.py)
    if args.cluster_id is not None:
        try:
            cluster = cluster_identity(None, args.cluster_id)
        except ClusterIdentityError as exc:
            sys.exit(f"routing-operator: {exc}")
    priority = args.priority if args.priority is not None else random.randint(1, 32767)
    identity = _identity()
    config = OperatorConfig(
        collection=args.collection,
        drift_period=args.drift_period,
        drift_listen=args.drift_listen,
        peering_lifetime=args.peering_lifetime,
        concurrent_entries=args.concurrent_entries,
        api_connections=args.api_connections,
        list_page=args.list_page_size,
        peering=None if args.standalone else Peering(args.peering, str(identity), priority),
        namespaces=None if args.all_namespaces else list(args.namespace),
    )
    reconciler = Reconciler(
        firestore=RoutingCollection(client, name=args.collection, cluster=cluster),
        configmaps=ConfigMapProjection(kubernetes.client.CoreV1Api(api)),
        custom_api=kubernetes.client.CustomObjectsApi(api),
        collection=args.collection,
        workers=args.workers,
    )
    registry = build_registry(config, reconciler)
    identity_check = ClusterIdentity(kubernetes.client.CoreV1Api(api), reconciler.firestore)
    identity_check.register(registry)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    logging.getLogger(__name__).info(
        "starting: namespaces=%s collection=%s cluster=%s drift=%ss peering=%s priority=%s",
        "*" if args.all_namespaces else ",".join(args.namespace),
        args.collection,
        cluster or "(kube-system's uid)",
        args.drift_period,
        "standalone" if args.standalone else args.peering,
        priority,
    )
    checks = Checks(
        kubernetes.client.ApiClient(),  # its own pool: never queued behind the reconciler's
        reconciler.firestore,
        namespaces=config.namespaces,
        peering=None if args.standalone else args.peering,
        firestore_target=firestore_target(project, args.firestore_database),
    )
    diagnostics = Diagnostics([checks.kubernetes, checks.firestore_check, identity_check.check])
    operator = kopf.operator(
        registry=registry,
        identity=identity,
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        standalone=args.standalone,
        # A peering name makes peering mandatory: a replica never runs unpeered by accident.
        peering_name=None if args.standalone else args.peering,
        priority=priority,
    )
    with contextlib.suppress(asyncio.CancelledError):  # as kopf.run does
        asyncio.run(alongside(operator, diagnostics, args.liveness_port))


if __name__ == "__main__":
    main()
