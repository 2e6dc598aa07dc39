"""The ConfigMap projection of a RoutingEntry: its key in a ``routing.{env}[.{tenant}]``
ConfigMap. (The Firestore document is written through the routing collection's gateway,
``engines.routing.collection.RoutingCollection``, which owns the write algorithm.)

Like the gateway's writes, the ConfigMap writer is idempotent and reports what it did
(``unchanged``, ``written``, or a takeover: ``migrated``, ``reclaimed``), so the reconciler can
tell a first sync from a drift repair; it checks ownership, and deletion removes only what the
deleting entry owns.

ConfigMap writes use the object's ``resourceVersion`` (optimistic concurrency) and retry on 409.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from engines.routing.collection import Outcome, OwnerAlive
from engines.routing.contract import (
    MANAGED_BY,
    RoutingKey,
    canonical_json,
    configmap_value,
    digest,
    owner_of,
    strip_server_fields,
)
from engines.routing.errors import BackendUnavailable, OwnershipConflict
from engines.routing.model import RoutingRecord

__all__ = [
    "MANAGED_BY",
    "ConfigMapProjection",
    "Outcome",
    "canonical_json",
    "configmap_value",
    "digest",
    "owner_of",
    "strip_server_fields",
]

log = logging.getLogger(__name__)


class ConfigMapProjection:
    """Keys of ``routing.{env}[.{tenant}]`` ConfigMaps in the entry's namespace."""

    def __init__(self, core_api: Any) -> None:
        self.api = core_api

    def get(self, namespace: str, name: str) -> Any | None:
        """The ConfigMap, or None when there is none."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def ensure_many(
        self, namespace: str, name: str, records: list[RoutingRecord], owner_alive: OwnerAlive
    ) -> dict[str, Outcome | OwnershipConflict]:
        """Write the keys of several entries of one ConfigMap with one read and one write.

        Keys that are free or owned by the writing entry go in one merge patch, which the server
        applies atomically without touching other keys (no resourceVersion needed, so entries
        sharing a ConfigMap never conflict). Taking over a key from an entry that is gone is
        guarded by the resourceVersion read; a 409 re-reads and retries.
        """
        from kubernetes.client.exceptions import ApiException

        for _ in range(5):
            cm = self.get(namespace, name)
            data: dict[str, str] = dict((cm.data or {}) if cm is not None else {})
            labelled = cm is not None and (cm.metadata.labels or {}).items() >= MANAGED_BY.items()
            results: dict[str, Outcome | OwnershipConflict] = {}
            writes: dict[str, str] = {}
            takeover = False
            for record in records:
                key, value = record.key.configmap_key, configmap_value(record)
                current = data.get(key)
                if current == value:
                    results[key] = Outcome.UNCHANGED
                    continue
                outcome = Outcome.WRITTEN
                if current is not None and record.source is not None:
                    try:
                        owner = owner_of(json.loads(current))
                    except ValueError:
                        owner = None  # garbage in our key: ours to overwrite
                    if owner is not None and owner.uid != record.source.uid:
                        # A ConfigMap is this cluster's by nature: only "is its entry alive".
                        if owner_alive(owner):
                            results[key] = OwnershipConflict(
                                f"ConfigMap {namespace}/{name} key {key} is owned by "
                                f"RoutingEntry {owner.namespace}/{owner.name}",
                                owner_uid=owner.uid,
                            )
                            continue
                        takeover = True
                        outcome = Outcome.RECLAIMED
                    elif owner is not None and owner.cluster is None:
                        outcome = Outcome.MIGRATED
                writes[key] = data[key] = value
                results[key] = outcome
            try:
                if cm is None:
                    if writes:
                        body = {
                            "metadata": {"name": name, "labels": dict(MANAGED_BY)},
                            "data": writes,
                        }
                        self.api.create_namespaced_config_map(namespace, body)
                elif writes or not labelled:
                    patch: dict[str, Any] = {
                        "metadata": {"labels": dict(MANAGED_BY)},
                        "data": writes,
                    }
                    if takeover:
                        patch["metadata"]["resourceVersion"] = cm.metadata.resource_version
                    self.api.patch_namespaced_config_map(name, namespace, patch)
                return results
            except ApiException as exc:
                if exc.status == 409:  # created or changed under us: read again and retry
                    continue
                raise
        raise BackendUnavailable(f"ConfigMap {namespace}/{name} kept changing; will retry")

    def remove(self, namespace: str, key: RoutingKey, owner_uid: str) -> bool:
        """Drop our key (only if we own it); delete the ConfigMap when it is left empty."""
        from kubernetes.client.exceptions import ApiException

        for _ in range(5):
            cm = self.get(namespace, key.configmap_name)
            if cm is None:
                return False
            data = dict(cm.data or {})
            current = data.get(key.configmap_key)
            if current is None:
                return False
            try:
                owner = owner_of(json.loads(current))
            except ValueError:
                owner = None
            if owner is None or owner.uid != owner_uid:  # only what this entry owns
                return False
            del data[key.configmap_key]
            try:
                if data:
                    self.api.replace_namespaced_config_map(
                        key.configmap_name,
                        namespace,
                        {
                            "metadata": {
                                "name": key.configmap_name,
                                "resourceVersion": cm.metadata.resource_version,
                                "labels": cm.metadata.labels,
                            },
                            "data": data,
                        },
                    )
                else:
                    from kubernetes.client import V1DeleteOptions, V1Preconditions

                    self.api.delete_namespaced_config_map(
                        key.configmap_name,
                        namespace,
                        body=V1DeleteOptions(
                            preconditions=V1Preconditions(
                                resource_version=cm.metadata.resource_version
                            )
                        ),
                    )
                return True
            except ApiException as exc:
                if exc.status in (409, 404):
                    continue
                raise
        raise BackendUnavailable(f"ConfigMap {namespace}/{key.configmap_name} kept changing")
