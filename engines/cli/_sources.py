"""Where ``explain``, ``matrix`` and ``diff`` read routing entries from.

Four sources, one result shape (:class:`Snapshot`): ``dir`` (manifests, read by the linter),
``files`` (a mounted ConfigMap directory, read by the runtime's ``FileRoutingRegistry``),
``firestore`` (the ``routing_entries`` collection, parsed like the runtime's registry does) and
``cluster`` (RoutingEntry objects through the kubeconfig). Resolution is never reimplemented:
:meth:`Snapshot.table` feeds the winners into the runtime's ``RoutingTable``.

Several entries may claim one identity (manifests, or the cluster before the operator marks the
losers). The §3 rule picks the winner — oldest ``creationTimestamp``, then ``namespace/name`` —
and the others are kept as conflicts, so the reports can show them.

Vendor errors (kubeconfig, API server) and an unavailable Firestore (``BackendUnavailable`` from
the routing collection's gateway, which reads and writes the collection for every command)
become :class:`SourceError` here, which the CLI turns into one line and exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.routing import (
    BackendUnavailable,
    InvalidRouting,
    RoutingKey,
    RoutingRecord,
    RoutingTable,
)
from engines.routing.collection import RoutingCollection, StoredDocument
from engines.routing.contract import (
    API_GROUP,
    API_VERSION,
    DEFAULT_COLLECTION,
    PAUSED_ANNOTATION,
    PLURAL,
    annotated,
    claim_order,
    expected_record,
)

__all__ = [
    "ClusterClient",
    "Entry",
    "Snapshot",
    "SourceError",
    "load_snapshot",
]

SOURCES = ("cluster", "firestore", "dir", "files")


class SourceError(Exception):
    """A source cannot be read (no kubeconfig, API unreachable, CRD missing, Firestore down)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A valid routing entry and where it came from."""

    record: RoutingRecord
    origin: str
    """Human-readable location: ``examples/acme.yaml:3``, ``firestore routing_entries/<id>``…"""
    name: str | None = None
    """``namespace/name`` of the RoutingEntry, when the source knows it."""
    created: str | None = None
    uid: str | None = None
    generation: int | None = None
    ready: str | None = None
    """``True (Synced)``-style summary of the Ready condition (cluster only)."""
    paused: bool = False

    @property
    def key(self) -> RoutingKey:
        return self.record.key

    def order(self) -> tuple[str, ...]:
        """§3 conflict order: oldest creationTimestamp, then namespace, then name (the origin
        stands in for an entry the source knows no name of)."""
        namespace, _, name = (self.name or self.origin).rpartition("/")
        return claim_order(self.created, namespace, name)


@dataclass
class Snapshot:
    source: str
    """What was read, for the reports' header (``dir examples/``, ``cluster (all namespaces)``)."""
    entries: list[Entry]
    invalid: list[tuple[str, str]] = field(default_factory=list)
    """(origin, reason) of entries that failed validation; they resolve nothing."""

    def winners(self) -> tuple[dict[RoutingKey, Entry], list[tuple[Entry, Entry]]]:
        """The entry that counts per identity, and (loser, winner) pairs."""
        by_key: dict[RoutingKey, list[Entry]] = {}
        for entry in self.entries:
            by_key.setdefault(entry.key, []).append(entry)
        winners: dict[RoutingKey, Entry] = {}
        conflicts: list[tuple[Entry, Entry]] = []
        for key, group in by_key.items():
            ordered = sorted(group, key=Entry.order)
            winners[key] = ordered[0]
            conflicts += [(loser, ordered[0]) for loser in ordered[1:]]
        return winners, conflicts

    def table(self) -> tuple[RoutingTable, dict[RoutingKey, Entry]]:
        """The runtime's resolution table over the winners, and the entry behind each key."""
        winners, _ = self.winners()
        table = RoutingTable()
        table.replace_all(e.record for e in winners.values())
        return table, winners


