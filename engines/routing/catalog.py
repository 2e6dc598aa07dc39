"""The catalog: which resource kinds exist, which backends each may use, and their settings.

This module is data, not logic. The CRD's CEL rules, the pydantic model, the operator, the adapter
factory registry and `routingctl` all read it, so adding a kind or a backend is one edit here
(plus an adapter factory, which a test insists on).

Settings models are strict (`extra="forbid"`): an unknown key is an error, never ignored, and a
required field (`redis.url`, `gcs.bucket`, `firestore.collection`) has no default — there is
no `localhost` or temp-dir fallback anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

__all__ = [
    "BACKEND_SETTINGS",
    "CATALOG",
    "DURABLE_BACKENDS",
    "TEST_ONLY_BACKENDS",
    "URL_SETTINGS",
    "Backend",
    "FirestoreSettings",
    "GcsSettings",
    "KindSpec",
    "LocalSettings",
    "MemorySettings",
    "NoopSettings",
    "RedisSettings",
    "ResourceKind",
    "Settings",
    "StorageShape",
    "allowed_backends",
]


class Backend(StrEnum):
    FIRESTORE = "firestore"
    REDIS = "redis"
    GCS = "gcs"
    MEMORY = "memory"
    LOCAL = "local"
    NOOP = "noop"


class ResourceKind(StrEnum):
    FEATURE_FLAGS = "feature_flags"
    KPI = "kpi"
    BUDGET = "budget"
    MAYBES = "maybes"
    ANALYTICS_EVENTS = "analytics_events"
    FIREARMS = "firearms"
    PAGE_CONTENT = "page_content"
    SEO = "seo"
    VIDEO_TIMELINE = "video_timeline"
    MEMORY = "memory"
    STRATEGY_LOCK = "strategy_lock"
    RATE_LIMIT = "rate_limit"
    REALTIME_REGISTRY = "realtime_registry"
    CHAT_BUS = "chat_bus"
    NEXUS_BACKEND = "nexus_backend"
    MEDIA_V2_STORAGE = "media_v2_storage"
    RAW_STORAGE = "raw_storage"


TEST_ONLY_BACKENDS: frozenset[Backend] = frozenset({Backend.MEMORY, Backend.LOCAL, Backend.NOOP})
DURABLE_BACKENDS: frozenset[Backend] = frozenset({Backend.FIRESTORE, Backend.REDIS, Backend.GCS})

_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FirestoreSettings(_Settings):
    """Documents live under `{collection}/{tenant}/...` in the given database."""

    collection: Annotated[str, Field(min_length=1, max_length=1500, pattern=_ID_PATTERN)]
    database: Annotated[str, Field(min_length=1, max_length=63)] = "(default)"
    project_id: Annotated[str, Field(min_length=1, max_length=63)] | None = None


URL_USERINFO = r"^[A-Za-z][-+.A-Za-z0-9]*://[^/?#]*@"
"""A URL whose authority carries userinfo: ``user:pass@``, ``user@`` or ``:pass@``."""
URL_CREDENTIAL_PARAM = r"(?i)[?&](password|username)="
"""A ``password`` / ``username`` query parameter, in any case (redis-py reads both)."""
URL_ENCODED_PARAM_NAME = r"[?&][^=&#]*%"
"""A percent-encoded query parameter name: ``pass%77ord=`` decodes to ``password=``."""
URL_CREDENTIAL_RULES: tuple[tuple[str, str], ...] = (
    (
        URL_USERINFO,
        "must not carry userinfo (user:password@, user@ or :password@): it would be copied into "
        "Firestore, ConfigMaps and /routing; remove it and put the credential in a Secret "
        "referenced by spec.secretRef",
    ),
    (
        URL_CREDENTIAL_PARAM,
        "must not carry a password or username query parameter (any case): it would be copied "
        "into Firestore, ConfigMaps and /routing; remove it and put the credential in a Secret "
        "referenced by spec.secretRef",
    ),
    (
        URL_ENCODED_PARAM_NAME,
        "must not percent-encode a query parameter name (it could spell password or username); "
        "write parameter names in plain letters",
    ),
)
"""(pattern, rule) pairs refused in every URL-bearing setting, by the model and by CEL alike.

The patterns use only syntax that both Python's ``re`` and the API server's RE2 read the same way.
"""


def url_credential_violation(url: str) -> str | None:
    """The rule ``url`` breaks (never the URL itself: it may hold the credential), else None."""
    for pattern, rule in URL_CREDENTIAL_RULES:
        if re.search(pattern, url):
            return rule
    # Belt and braces: the names redis-py would see after decoding the query.
    query = url.partition("?")[2].partition("#")[0]
    names = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
    if names & {"password", "username"}:
        return URL_CREDENTIAL_RULES[1][1]
    return None


def url_credential_cel(field: str) -> list[JsonValue]:
    """The CEL rules refusing a credential in the URL field ``field`` of a settings object."""
    return [
        {
            "rule": f"!self.{field}.matches('{pattern}')",
            "message": f"{field} {rule}",
            "fieldPath": f".{field}",
            "reason": "FieldValueForbidden",
        }
        for pattern, rule in URL_CREDENTIAL_RULES
    ]


REDIS_URL_PATTERN = r"^(redis|rediss|unix)://.+"


class RedisSettings(_Settings):
    """Keys are `{key_prefix}{tenant}:...`; the password comes from `secretRef`."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": url_credential_cel("url")}
    )

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=REDIS_URL_PATTERN)]
    key_prefix: Annotated[str, Field(max_length=256)] = ""

    @field_validator("url")
    @classmethod
    def _no_credential(cls, url: str) -> str:
        rule = url_credential_violation(url)
        if rule is not None:
            raise ValueError(rule)
        return url


