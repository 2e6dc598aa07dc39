"""``routingctl prune``: delete, on purpose, the orphans the operator keeps.

An orphan is a projection of this cluster whose RoutingEntry is gone: a Firestore document whose
``source.cluster`` is this cluster's identity and whose ``source.uid`` names no RoutingEntry
here, or a key of a managed ConfigMap whose ``source.uid`` names none. The operator keeps them
(outside env ``test``) because the entry may have vanished by accident while engines pods still
read them; deleting them is an operator's decision, taken here.

Never touched: documents of another cluster, documents recording no cluster (written before
cluster identities: their cluster is unknown; an operator rewrites its own with its identity at
its next start), values that are not a routing document. Projections are read before the
entries, so an entry created meanwhile is listed; each deletion is conditional on the projection
being unchanged since it was read (the document's update time, the ConfigMap's
resourceVersion), so an orphan an entry took back in between is left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TextIO

from engines.routing import BackendUnavailable
from engines.routing.collection import RoutingCollection, StoredDocument
from engines.routing.contract import MANAGED_BY_SELECTOR, configmap_in_env

from ._sources import ClusterClient, SourceError, firestore_documents, routing_collection

__all__ = ["prune"]


@dataclass(frozen=True, slots=True)
class _Doc:
    owner: str
    stored: StoredDocument


@dataclass(frozen=True, slots=True)
class _Key:
    namespace: str
    configmap: str
    key: str
    value: str
    owner: str


def _owner(source: dict[str, Any]) -> str:
    return f"RoutingEntry {source.get('namespace')}/{source.get('name')}"


def prune(
    client: ClusterClient,
    *,
    cluster_id: str | None,
    namespace: str | None,
    env: str | None,
    collection: str,
    gcp_project: str | None,
    database: str | None,
    dry_run: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """Delete (or, with ``dry_run``, list) this cluster's orphans; 1 when one could not be
    deleted because it changed since it was read."""
    cluster = client.cluster_identity(cluster_id)
    # Projections first, entries last (see the module docstring).
    store = routing_collection(collection, gcp_project, database)
    stored = firestore_documents(store, env)
    configmaps = client.managed_configmaps(namespace, MANAGED_BY_SELECTOR)
    live = {
        str((obj.get("metadata") or {}).get("uid")) for obj in client.routing_entries(namespace)
    }

    docs: list[_Doc] = []
    unmarked = 0
    for doc in stored:
        source = doc.data.get("source")
        if not isinstance(source, dict) or source.get("uid") in live:
            continue
        if namespace and source.get("namespace") != namespace:
            continue
        if source.get("cluster") is None:
            unmarked += 1
        elif source.get("cluster") == cluster:
            docs.append(_Doc(_owner(source), doc))
    keys: list[_Key] = []
    for cm in configmaps:
        if not configmap_in_env(cm.metadata.name, env):
            continue
        for key, value in sorted((cm.data or {}).items()):
            try:
                source = json.loads(value).get("source")
            except (ValueError, AttributeError):
                continue
            if isinstance(source, dict) and source.get("uid") and source["uid"] not in live:
                keys.append(
                    _Key(cm.metadata.namespace, cm.metadata.name, key, value, _owner(source))
                )

    verb = "would delete" if dry_run else "deleted"
    failed = 0
    for orphan in sorted(docs, key=lambda d: d.stored.id):
        where = f"firestore {collection}/{orphan.stored.id} ({orphan.owner} is gone)"
        if not dry_run and not _delete_document(store, orphan.stored):
            err.write(f"skipped {where}: changed since it was read\n")
            failed += 1
            continue
        out.write(f"{verb} {where}\n")
    for item in keys:
        where = f"configmap {item.namespace}/{item.configmap}[{item.key}] ({item.owner} is gone)"
        if not dry_run and not _delete_key(client.core, item):
            err.write(f"skipped {where}: changed since it was read\n")
            failed += 1
            continue
        out.write(f"{verb} {where}\n")
    done = len(docs) + len(keys) - failed
    err.write(
        f"prune: {verb} {done} orphan(s) of cluster {cluster} "
        f"({collection}{f', env {env}' if env else ''}"
        f"{f', namespace {namespace}' if namespace else ''})\n"
    )
    if unmarked:
        err.write(
            f"prune: {unmarked} document(s) without a live owner record no cluster (written "
            "before cluster identities); left alone, as they may be another cluster's\n"
        )
    return 1 if failed else 0


def _delete_document(store: RoutingCollection, doc: StoredDocument) -> bool:
    try:
        return store.delete_unchanged(doc)
    except BackendUnavailable as exc:
        raise SourceError(str(exc)) from exc


def _delete_key(core: Any, item: _Key) -> bool:
    """Remove one key if its value is still the one read; delete the ConfigMap when emptied."""
    from kubernetes.client import V1DeleteOptions, V1Preconditions
    from kubernetes.client.exceptions import ApiException

    try:
        for _ in range(5):
            try:
                cm = core.read_namespaced_config_map(item.configmap, item.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            data = dict(cm.data or {})
            if data.get(item.key) != item.value:
                return False
            del data[item.key]
            version = cm.metadata.resource_version
            try:
                if data:
                    body = {
                        "metadata": {
                            "name": item.configmap,
                            "resourceVersion": version,
                            "labels": cm.metadata.labels,
                        },
                        "data": data,
                    }
                    core.replace_namespaced_config_map(item.configmap, item.namespace, body)
                else:
                    core.delete_namespaced_config_map(
                        item.configmap,
                        item.namespace,
                        body=V1DeleteOptions(
                            preconditions=V1Preconditions(resource_version=version)
                        ),
                    )
                return True
            except ApiException as exc:
                if exc.status in (404, 409):
                    continue  # changed under us: read again
                raise
    except ApiException as exc:
        raise SourceError(
            f"cannot update ConfigMap {item.namespace}/{item.configmap}: HTTP {exc.status} "
            f"{exc.reason}"
        ) from exc
    return False