def load_snapshot(
    source: Sequence[str],
    *,
    env: str | None,
    namespace: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    collection: str = DEFAULT_COLLECTION,
    gcp_project: str | None = None,
    database: str | None = None,
) -> Snapshot:
    kind, paths = source[0], list(source[1:])
    if kind == "dir":
        return _from_dir(paths, env)
    if kind == "files":
        return _from_files(paths, env)
    if kind == "firestore":
        return _from_firestore(env, collection, gcp_project, database)
    if kind == "cluster":
        client = ClusterClient(kubeconfig=kubeconfig, context=context)
        return from_cluster_objects(
            client.routing_entries(namespace), env, client.describe(namespace)
        )
    raise SourceError(f"unknown source {kind!r}; use one of {', '.join(SOURCES)}")


# -- manifests ---------------------------------------------------------------------------------


def _from_dir(paths: Sequence[str], env: str | None) -> Snapshot:
    from ._manifests import ManifestIOError
    from ._validate import validate_paths

    try:
        report = validate_paths(paths)
    except ManifestIOError as exc:
        raise SourceError(str(exc)) from exc
    entries = [
        Entry(record=p.record(), origin=p.doc.location, name=p.object_name)
        for p in report.entries
        if env is None or p.spec.env == env
    ]
    # duplicates are conflicts here (shown by the reports), not invalid entries
    invalid = [
        (p.location, f"{p.field}: {p.message}")
        for p in report.problems
        if not p.rule.startswith("duplicate")
    ]
    return Snapshot(f"dir {' '.join(paths)}", entries, invalid)


# -- mounted ConfigMap files -------------------------------------------------------------------


def _from_files(paths: Sequence[str], env: str | None) -> Snapshot:
    from engines.routing import FileRoutingRegistry

    for p in paths:
        if not Path(p).is_dir():
            raise SourceError(f"{p}: not a directory (expected a mounted ConfigMap directory)")
    registry = FileRoutingRegistry(paths, env=env)
    registry.reload()
    entries = []
    for record in registry.list():
        name = record.key.configmap_key
        where = next((str(Path(p) / name) for p in paths if (Path(p) / name).exists()), name)
        owner = f"{record.source.namespace}/{record.source.name}" if record.source else None
        entries.append(Entry(record=record, origin=where, name=owner))
    return Snapshot(f"files {' '.join(paths)}", entries, sorted(registry.invalid.items()))


# -- Firestore ---------------------------------------------------------------------------------


def routing_collection(
    collection: str, gcp_project: str | None, database: str | None
) -> RoutingCollection:
    """The gateway to the routing collection (built lazily: nothing is read yet)."""
    return RoutingCollection(name=collection, project=gcp_project, database=database)


def firestore_documents(store: RoutingCollection, env: str | None) -> list[StoredDocument]:
    """Every document of the routing collection (optionally of one env only), each with the
    update time a later write can be made conditional on."""
    try:
        return list(store.documents(env))
    except BackendUnavailable as exc:
        raise SourceError(str(exc)) from exc


def _from_firestore(
    env: str | None, collection: str, gcp_project: str | None, database: str | None
) -> Snapshot:
    entries, invalid = [], []
    store = routing_collection(collection, gcp_project, database)
    for doc in firestore_documents(store, env):
        origin = f"firestore {collection}/{doc.id}"
        try:
            record = doc.record()
        except InvalidRouting as exc:
            invalid.append((origin, str(exc)))
            continue
        owner = f"{record.source.namespace}/{record.source.name}" if record.source else None
        entries.append(Entry(record=record, origin=origin, name=owner))
    return Snapshot(f"firestore {collection}", entries, invalid)


# -- the cluster -------------------------------------------------------------------------------


