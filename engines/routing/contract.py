"""The projection contract (DESIGN §2, §3, §5): the names and shapes the operator writes and every
reader expects, in one module.

The operator, the drift sweep, ``routingctl``, the runtime registries and the readiness reports
all speak about the same objects: a RoutingEntry found by its API coordinates and annotations, its
identity (:class:`RoutingKey`) written as a Firestore document id or a ConfigMap name and key, the
document itself (minus server fields, as canonical JSON), and the §3 order that decides which of
two entries claiming one identity wins. When each of them spells these out on its own, a change to
one spelling (a separator, a label, a tie-break) silently splits them: one tool then reports drift
the operator does not see, or picks another winner. So each is defined here once and imported.

Layering: the key type and the constants sit below the model (``model.py`` builds on them); the
few functions that build or read a ``RoutingRecord`` import the model when they are called.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidRouting

if TYPE_CHECKING:
    from .model import RoutingEntrySpec, RoutingRecord, Source

__all__ = [
    "ADOPT_ANNOTATION",
    "ALLOW_DELETE_ANNOTATION",
    "API_GROUP",
    "API_VERSION",
    "DEFAULT_COLLECTION",
    "GROUP_VERSION",
    "KIND",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_SELECTOR",
    "PAUSED_ANNOTATION",
    "PLURAL",
    "SCHEMA_VERSION",
    "SERVER_FIELDS",
    "UPDATED_AT",
    "RoutingKey",
    "annotated",
    "canonical_json",
    "claim_order",
    "configmap_in_env",
    "configmap_value",
    "digest",
    "expected_record",
    "owner_of",
    "parse_configmap_key",
    "parse_configmap_name",
    "record_from_document",
    "strip_server_fields",
]

# -- API coordinates (§2) ----------------------------------------------------------------------

API_GROUP = "routing.engines.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
"""The ``apiVersion`` of a RoutingEntry object."""
KIND = "RoutingEntry"
PLURAL = "routingentries"

# -- annotations on a RoutingEntry (§2, §5) ----------------------------------------------------

PAUSED_ANNOTATION = f"{API_GROUP}/paused"
"""``"true"``: stop syncing the entry; its projections stay as they were."""
ADOPT_ANNOTATION = f"{API_GROUP}/adopt"
"""``"true"``: take over a document another cluster owns (once; then removed)."""
ALLOW_DELETE_ANNOTATION = f"{API_GROUP}/allow-delete"
"""``"true"``: the entry's deletion removes its projections (else they are kept)."""

# -- the projections (§5) ----------------------------------------------------------------------

DEFAULT_COLLECTION = "routing_entries"
SCHEMA_VERSION = 1
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = {MANAGED_BY_LABEL: "routing-operator"}
"""The label of every ConfigMap the operator writes."""
MANAGED_BY_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
"""The same label as a label selector, for listing those ConfigMaps."""
UPDATED_AT = "updated_at"
SERVER_FIELDS = (UPDATED_AT,)
"""Fields of a Firestore document set by the server, absent from the ConfigMap value and from
every comparison."""
_CONFIGMAP_PREFIX = "routing"
_CONFIGMAP_SUFFIX = ".json"
_WILDCARD, _WILDCARD_IN_NAMES = "*", "_"
_ID_FORMAT = "{env}:{tenant}:{project}:{resource_kind}"
_KEY_FORMAT = "{tenant}.{project}.{resource_kind}.json"


def _to_name(part: str) -> str:
    return _WILDCARD_IN_NAMES if part == _WILDCARD else part


def _from_name(part: str) -> str:
    return _WILDCARD if part == _WILDCARD_IN_NAMES else part


@dataclass(frozen=True, slots=True, order=True)
class RoutingKey:
    """The identity of a routing entry: which tenant/env/project uses which kind."""

    env: str
    tenant: str
    project: str
    resource_kind: str

    @property
    def document_id(self) -> str:
        """Firestore document id: ``{env}:{tenant}:{project}:{resource_kind}`` (``*`` kept)."""
        return f"{self.env}:{self.tenant}:{self.project}:{self.resource_kind}"

    @property
    def configmap_name(self) -> str:
        """``routing.{env}`` for wildcard-tenant entries, ``routing.{env}.{tenant}`` otherwise."""
        if self.tenant == _WILDCARD:
            return f"{_CONFIGMAP_PREFIX}.{self.env}"
        return f"{_CONFIGMAP_PREFIX}.{self.env}.{self.tenant}"

    @property
    def configmap_key(self) -> str:
        """``{tenant}.{project}.{resource_kind}.json`` with ``*`` written as ``_``."""
        return (
            f"{_to_name(self.tenant)}.{_to_name(self.project)}.{self.resource_kind}"
            f"{_CONFIGMAP_SUFFIX}"
        )

    @classmethod
    def from_document_id(cls, document_id: str) -> RoutingKey:
        """The key a document id spells; raises ``InvalidRouting`` naming the expected form."""
        parts = document_id.split(":")
        if len(parts) != 4 or not all(parts):
            raise InvalidRouting(
                f"{document_id!r} is not a routing document id: expected {_ID_FORMAT} (four "
                "non-empty parts separated by ':', '*' for a wildcard)",
                field="document id",
            )
        return cls(*parts)

    @classmethod
    def from_configmap(cls, configmap: str, key: str) -> RoutingKey:
        """The key of ConfigMap ``configmap``'s key ``key``; raises ``InvalidRouting`` when
        either is malformed or they disagree (a tenant's key in another tenant's ConfigMap)."""
        env, _ = parse_configmap_name(configmap)
        tenant, project, kind = parse_configmap_key(key)
        parsed = cls(env, tenant, project, kind)
        if parsed.configmap_name != configmap:
            raise InvalidRouting(
                f"key {key!r} does not belong in ConfigMap {configmap!r}: an entry of tenant "
                f"{tenant} is written to ConfigMap {parsed.configmap_name!r}",
                field="ConfigMap key",
            )
        return parsed

    def as_dict(self) -> dict[str, str]:
        return {
            "tenant": self.tenant,
            "env": self.env,
            "project": self.project,
            "resource_kind": self.resource_kind,
        }

    def __str__(self) -> str:
        return (
            f"tenant={self.tenant} env={self.env} project={self.project} "
            f"resource_kind={self.resource_kind}"
        )


