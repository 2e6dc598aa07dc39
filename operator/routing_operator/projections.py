"""The two projections of a RoutingEntry: its Firestore document and its ConfigMap key.

Both writers are idempotent and report what they did (``unchanged``/``written``), so the
reconciler can tell a first sync from a drift repair. Both check ownership: a projection whose
``source.uid`` names another RoutingEntry is only taken over when that entry no longer exists
(``owner_alive`` answers that), and deletion removes only what the deleting entry owns.

Firestore writes run in a transaction (read owner, then write) with short per-call timeouts, so
an unreachable emulator or service surfaces as ``BackendUnavailable`` within seconds instead of
hanging a handler. ConfigMap writes use the object's ``resourceVersion`` (optimistic concurrency)
and retry on 409.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from engines.routing.errors import BackendUnavailable, OwnershipConflict, RoutingKey
from engines.routing.model import RoutingRecord, Source

__all__ = [
    "MANAGED_BY",
    "ConfigMapProjection",
    "FirestoreProjection",
    "Outcome",
    "configmap_value",
]

log = logging.getLogger(__name__)
MANAGED_BY = {"app.kubernetes.io/managed-by": "routing-operator"}
_TIMEOUT = 5.0

OwnerAlive = Callable[[Source], bool]


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    WRITTEN = "written"


def configmap_value(record: RoutingRecord) -> str:
    """The ConfigMap value: the Firestore document minus server fields, canonical JSON."""
    return json.dumps(record.to_document(), sort_keys=True, separators=(",", ":"))


def _owner_of(data: dict[str, Any] | None) -> Source | None:
    src = (data or {}).get("source")
    if not isinstance(src, dict):
        return None
    try:
        return Source(**src)
    except (TypeError, ValueError):
        return None


def _strip_server_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "updated_at"}


class FirestoreProjection:
    """``{collection}/{env}:{tenant}:{project}:{resource_kind}`` documents."""

    def __init__(self, client: Any, collection: str) -> None:
        self.client = client
        self.collection = collection

    def _ref(self, key: RoutingKey) -> Any:
        return self.client.collection(self.collection).document(key.document_id)

    def read(self, key: RoutingKey) -> dict[str, Any] | None:
        from google.api_core import exceptions as gexc

        try:
            snap = self._ref(key).get(timeout=_TIMEOUT, retry=None)
        except gexc.GoogleAPICallError as exc:
            raise BackendUnavailable(f"Firestore read of {key.document_id} failed: {exc}") from exc
        return snap.to_dict() if snap.exists else None

    def ensure(self, record: RoutingRecord, owner_alive: OwnerAlive) -> Outcome:
        from google.api_core import exceptions as gexc
        from google.cloud import firestore

        ref = self._ref(record.key)
        wanted = record.to_document()
        mine = record.source
        # Fast probe outside the transaction: BeginTransaction retries for a long time on an
        # unreachable service, a bare read with retry=None fails within the timeout.
        current = self.read(record.key)
        if current is not None and _strip_server_fields(current) == wanted:
            return Outcome.UNCHANGED

        @firestore.transactional
        def write(txn: Any) -> Outcome:
            snap = ref.get(transaction=txn, timeout=_TIMEOUT, retry=None)
            current = snap.to_dict() if snap.exists else None
            if current is not None:
                owner = _owner_of(current)
                if owner is not None and mine is not None and owner.uid != mine.uid:
                    if owner_alive(owner):
                        raise OwnershipConflict(
                            f"Firestore document {record.key.document_id} is owned by "
                            f"RoutingEntry {owner.namespace}/{owner.name}",
                            owner_uid=owner.uid,
                        )
                elif _strip_server_fields(current) == wanted:
                    return Outcome.UNCHANGED
            txn.set(ref, {**wanted, "updated_at": firestore.SERVER_TIMESTAMP})
            return Outcome.WRITTEN

        try:
            return write(self.client.transaction(max_attempts=3))  # type: ignore[no-any-return]
        except gexc.GoogleAPICallError as exc:
            raise BackendUnavailable(
                f"Firestore write of {record.key.document_id} failed: {exc}"
            ) from exc
        except ValueError as exc:  # the client's "transaction failed after N attempts"
            raise BackendUnavailable(f"Firestore transaction failed: {exc}") from exc

    def remove(self, key: RoutingKey, owner_uid: str) -> bool:
        """Delete the document if ``owner_uid`` owns it (or it has no owner); True if deleted."""
        from google.api_core import exceptions as gexc
        from google.cloud import firestore

        ref = self._ref(key)

        @firestore.transactional
        def delete(txn: Any) -> bool:
            snap = ref.get(transaction=txn, timeout=_TIMEOUT, retry=None)
            if not snap.exists:
                return False
            owner = _owner_of(snap.to_dict())
            if owner is not None and owner.uid != owner_uid:
                return False
            txn.delete(ref)
            return True

        try:
            return delete(self.client.transaction(max_attempts=3))  # type: ignore[no-any-return]
        except gexc.GoogleAPICallError as exc:
            raise BackendUnavailable(
                f"Firestore delete of {key.document_id} failed: {exc}"
            ) from exc
        except ValueError as exc:
            raise BackendUnavailable(f"Firestore transaction failed: {exc}") from exc


class ConfigMapProjection:
    """Keys of ``routing.{env}[.{tenant}]`` ConfigMaps in the entry's namespace."""

    def __init__(self, core_api: Any) -> None:
        self.api = core_api

    def _get(self, namespace: str, name: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read(self, namespace: str, key: RoutingKey) -> str | None:
        cm = self._get(namespace, key.configmap_name)
        return None if cm is None else (cm.data or {}).get(key.configmap_key)

    def ensure(self, namespace: str, record: RoutingRecord, owner_alive: OwnerAlive) -> Outcome:
        from kubernetes.client.exceptions import ApiException

        key, value = record.key, configmap_value(record)
        for _ in range(5):
            cm = self._get(namespace, key.configmap_name)
            if cm is None:
                body = {
                    "metadata": {"name": key.configmap_name, "labels": dict(MANAGED_BY)},
                    "data": {key.configmap_key: value},
                }
                try:
                    self.api.create_namespaced_config_map(namespace, body)
                    return Outcome.WRITTEN
                except ApiException as exc:
                    if exc.status == 409:
                        continue
                    raise
            current = (cm.data or {}).get(key.configmap_key)
            if current == value and (cm.metadata.labels or {}).items() >= MANAGED_BY.items():
                return Outcome.UNCHANGED
            if current is not None and record.source is not None:
                try:
                    owner = _owner_of(json.loads(current))
                except ValueError:
                    owner = None  # garbage in our key: ours to overwrite
                if owner is not None and owner.uid != record.source.uid and owner_alive(owner):
                    raise OwnershipConflict(
                        f"ConfigMap {namespace}/{key.configmap_name} key {key.configmap_key} "
                        f"is owned by RoutingEntry {owner.namespace}/{owner.name}",
                        owner_uid=owner.uid,
                    )
            patch = {
                "metadata": {
                    "resourceVersion": cm.metadata.resource_version,
                    "labels": dict(MANAGED_BY),
                },
                "data": {key.configmap_key: value},
            }
            try:
                self.api.patch_namespaced_config_map(key.configmap_name, namespace, patch)
                return Outcome.WRITTEN
            except ApiException as exc:
                if exc.status == 409:  # someone else changed it: read again and retry
                    continue
                raise
        raise BackendUnavailable(
            f"ConfigMap {namespace}/{key.configmap_name} kept changing; will retry"
        )

    def remove(self, namespace: str, key: RoutingKey, owner_uid: str) -> bool:
        """Drop our key (only if we own it); delete the ConfigMap when it is left empty."""
        from kubernetes.client.exceptions import ApiException

        for _ in range(5):
            cm = self._get(namespace, key.configmap_name)
            if cm is None:
                return False
            data = dict(cm.data or {})
            current = data.get(key.configmap_key)
            if current is None:
                return False
            try:
                owner = _owner_of(json.loads(current))
            except ValueError:
                owner = None
            if owner is not None and owner.uid != owner_uid:
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