URL_SETTINGS: dict[Backend, tuple[str, ...]] = {Backend.REDIS: ("url",)}
"""Every URL-bearing setting per backend (each refuses credentials; a test keeps this complete)."""


class GcsSettings(_Settings):
    """Objects live under `{prefix}{tenant}/...` in the bucket."""

    bucket: Annotated[
        str, Field(min_length=3, max_length=222, pattern=r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
    ]
    prefix: Annotated[str, Field(max_length=1024)] = ""


class MemorySettings(_Settings):
    """Test-only: process memory, lost on restart."""


class NoopSettings(_Settings):
    """Test-only: accepts everything, stores nothing."""


class LocalSettings(_Settings):
    """Test-only: blobs under a local directory (no temp-dir default)."""

    path: Annotated[str, Field(min_length=1, max_length=4096)]


Settings = (
    FirestoreSettings | RedisSettings | GcsSettings | MemorySettings | NoopSettings | LocalSettings
)

BACKEND_SETTINGS: dict[Backend, type[_Settings]] = {
    Backend.FIRESTORE: FirestoreSettings,
    Backend.REDIS: RedisSettings,
    Backend.GCS: GcsSettings,
    Backend.MEMORY: MemorySettings,
    Backend.NOOP: NoopSettings,
    Backend.LOCAL: LocalSettings,
}


class StorageShape(StrEnum):
    """The shape of storage a kind needs; each shape is one port (``engines.ports``)."""

    DOCUMENTS = "documents"
    LOCKS = "locks"
    RATE_LIMITS = "rate_limits"
    PRESENCE = "presence"
    MESSAGES = "messages"
    BLOBS = "blobs"


@dataclass(frozen=True, slots=True)
class KindSpec:
    """What one resource kind may use: durable backends (first is the usual one) and test-only,
    and the shape of storage it needs."""

    kind: ResourceKind
    durable: tuple[Backend, ...]
    test_only: tuple[Backend, ...]
    shape: StorageShape = StorageShape.DOCUMENTS

    @property
    def allowed(self) -> tuple[Backend, ...]:
        return self.durable + self.test_only


def _kinds(
    kinds: tuple[ResourceKind, ...], durable: tuple[Backend, ...], test_only: tuple[Backend, ...]
) -> dict[ResourceKind, KindSpec]:
    return {k: KindSpec(k, durable, test_only) for k in kinds}


_F, _R, _G = Backend.FIRESTORE, Backend.REDIS, Backend.GCS
_MEM, _NOOP, _LOCAL = Backend.MEMORY, Backend.NOOP, Backend.LOCAL
K = ResourceKind

CATALOG: dict[ResourceKind, KindSpec] = {
    **_kinds(
        (
            K.FEATURE_FLAGS,
            K.KPI,
            K.BUDGET,
            K.MAYBES,
            K.ANALYTICS_EVENTS,
            K.FIREARMS,
            K.PAGE_CONTENT,
            K.SEO,
            K.VIDEO_TIMELINE,
        ),
        (_F,),
        (_MEM,),
    ),
    **_kinds((K.MEMORY, K.STRATEGY_LOCK), (_F, _R), (_MEM,)),
    **_kinds((K.RATE_LIMIT, K.REALTIME_REGISTRY), (_R, _F), (_MEM,)),
    **_kinds((K.CHAT_BUS,), (_R,), (_MEM,)),
    **_kinds((K.NEXUS_BACKEND,), (_F,), (_NOOP,)),
    **_kinds((K.MEDIA_V2_STORAGE, K.RAW_STORAGE), (_G,), (_LOCAL,)),
}
_SHAPES = {
    K.STRATEGY_LOCK: StorageShape.LOCKS,
    K.RATE_LIMIT: StorageShape.RATE_LIMITS,
    K.REALTIME_REGISTRY: StorageShape.PRESENCE,
    K.CHAT_BUS: StorageShape.MESSAGES,
    K.MEDIA_V2_STORAGE: StorageShape.BLOBS,
    K.RAW_STORAGE: StorageShape.BLOBS,
}  # every other kind stores documents
# Keep the table in the same order as the enum so generated artefacts are stable.
CATALOG = {
    k: replace(CATALOG[k], shape=_SHAPES.get(k, StorageShape.DOCUMENTS)) for k in ResourceKind
}


def allowed_backends(kind: ResourceKind | str) -> tuple[Backend, ...]:
    """Backends allowed for `kind`; raises `KeyError` for a kind outside the catalog."""
    return CATALOG[ResourceKind(kind)].allowed