def parse_configmap_key(key: str) -> tuple[str, str, str]:
    """``(tenant, project, resource_kind)`` of a ConfigMap key (``_`` read back as ``*``);
    raises ``InvalidRouting`` naming the expected form."""
    parts = key.removesuffix(_CONFIGMAP_SUFFIX).split(".")
    if not key.endswith(_CONFIGMAP_SUFFIX) or len(parts) != 3 or not all(parts):
        raise InvalidRouting(
            f"{key!r} is not a routing ConfigMap key: expected {_KEY_FORMAT} ('_' for a "
            "wildcard, e.g. acme._.seo.json)",
            field="ConfigMap key",
        )
    tenant, project, kind = (_from_name(p) for p in parts)
    return tenant, project, kind


def parse_configmap_name(name: str) -> tuple[str, str | None]:
    """``(env, tenant)`` of a routing ConfigMap's name (``tenant`` None for ``routing.{env}``,
    the ConfigMap of wildcard-tenant entries); raises ``InvalidRouting``."""
    parts = name.split(".")
    if parts[0] != _CONFIGMAP_PREFIX or len(parts) not in (2, 3) or not all(parts):
        raise InvalidRouting(
            f"{name!r} is not a routing ConfigMap name: expected routing.{{env}} (wildcard-tenant "
            "entries) or routing.{env}.{tenant}",
            field="ConfigMap name",
        )
    return parts[1], (parts[2] if len(parts) == 3 else None)


def configmap_in_env(name: str, env: str | None) -> bool:
    """Is ``name`` a routing ConfigMap of ``env`` (any env when None)?"""
    if env is None:
        return True
    try:
        return parse_configmap_name(name)[0] == env
    except InvalidRouting:
        return False


# -- documents ---------------------------------------------------------------------------------


def strip_server_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document without the fields the server sets."""
    return {k: v for k, v in data.items() if k not in SERVER_FIELDS}


def canonical_json(document: Mapping[str, Any]) -> str:
    """Sorted keys, no spaces; values JSON cannot hold (a stored document's timestamps) as
    strings. The ConfigMap value, and what ``revision`` and every digest are taken of."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)


def digest(canonical: str) -> bytes:
    """16 bytes standing for a canonical JSON text: what is kept instead of a document (a drift
    sweep's Firestore documents, the diff base of every entry)."""
    return hashlib.blake2b(canonical.encode(), digest_size=16).digest()


def configmap_value(record: RoutingRecord) -> str:
    """The ConfigMap value of a record: its Firestore document minus server fields, canonical."""
    return canonical_json(record.to_document())


def owner_of(data: Mapping[str, Any] | None) -> Source | None:
    """The ``source`` a stored document or ConfigMap value records, or None if it has none (or
    one that cannot be read)."""
    from .model import Source

    src = (data or {}).get("source")
    if not isinstance(src, dict):
        return None
    try:
        return Source(**src)
    except (TypeError, ValueError):
        return None


def record_from_document(document_id: str, data: Mapping[str, Any]) -> RoutingRecord:
    """Parse one stored Firestore document (server fields ignored); raises ``InvalidRouting``,
    also when the id does not match the fields (a hand-edited id)."""
    from .model import RoutingRecord

    record = RoutingRecord.from_document(strip_server_fields(data))
    if record.key.document_id != document_id:
        raise InvalidRouting(
            f"document id {document_id!r} does not match its fields ({record.key.document_id!r})",
            field="document id",
        )
    return record


# -- RoutingEntry objects ----------------------------------------------------------------------


def annotated(meta: Mapping[str, Any], annotation: str) -> bool:
    """Does the object with metadata ``meta`` carry ``annotation: "true"``?"""
    return (meta.get("annotations") or {}).get(annotation) == "true"


def claim_order(created: str | None, namespace: str | None, name: str | None) -> tuple[str, ...]:
    """The §3 order among entries claiming one identity: the oldest ``creationTimestamp`` wins,
    then ``namespace``, then ``name``. Timestamps are RFC 3339 in UTC (``...Z``), as the API
    server writes them, so they compare as strings."""
    return (created or "", namespace or "", name or "")


def expected_record(
    spec: RoutingEntrySpec | Mapping[str, Any], meta: Mapping[str, Any], cluster: str | None
) -> RoutingRecord:
    """The record an operator of ``cluster`` projects for the RoutingEntry with ``spec`` and
    metadata ``meta``: its Firestore document is ``to_document()`` (plus server fields), its
    ConfigMap value :func:`configmap_value`. ``spec`` as stored in the object is validated
    (raises ``InvalidRouting``)."""
    from .model import RoutingEntrySpec, RoutingRecord, Source, parse_spec

    parsed = spec if isinstance(spec, RoutingEntrySpec) else parse_spec(spec)
    source = Source(
        cluster=cluster,
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
    )
    return RoutingRecord.from_spec(
        parsed, generation=int(meta.get("generation") or 0), source=source
    )
