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

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BACKEND_SETTINGS",
    "CATALOG",
    "DURABLE_BACKENDS",
    "TEST_ONLY_BACKENDS",
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


REDIS_PASSWORD_IN_URL = r"^[a-z]+://[^/@]*:[^/@]*@"
REDIS_PASSWORD_MESSAGE = (
    "url must not carry a password (it would be copied into Firestore and ConfigMaps): "
    "put it in a Secret and reference it with spec.secretRef"
)


class RedisSettings(_Settings):
    """Keys are `{key_prefix}{tenant}:...`; the password comes from `secretRef`."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!self.url.matches('{REDIS_PASSWORD_IN_URL}')",
                    "message": REDIS_PASSWORD_MESSAGE,
                    "fieldPath": ".url",
                }
            ]
        }
    )

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^(redis|rediss|unix)://.+")]
    key_prefix: Annotated[str, Field(max_length=256)] = ""

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str) -> str:
        if re.match(REDIS_PASSWORD_IN_URL, url):
            raise ValueError(REDIS_PASSWORD_MESSAGE)
        return url


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