class ClusterClient:
    """The few Kubernetes reads routingctl needs, with errors translated to ``SourceError``."""

    TIMEOUT = 15

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            if kubeconfig is None and context is None and _in_cluster():
                config.load_incluster_config()  # type: ignore[no-untyped-call]
                self.api_client = client.ApiClient()
            else:
                self.api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context
                )
        except (ConfigException, OSError) as exc:
            raise SourceError(
                "cannot load kubeconfig "
                f"({kubeconfig or os.environ.get('KUBECONFIG') or '~/.kube/config'}): "
                f"{exc}; set KUBECONFIG or pass --kubeconfig"
            ) from exc
        self._client = client

    def cluster_identity(self, explicit: str | None) -> str:
        """The identity of this cluster as the operator records it (``source.cluster``): the
        same rule, so the same documents count as this cluster's."""
        from engines.routing.cluster import ClusterIdentityError, cluster_identity

        try:
            return cluster_identity(
                self._client.CoreV1Api(self.api_client),
                explicit,
                hint="the operator's --cluster-id, when it runs with one",
            )
        except ClusterIdentityError as exc:
            raise SourceError(str(exc)) from exc

    @property
    def core(self) -> Any:
        """A ``CoreV1Api`` on this cluster (for the writes of ``prune``)."""
        return self._client.CoreV1Api(self.api_client)

    def describe(self, namespace: str | None) -> str:
        host = self.api_client.configuration.host
        return f"cluster {host} ({f'namespace {namespace}' if namespace else 'all namespaces'})"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and PLURAL in what:
                raise SourceError(
                    f"{what}: the RoutingEntry CRD is not installed "
                    f"(kubectl apply -f crds/{PLURAL}.{API_GROUP}.yaml)"
                ) from exc
            raise SourceError(f"{what}: HTTP {exc.status} {exc.reason}") from exc
        except (HTTPError, OSError) as exc:
            host = self.api_client.configuration.host
            raise SourceError(f"{what}: cannot reach the API server at {host}: {exc}") from exc

    def routing_entries(self, namespace: str | None) -> list[dict[str, Any]]:
        api = self._client.CustomObjectsApi(self.api_client)
        if namespace:
            result = self._call(
                f"list {PLURAL} in {namespace}",
                api.list_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                namespace,
                PLURAL,
            )
        else:
            result = self._call(
                f"list {PLURAL}",
                api.list_cluster_custom_object,
                API_GROUP,
                API_VERSION,
                PLURAL,
            )
        return list(result.get("items", []))

    def managed_configmaps(self, namespace: str | None, selector: str) -> list[Any]:
        core = self._client.CoreV1Api(self.api_client)
        if namespace:
            result = self._call(
                "list configmaps",
                core.list_namespaced_config_map,
                namespace,
                label_selector=selector,
            )
        else:
            result = self._call(
                "list configmaps", core.list_config_map_for_all_namespaces, label_selector=selector
            )
        return list(result.items)


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not (
        os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists()
    )


def ready_summary(obj: dict[str, Any]) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return f"{cond.get('status')} ({cond.get('reason')})"
    return None


def parse_object(obj: dict[str, Any], cluster: str | None = None) -> Entry:
    """A RoutingEntry object as an :class:`Entry` whose record is what the operator of
    ``cluster`` projects for it; raises ``InvalidRouting``."""
    meta = obj.get("metadata") or {}
    record = expected_record(obj.get("spec") or {}, meta, cluster)
    source = record.source
    assert source is not None  # expected_record always names the entry
    name = f"{source.namespace}/{source.name}"
    return Entry(
        record=record,
        origin=f"RoutingEntry {name}",
        name=name,
        created=meta.get("creationTimestamp"),
        uid=source.uid,
        generation=record.generation,
        ready=ready_summary(obj),
        paused=annotated(meta, PAUSED_ANNOTATION),
    )


def from_cluster_objects(
    objects: Sequence[dict[str, Any]], env: str | None, label: str
) -> Snapshot:
    entries, invalid = [], []
    for obj in objects:
        meta = obj.get("metadata") or {}
        origin = f"RoutingEntry {meta.get('namespace')}/{meta.get('name')}"
        if env is not None and (obj.get("spec") or {}).get("env") != env:
            continue
        try:
            entries.append(parse_object(obj))
        except InvalidRouting as exc:
            invalid.append((origin, str(exc)))
    return Snapshot(label, entries, invalid)
